"""Channel importance scores, one score per channel of a group, aggregated over the group's coupled tensors.

An importance is a function ``(model, groups, data) -> {group name: scores of shape (width,)}``; higher means
keep. ``data`` is an iterable of ``(images, labels)`` batches, used only by the data-driven scores (pass a few
batches: every batch given is used). Scores never change the model: its weights, BN statistics, ``.grad``
fields and train/eval mode are as before.

* ``l1`` (the default: the paper's filter-norm criterion) and ``l2``: the L1 / L2 norm of all the channel's
  conv/linear weights together: its filters (``out``) and its outgoing weights in the consuming layers (``in``).
* ``bn_scale``: the sum of ``|gamma|`` over the group's BatchNorms.
* ``taylor``: first-order Taylor, ``sum |w * dL/dw|`` over every parameter slice of the channel, with the
  cross-entropy gradient accumulated over the batches (through spikingjelly's surrogate gradients; BN in eval
  mode).
* ``spike_activity``: the firing rate of the channel's LIF output times the L2 norm of its outgoing weights.
  For ``embed`` the rates of every LIF that writes the residual stream add up; for ``qk`` (no outgoing weights:
  q and k meet in ``q @ k^T``) the score is ``rate(q) * rate(k)``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from torch import nn

from psvit.errors import ConfigError
from psvit.models.inference import measuring
from psvit.prune.groups import Group, Spikes

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
Importance = Callable[[nn.Module, Sequence[Group], Batches | None], dict[str, torch.Tensor]]


def _per_channel(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum of ``t`` over every axis but ``dim``."""
    return t.movedim(dim, 0).reshape(t.shape[dim], -1).sum(1)


def _norms(model: nn.Module, groups: Sequence[Group], roles: tuple[str, ...], p: int) -> dict[str, torch.Tensor]:
    """Per channel, the p-norm of all the group's slices with one of ``roles``, concatenated."""
    sd = model.state_dict()
    return {
        g.name: sum(_per_channel(sd[s.key].detach().abs().pow(p), s.dim) for s in g.slices if s.role in roles)
        ** (1 / p)
        for g in groups
    }


def l1(model: nn.Module, groups: Sequence[Group], data: Batches | None = None) -> dict[str, torch.Tensor]:
    return _norms(model, groups, ("out", "in"), 1)


def l2(model: nn.Module, groups: Sequence[Group], data: Batches | None = None) -> dict[str, torch.Tensor]:
    return _norms(model, groups, ("out", "in"), 2)


def bn_scale(model: nn.Module, groups: Sequence[Group], data: Batches | None = None) -> dict[str, torch.Tensor]:
    return _norms(model, groups, ("bn_weight",), 1)


def _batches(data: Batches | None, name: str) -> Batches:
    if data is None:
        raise ConfigError(f"importance {name!r} is data-driven: pass data=<a few (images, labels) batches>")
    return data


def taylor(model: nn.Module, groups: Sequence[Group], data: Batches | None = None) -> dict[str, torch.Tensor]:
    data = _batches(data, "taylor")
    params = dict(model.named_parameters())
    keys = sorted({s.key for g in groups for s in g.slices if s.key in params})
    grads = {k: torch.zeros_like(params[k]) for k in keys}
    device = params[keys[0]].device
    with measuring(model), torch.enable_grad():
        for images, labels in data:
            loss = F.cross_entropy(model(images.to(device)), labels.to(device))
            for key, grad in zip(keys, torch.autograd.grad(loss, [params[k] for k in keys], allow_unused=True)):
                if grad is not None:
                    grads[key] += grad
            functional.reset_net(model)
    saliency = {k: (params[k] * grads[k]).detach().abs() for k in keys}
    return {g.name: sum(_per_channel(saliency[s.key], s.dim) for s in g.slices if s.key in saliency) for g in groups}


def firing_rates(model: nn.Module, sources: Iterable[Spikes], data: Batches) -> dict[str, torch.Tensor]:
    """Mean firing rate per channel of each LIF module in ``sources`` over ``data`` (eval mode, no grad)."""
    modules = dict(model.named_modules())
    totals: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def record(source: Spikes, module: nn.Module, inputs: object, out: torch.Tensor) -> None:
        totals[source.module] = totals.get(source.module, 0) + _per_channel(out.detach().float(), source.dim)
        counts[source.module] = counts.get(source.module, 0) + out.numel() // out.shape[source.dim]

    hooks = [modules[s.module].register_forward_hook(functools.partial(record, s)) for s in set(sources)]
    device = next(model.parameters()).device
    try:
        with measuring(model):
            for images, _ in data:
                model(images.to(device))
                functional.reset_net(model)
    finally:
        for hook in hooks:
            hook.remove()
    return {name: total / counts[name] for name, total in totals.items()}


def spike_activity(model: nn.Module, groups: Sequence[Group], data: Batches | None = None) -> dict[str, torch.Tensor]:
    rates = firing_rates(model, [s for g in groups for s in g.spikes], _batches(data, "spike_activity"))
    outgoing = _norms(model, groups, ("in",), 2)
    scores = {}
    for g in groups:
        group_rates = [rates[s.module] for s in g.spikes]
        scores[g.name] = math.prod(group_rates) if g.kind == "qk" else sum(group_rates) * outgoing[g.name]
    return scores


IMPORTANCES: dict[str, Importance] = {
    "l1": l1,
    "l2": l2,
    "bn_scale": bn_scale,
    "taylor": taylor,
    "spike_activity": spike_activity,
}


def get_importance(importance: str | Importance) -> Importance:
    """The importance named ``importance`` (a key of :data:`IMPORTANCES`), or ``importance`` itself if callable."""
    if callable(importance):
        return importance
    if importance not in IMPORTANCES:
        raise ConfigError(f"unknown importance {importance!r}; choose one of: {', '.join(IMPORTANCES)}")
    return IMPORTANCES[importance]
