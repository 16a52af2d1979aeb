"""Costs from a model's width config alone, without its weights: parameters, weight bytes and MACs per step.

Nothing here knows a model family: every number comes from building the registered model on the ``meta``
device (shapes only: no memory, no arithmetic) from its config.

* **Parameters** are the ``numel`` of the meta model's parameters. The search asks for the size of thousands
  of pruned configs, so the shapes are read once per *structure* (the config without its group widths): each
  parameter axis is either constant or the width of the group whose slices index it (the same fact that makes
  pruning exact), and the count of any config with that structure is then arithmetic. The first reading is
  checked against a second meta build at other widths.
* **MACs** come from one meta forward of one image with ``T = 1``, counted by the formulas of
  :mod:`torch.utils.flop_counter` (1 MAC = half its FLOPs) and charged to the module that runs each product: a
  leaf conv/linear by its name (``"block.0.attn.q_linear"``), a matrix product in a module's own code by the
  name its family gives it (``"block.0.attn.kv_matmul"``). Convention of the Spikformer papers: 1 FLOP = 1 MAC;
  only conv, linear and matmul MACs count (not BN, LIF, pooling, element-wise products or additions).

A family's config has ``T``, ``in_channels`` and ``img_size`` (square images).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from psvit.models.channels import Group, set_widths
from psvit.models.registry import get_family

#: float32 weights.
DEFAULT_BYTES_PER_PARAM = 4
Config = dict[str, Any]


def meta_model(model_name: str, config: Config) -> nn.Module:
    """The model ``model_name`` built from ``config`` on the ``meta`` device (shapes only)."""
    with torch.device("meta"):
        return get_family(model_name).model(**config)


# -- parameters ------------------------------------------------------------------------------------------------


Location = tuple[str, int | None]  # where a group's width is in a config: (key, index in its list or None)


@dataclass(frozen=True)
class _Sizes:
    """Parameter count of every config of one structure: a sum of constants times products of group widths."""

    locations: tuple[Location, ...]  #: per group (in group order), where its width is in the config
    terms: tuple[tuple[int, tuple[int, ...]], ...]  #: (constant, indices of the groups whose widths multiply it)
    #: per parameter: its name and, per axis, its constant size or (as ``-1 - g``) the width of group ``g``
    axes: tuple[tuple[str, tuple[int, ...]], ...]

    def widths(self, config: Config) -> list[int]:
        return [config[key] if index is None else config[key][index] for key, index in self.locations]

    def count(self, config: Config) -> int:
        return self.count_widths(self.widths(config))

    def count_widths(self, widths: Sequence[int]) -> int:
        """The count of the config of this structure whose group widths are ``widths`` (in group order)."""
        return sum(c * math.prod(widths[g] for g in gs) for c, gs in self.terms)

    def shapes(self, config: Config) -> dict[str, tuple[int, ...]]:
        widths = self.widths(config)
        return {name: tuple(n if n >= 0 else widths[-1 - n] for n in axes) for name, axes in self.axes}


def _param_terms(model: nn.Module, groups: list[Group]) -> list[tuple[str, int, tuple[int, ...]]]:
    """Per parameter: its name, the product of its width-independent axes, the groups sizing its other axes."""
    axis_group = {(s.key, s.dim): i for i, g in enumerate(groups) for s in g.slices}
    return [
        (
            name,
            math.prod(n for d, n in enumerate(p.shape) if (name, d) not in axis_group),
            tuple(sorted(axis_group[name, d] for d in range(p.dim()) if (name, d) in axis_group)),
        )
        for name, p in model.named_parameters()
    ]


def _read_sizes(model_name: str, config: Config, groups: list[Group]) -> _Sizes:
    """Read the sizes from a meta build, and check them against a second build with every group one head wider
    (a parameter whose size follows a width that no group slices would make every count wrong)."""
    terms = _param_terms(meta_model(model_name, config), groups)
    wider = [g.width + g.heads for g in groups]
    model = meta_model(model_name, set_widths(config, groups, {g.name: w for g, w in zip(groups, wider)}))
    for (name, constant, sized_by), p in zip(terms, model.parameters()):
        if p.numel() != constant * math.prod(wider[g] for g in sized_by):
            raise ValueError(
                f"model {model_name!r}: the size of parameter {name} depends on a width that no "
                "group's slices cover; its family's groups are incomplete"
            )
    totals: dict[tuple[int, ...], int] = {}
    for _, constant, sized_by in terms:
        totals[sized_by] = totals.get(sized_by, 0) + constant
    axis_group = {(s.key, s.dim): i for i, g in enumerate(groups) for s in g.slices}
    axes = tuple(
        (name, tuple(-1 - axis_group[name, d] if (name, d) in axis_group else n for d, n in enumerate(p.shape)))
        for name, p in meta_model(model_name, config).named_parameters()
    )
    return _Sizes(tuple((g.config_key, g.index) for g in groups), tuple((c, gs) for gs, c in totals.items()), axes)


def _structure(config: Config, locations: tuple[Location, ...]) -> str | None:
    """``config`` with the widths at ``locations`` blanked out, as a string; None if it has no such entries."""
    blank = {k: list(v) if isinstance(v, list) else v for k, v in config.items()}
    try:
        for key, index in locations:
            if index is None:
                blank[key] = None
            else:
                blank[key][index] = None
    except (KeyError, IndexError, TypeError):
        return None
    return json.dumps(blank, sort_keys=True, default=str)


#: Per (model, structure): its sizes; per model: the width locations of the structures seen.
_SIZES: dict[tuple[str, str], _Sizes] = {}
_LOCATIONS: dict[str, list[tuple[Location, ...]]] = {}


def _sizes(model_name: str, resolved: Config) -> _Sizes:
    """The :class:`_Sizes` of ``resolved``'s structure: a lookup once the structure has been read."""
    for locations in _LOCATIONS.get(model_name, ()):
        key = _structure(resolved, locations)
        if key is not None and (model_name, key) in _SIZES:
            return _SIZES[model_name, key]
    sizes = _read_sizes(model_name, resolved, get_family(model_name).groups(resolved))
    _SIZES[model_name, _structure(resolved, sizes.locations)] = sizes
    if sizes.locations not in _LOCATIONS.setdefault(model_name, []):
        _LOCATIONS[model_name].append(sizes.locations)
    return sizes


