"""Multi-step LIF neurons: spikingjelly's ``LIFNode`` with a faster CPU inference path (GPUs use spikingjelly's
own fused CUDA/Triton kernels).

spikingjelly 2.0's CPU multi-step LIF is about half of a small Spikformer's inference time. :class:`LIFNode`
keeps spikingjelly's neuron API (``step_mode='m'``, ``functional.reset_net``, the ``v`` memory, surrogate
gradients for training) and only replaces the no-grad forward of the Spikformer neuron (decay_input, v_reset=0)
with a lean in-place torch loop that computes exactly the same thing: bit-identical spikes and voltages
(``tests/test_spikformer_official.py`` checks it; ``bench/lif_speed.py`` measures the speed-up).

Two more differences from spikingjelly's ``LIFNode``, both for speed and neither changing a spike:

* **float32 state under autocast.** spikingjelly stores a fresh neuron's voltage in the input's dtype, and its
  fused CUDA/Triton/CPU kernels only take a float32 voltage: under ``torch.autocast(bfloat16)`` every LIF layer
  fell back to the per-time-step Torch reference (several small kernels per step; the cause of bf16 being slower
  than float32 on a GPU). The voltage here is always float32, so bf16 inputs reach the fused kernels, which
  compute in float32.
* **graph-safe under** ``torch.compile``. Compiled, the no-grad forward (on every device) is the same lean torch
  loop, which Inductor fuses; it starts from v = 0 and stores no state on the module, so the graph has no side
  effects and a state reset (``functional.reset_net``) needs no recompilation. psvit's evaluation resets the
  neurons after every batch anyway (:func:`psvit.train.loop.predict`).
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
        compiling = torch.compiler.is_compiling()
        fast = (x_seq.device.type == "cpu" or compiling) and not (
            torch.is_grad_enabled() or args or kwargs or self.store_v_seq
        )
        if not (fast and self.decay_input and self.v_reset == 0.0):
            return super().multi_step_forward(x_seq, *args, **kwargs)
        if compiling:
            return self._inference_forward(x_seq, torch.zeros_like(x_seq[0], dtype=torch.float32))[0]
        v = self.v
        spikes, self.v = self._inference_forward(
            x_seq, v if isinstance(v, torch.Tensor) else torch.zeros_like(x_seq[0], dtype=torch.float32)
        )
        return spikes

    def _inference_forward(self, x_seq: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Spikes (in ``x_seq``'s dtype) and the final float32 voltage, from voltage ``v``."""
        # The arithmetic of spikingjelly's CPU kernel (spikingjelly/_ops/lif/cpu.py) for v_reset = 0, in the same
        # order: h = v + (x - v) / tau ; s = (h >= v_th) ; v = s * 0 + (1 - s) * h  (= h where s == 0).
        # In place outside torch.compile (fewer allocations); out of place inside, where Inductor fuses the loop.
        compiling = torch.compiler.is_compiling()
        steps = []
        for x in x_seq.float():
            h = (x - v) / self.tau + v if compiling else (x - v).div_(self.tau).add_(v)
            s = h >= self.v_threshold
            steps.append(s)
            v = h.masked_fill(s, 0.0) if compiling else h.masked_fill_(s, 0.0)
        return torch.stack(steps).to(x_seq.dtype), v

    def materialize_states(
        self, inputs: tuple[torch.Tensor, ...], states: tuple[object, ...], step_mode: str
    ) -> tuple[object, ...]:
        """spikingjelly's state set-up, but a voltage that would take the input's low-precision dtype (under
        autocast) is float32: the fused kernels need a float32 voltage (module docstring)."""
        v, *rest = super().materialize_states(inputs, states, step_mode)
        if self._neuron_precision is None and isinstance(v, torch.Tensor) and v.dtype != torch.float32:
            v = v.float()
        return (v, *rest)


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
