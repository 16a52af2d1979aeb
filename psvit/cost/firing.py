"""Input firing rates of a model's spike-driven layers, measured with hooks on a real batch."""

from __future__ import annotations

import torch
from torch import nn

from psvit.cost.analytic import spike_probes
from psvit.models.inference import measuring


def measure_firing_rates(model: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Input spike rate (fraction of non-zero input elements, over all time steps and images) of every
    spike-driven layer key of :func:`~psvit.cost.layer_macs`, from one forward of ``images``.

    Layers fed by analog values (the pixel-fed first conv and the classifier head) have no rate and are left
    out. Inputs on the residual stream are spike counts, not 0/1; their rate is the non-zero fraction too.
    """
    probes = spike_probes(model.model_name, model.config)
    modules = dict(model.named_modules())
    counts = {key: [0, 0] for key in probes}  # non-zero elements, all elements

    def record(key: str, x: torch.Tensor) -> None:
        counts[key][0] += int(torch.count_nonzero(x))
        counts[key][1] += x.numel()

    handles = []
    for key, (name, where) in probes.items():
        if where == "input":
            hook = modules[name].register_forward_pre_hook(lambda _m, args, key=key: record(key, args[0]))
        else:
            hook = modules[name].register_forward_hook(lambda _m, _args, out, key=key: record(key, out))
        handles.append(hook)
    try:
        with measuring(model):
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return {key: nonzero / total for key, (nonzero, total) in counts.items()}