def count_params(model_name: str, config: Config, *, include_unused_norms: bool = True) -> int:
    """Parameters of ``model_name`` built from ``config``. ``include_unused_norms=False`` leaves out the
    parameters of modules that forward never calls (Spikformer's ``norm1``/``norm2``), which the official
    figures count."""
    resolved = get_family(model_name).resolve_config(**config)
    if not include_unused_norms:
        return _trace(model_name, json.dumps(resolved, sort_keys=True)).used_params
    return _sizes(model_name, resolved).count(resolved)


def params_of_widths(model_name: str, config: Config) -> tuple[list[Location], Callable[[Sequence[int]], int]]:
    """For the configs of ``config``'s structure (those that differ from it in group widths only): where each
    group's width is in a config, and the parameter count as a function of the group widths in that order, which
    skips resolving and looking up every config (a projection sizes thousands of them)."""
    resolved = get_family(model_name).resolve_config(**config)
    sizes = _sizes(model_name, resolved)
    return list(sizes.locations), sizes.count_widths


def param_shapes(model_name: str, config: Config) -> dict[str, tuple[int, ...]]:
    """The shape of every parameter of ``model_name`` built from ``config`` (by name, in the model's order)."""
    resolved = get_family(model_name).resolve_config(**config)
    return _sizes(model_name, resolved).shapes(resolved)


def weight_bytes(model_name: str, config: Config, bytes_per_param: int = DEFAULT_BYTES_PER_PARAM) -> int:
    """Weight memory in bytes (the papers' "memory"): all parameters times ``bytes_per_param``."""
    return count_params(model_name, config) * bytes_per_param


def memory_saving(model_name: str, base_config: Config, config: Config) -> float:
    """Fraction of weight memory saved by ``config`` relative to ``base_config``: ``1 - bytes / base bytes``."""
    return 1.0 - weight_bytes(model_name, config) / weight_bytes(model_name, base_config)


# -- MACs ------------------------------------------------------------------------------------------------------


