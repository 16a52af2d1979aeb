"""The full cost report of a model: size, FLOPs, SOPs, energy estimate and measured latency.

Energy follows the Spikformer papers (45 nm figures, Horowitz 2014): ``E = E_MAC * analog MACs + E_AC * SOPs``.
*Analog MACs* are the MACs of the layers the model's family marks as fed by non-spike values, counted ONCE per
image: the first stem conv (its pixel input is the same at every time step, so the papers count it once, not
``T`` times) and, in Spikformer, the classifier head (it runs once, on the time-averaged features; the Spike-driven
Transformer's head reads spikes at every step). *SOPs* (synaptic operations, per image over all ``T`` steps) of
every other layer are ``input firing rate * MACs * T``.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from psvit.cost.analytic import count_params, layer_macs, weight_bytes
from psvit.cost.firing import measure_firing_rates
from psvit.cost.latency import WARMUP, measure_latency
from psvit.prune.groups import list_groups
from psvit.quant import quantization, stored_bytes
from psvit.train.compiled import for_evaluation
from psvit.train.compute import Compute, device_name

#: Energy of one 32-bit float multiply-accumulate, in picojoules (45 nm).
E_MAC_PJ = 4.6
#: Energy of one 32-bit float accumulate (a synaptic operation driven by a spike), in picojoules (45 nm).
E_AC_PJ = 0.9
PJ_PER_MJ = 1e9


@dataclass(frozen=True)
class CostReport:
    """Costs of one model for one image (latency: for the measured batch). See the module docstring."""

    model: str
    params: int  #: all parameters, the never-used norms included (the official figures count them)
    params_excl_unused_norms: int
    weight_bytes: int  #: ``params * 4`` (float32), or the packed bytes of a quantized model (:mod:`psvit.quant`)
    flops: int  #: MACs per image for ONE time step
    T: int
    flops_total: int  #: ``T * flops``
    analog_macs: int  #: MACs of the analog-input layers, once per image
    sops: float  #: synaptic operations per image, all ``T`` steps
    firing_rate: float  #: MAC-weighted mean input firing rate of the spike-driven layers
    energy_mj: float
    latency_ms: float  #: median forward time of the whole batch
    batch_size: int
    latency_batch1_ms: float  #: median forward time of one image
    device: str  #: where and how the latencies were measured, e.g. ``cpu`` or ``cuda:0 (NVIDIA H100 80GB HBM3), bf16``
    layer_firing_rates: dict[str, float] = field(repr=False)

    def to_dict(self) -> dict[str, float]:
        """The numeric summary as a flat dict (for JSON or ``mlflow.log_metrics``); the model and device names
        and the per-layer rates are left out."""
        d = asdict(self)
        del d["model"], d["device"], d["layer_firing_rates"]
        return d

    def format(self) -> str:
        """A small aligned human-readable table."""
        rows = [
            ("model", self.model, ""),
            ("params", f"{self.params:,}", "all parameters"),
            ("params (excl. unused norms)", f"{self.params_excl_unused_norms:,}", ""),
            ("weight memory", f"{self.weight_bytes / 1e6:,.2f}", "MB"),
            ("FLOPs per step", f"{self.flops / 1e6:,.2f}", "M MAC / image"),
            (f"FLOPs x T={self.T}", f"{self.flops_total / 1e6:,.2f}", "M MAC / image"),
            ("analog MACs", f"{self.analog_macs / 1e6:,.2f}", "M / image"),
            ("SOPs", f"{self.sops / 1e6:,.2f}", "M / image"),
            ("mean input firing rate", f"{self.firing_rate:.4f}", ""),
            ("energy", f"{self.energy_mj:.4f}", "mJ / image"),
            ("latency", f"{self.latency_ms:,.2f}", f"ms / batch of {self.batch_size}, {self.device}"),
            ("latency, batch 1", f"{self.latency_batch1_ms:,.2f}", f"ms / image, {self.device}"),
        ]
        width = max(len(name) for name, _, _ in rows)
        value_width = max(len(value) for _, value, _ in rows)
        return "\n".join(f"{name:<{width}}  {value:>{value_width}}  {unit}".rstrip() for name, value, unit in rows)


def energy_mj(analog_macs: float, sops: float) -> float:
    """``E_MAC * analog_macs + E_AC * sops``, in millijoules."""
    return (E_MAC_PJ * analog_macs + E_AC_PJ * sops) / PJ_PER_MJ


def report_forward_images(batch_size: int, latency_repeats: int = 10) -> int:
    """How many images :func:`cost_report` sends through the model for a batch of ``batch_size``: one pass for
    the firing rates, then warm-up and timed forwards of the batch and of one image (what it costs to run)."""
    forwards = report_single_forwards(latency_repeats)
    return batch_size * (1 + forwards) + forwards


def report_single_forwards(latency_repeats: int = 10) -> int:
    """How many of :func:`report_forward_images` are forwards of one image (the batch-1 latency): launch-bound,
    they cost more per image than a batch does."""
    return WARMUP + latency_repeats


def cost_report(
    model: nn.Module, images: torch.Tensor, *, latency_repeats: int = 10, compute: Compute | None = None
) -> CostReport:
    """Analytic size and FLOPs of ``model`` (from ``model.config``), SOPs and energy from the firing rates
    measured on ``images`` (a real batch ``(B, C, H, W)``), and the median latency of that batch and of one
    image, on the device the model is on.

    With ``compute``, the forwards run under its autocast (``compute.amp``), as evaluation and the search's
    estimate do: the latency and the firing rates are those of the precision the command runs in; with
    ``compute.compile`` the latency is the compiled model's (the firing rates are counted eagerly, by hooks)."""
    name, config = model.model_name, model.config
    macs = layer_macs(name, config)
    device = next(model.parameters()).device
    images = images.to(device)
    autocast = compute.autocast() if compute is not None else contextlib.nullcontext()
    with autocast:
        rates = measure_firing_rates(model, images)
        timed = for_evaluation(model, compute) if compute is not None else model
        latency = measure_latency(timed, images, repeats=latency_repeats)
        latency_batch1 = measure_latency(timed, images[:1], repeats=latency_repeats)
    amp = compute.amp if compute is not None else None
    T = config["T"]
    spiking_macs = sum(macs[key] for key in rates)
    sops = sum(rate * macs[key] * T for key, rate in rates.items())
    analog = sum(m for key, m in macs.items() if key not in rates)
    flops = sum(macs.values())
    return CostReport(
        model=name,
        params=count_params(name, config),
        params_excl_unused_norms=count_params(name, config, include_unused_norms=False),
        weight_bytes=sum(stored_bytes(model, list_groups(model)).values())
        if quantization(model)
        else weight_bytes(name, config),
        flops=flops,
        T=T,
        flops_total=T * flops,
        analog_macs=analog,
        sops=sops,
        firing_rate=sops / (T * spiking_macs),
        energy_mj=energy_mj(analog, sops),
        latency_ms=1e3 * latency,
        batch_size=images.shape[0],
        latency_batch1_ms=1e3 * latency_batch1,
        device=device_name(device) + (f", {amp}" if amp else ""),
        layer_firing_rates=rates,
    )
