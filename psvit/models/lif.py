"""Multi-step LIF neurons: spikingjelly's ``LIFNode`` with a faster CPU inference path (GPUs use spikingjelly's
own fused CUDA/Triton kernels).

spikingjelly 2.0's CPU multi-step LIF is about half of a small Spikformer's inference time. :class:`LIFNode`
keeps spikingjelly's neuron API (``step_mode='m'``, ``functional.reset_net``, the ``v`` memory, surrogate
gradients for training) and only replaces the no-grad forward of the Spikformer neuron (decay_input, v_reset=0)
with a lean in-place torch loop that computes exactly the same thing: bit-identical spikes and voltages
(``tests/test_spikformer_official.py`` checks it; ``bench/lif_speed.py`` measures the speed-up).
"""

from __future__ import annotations

import logging

import torch

# spikingjelly probes for Triton at import and torch logs a warning when it is absent (always, on CPU).
logging.getLogger("torch._library.triton").setLevel(logging.ERROR)
from spikingjelly.activation_based import functional, neuron  # noqa: E402


class LIFNode(neuron.LIFNode):
    """Hard-reset, decay-input LIF (the Spikformer neuron) with a fast no-grad multi-step forward."""

    def multi_step_forward(self, x_seq: torch.Tensor, *args: torch.Tensor, **kwargs: object) -> torch.Tensor:
        fast = x_seq.device.type == "cpu" and not (torch.is_grad_enabled() or args or kwargs or self.store_v_seq)
        if not (fast and self.decay_input and self.v_reset == 0.0):
            return super().multi_step_forward(x_seq, *args, **kwargs)
        return self._inference_forward(x_seq)

    def _inference_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        # The arithmetic of spikingjelly's CPU kernel (spikingjelly/_ops/lif/cpu.py) for v_reset = 0, in the same
        # order, in place: h = v + (x - v) / tau ; s = (h >= v_th) ; v = s * 0 + (1 - s) * h  (= h where s == 0).
        v = self.v
        if not isinstance(v, torch.Tensor):
            v = torch.zeros_like(x_seq[0], dtype=torch.float32)
        spikes = torch.empty_like(x_seq)
        for t, x in enumerate(x_seq.float()):
            h = (x - v).div_(self.tau).add_(v)
            s = h >= self.v_threshold
            spikes[t] = s
            v = h.masked_fill_(s, 0.0)
        self.v = v
        return spikes


def lif(v_threshold: float = 1.0) -> LIFNode:
    """The Spikformer neuron: tau=2, hard reset to 0, decay_input, detach_reset, multi-step."""
    return LIFNode(tau=2.0, v_threshold=v_threshold, v_reset=0.0, detach_reset=True, step_mode="m")


def lif_backend(device: torch.device) -> str:
    """Which LIF implementation runs on ``device``: psvit's own no-grad loop on CPU, spikingjelly's selected
    CUDA kernel (``cuda``, ``triton`` or ``torch``) on a GPU; training always goes through spikingjelly."""
    if device.type == "cpu":
        return "psvit CPU loop (inference), spikingjelly torch-reference (training)"
    try:
        chosen = functional.neuron_implementation("lif", device)["implementation"]
    except RuntimeError as exc:  # no CUDA kernel could be built or loaded
        return f"unavailable ({' '.join(str(exc).split())[:120]})"
    return f"spikingjelly {chosen}"
