"""Multi-step LIF neurons: spikingjelly's ``LIFNode`` with a faster CPU inference path.

spikingjelly 2.0 runs its CPU multi-step LIF through a generic op-dispatch layer that costs about half of a
small Spikformer's inference time. :class:`LIFNode` keeps spikingjelly's neuron API (``step_mode='m'``,
``functional.reset_net``, the ``v`` memory, surrogate gradients for training) and only replaces the
no-grad forward with a plain torch loop that computes exactly the same thing (bit-identical spikes and
voltages: ``bench/lif_speed.py`` measures both and checks equality).
"""

from __future__ import annotations

import logging

import torch

# spikingjelly probes for Triton at import and torch logs a warning when it is absent (always, on CPU).
logging.getLogger("torch._library.triton").setLevel(logging.ERROR)
from spikingjelly.activation_based import neuron  # noqa: E402


class LIFNode(neuron.LIFNode):
    """Hard-reset, decay-input LIF (the Spikformer neuron) with a fast no-grad multi-step forward."""

    def multi_step_forward(self, x_seq: torch.Tensor, *args: torch.Tensor, **kwargs: object) -> torch.Tensor:
        if torch.is_grad_enabled() or args or kwargs or self.store_v_seq or self.v_reset is None:
            return super().multi_step_forward(x_seq, *args, **kwargs)
        return self._inference_forward(x_seq)

    def _inference_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        # Same arithmetic, in the same order, as spikingjelly's CPU kernel (spikingjelly/_ops/lif/cpu.py):
        # h = v + (x - (v - v_reset)) / tau ; s = (h >= v_th) ; v = s * v_reset + (1 - s) * h
        v = self.v
        if not isinstance(v, torch.Tensor):
            v = torch.full_like(x_seq[0], float(v), dtype=torch.float32)
        reset = float(self.v_reset)
        spikes = torch.empty_like(x_seq)
        for t, x in enumerate(x_seq.float()):
            h = v + (x - (v - reset)) / self.tau if self.decay_input else v - (v - reset) / self.tau + x
            s = (h >= self.v_threshold).to(torch.float32)
            v = s * reset + (1 - s) * h
            spikes[t] = s
        self.v = v
        return spikes


def lif(v_threshold: float = 1.0) -> LIFNode:
    """The Spikformer neuron: tau=2, hard reset to 0, decay_input, detach_reset, multi-step."""
    return LIFNode(tau=2.0, v_threshold=v_threshold, v_reset=0.0, detach_reset=True, step_mode="m")