class _MacCounter(TorchDispatchMode):
    """Charges the MACs of every product that :mod:`torch.utils.flop_counter` has a formula for to the
    innermost running module of ``model``; records which modules ran."""

    def __init__(self, model: nn.Module, matmul_names: tuple[str, ...]) -> None:
        super().__init__()
        self.matmul_names = matmul_names
        self.macs: dict[str, int] = {}
        self.module_keys: set[str] = set()
        self.ran: set[str] = set()
        self._stack: list[list[Any]] = []  # [name, is_leaf, products so far in its own code]
        self._hooks = []
        for name, module in model.named_modules():
            leaf = next(module.children(), None) is None
            self._hooks.append(
                module.register_forward_pre_hook(lambda _m, _a, name=name, leaf=leaf: self._enter(name, leaf))
            )
            self._hooks.append(module.register_forward_hook(lambda *_: self._leave()))

    def remove_hooks(self) -> None:
        for hook in self._hooks:
            hook.remove()

    def _enter(self, name: str, leaf: bool) -> None:
        self.ran.add(name)
        self._stack.append([name, leaf, 0])

    def _leave(self) -> None:  # returns None: a forward hook's return value would replace the output
        self._stack.pop()

    def _key(self) -> str:
        frame = self._stack[-1]
        name, leaf, n = frame
        if leaf:
            self.module_keys.add(name)
            return name
        frame[2] += 1
        product = self.matmul_names[n] if n < len(self.matmul_names) else f"matmul{n}"
        return f"{name}.{product}" if name else product

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            key = self._key()
            self.macs[key] = self.macs.get(key, 0) + formula(*args, **kwargs, out_val=out) // 2
        return out


@dataclass(frozen=True)
class _Trace:
    macs: dict[str, int]  #: per image and time step, by layer key, in execution order
    module_keys: frozenset[str]  #: the keys that are module names (the others are in-module products)
    used_params: int  #: parameters of the modules that forward calls


@functools.lru_cache(maxsize=256)
def _trace(model_name: str, resolved_json: str) -> _Trace:
    config = {**json.loads(resolved_json), "T": 1}
    family = get_family(model_name)
    model = meta_model(model_name, config).eval()
    counter = _MacCounter(model, tuple(family.matmuls))
    image = torch.empty(1, config["in_channels"], config["img_size"], config["img_size"], device="meta")
    try:
        with torch.no_grad(), counter:
            model(image)
    finally:
        counter.remove_hooks()
    ran = counter.ran
    used = sum(p.numel() for name, m in model.named_modules() if name in ran for p in m.parameters(recurse=False))
    return _Trace(counter.macs, frozenset(counter.module_keys), used)


def _trace_of(model_name: str, config: Config) -> _Trace:
    resolved = get_family(model_name).resolve_config(**config)
    return _trace(model_name, json.dumps(resolved, sort_keys=True))


def layer_macs(model_name: str, config: Config) -> dict[str, int]:
    """MACs per image and per time step, keyed by module name (``"block.0.attn.q_linear"``) or, for matrix
    products in a module's own code, by the name its family gives them (``"block.0.attn.kv_matmul"``)."""
    return dict(_trace_of(model_name, config).macs)


def count_flops(model_name: str, config: Config) -> int:
    """FLOPs (= MACs) per image for ONE time step; a full inference over ``T`` steps is ``T * count_flops``."""
    return sum(layer_macs(model_name, config).values())


def spike_probes(model_name: str, config: Config) -> dict[str, tuple[str, str]]:
    """Where each spike-driven layer's input firing rate is measured: ``(module name, "input" | "output")``.

    A conv/linear layer's own input; for a named matrix product, the output of the LIF its family names as its
    binary operand. The family's analog layers (and products it does not name) have no probe.
    """
    family = get_family(model_name)
    trace = _trace_of(model_name, config)
    probes: dict[str, tuple[str, str]] = {}
    for key in trace.macs:
        prefix, _, leaf = key.rpartition(".")
        if key in family.analog_layers:
            continue
        if key in trace.module_keys:
            probes[key] = (key, "input")
        elif leaf in family.matmuls:
            probes[key] = (f"{prefix}.{family.matmuls[leaf]}" if prefix else family.matmuls[leaf], "output")
    return probes
