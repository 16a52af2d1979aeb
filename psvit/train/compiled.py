"""``compute.compile``: models compiled with ``torch.compile`` for evaluation, cached per model and shape.

A search evaluates a new pruned model in every trial. Each one is compiled once and the compiled module is kept
under a key of the model's identity, its parameter and buffer shapes, the device and the precision, so a model
pruned in place to a new shape, or moved, is compiled again. The cache holds the last :data:`CACHED` models (a
compiled module keeps its model alive). The LIF neurons are graph-safe (no module state inside the graph:
:mod:`psvit.models.lif`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

import torch
from torch import nn

from psvit.train.compute import Compute

#: Compiled graphs torch keeps per code object before it falls back to eager: every pruned shape is one more
#: (the default, 8, would end compilation after a few trials).
RECOMPILE_LIMIT = 1024

#: Compiled models kept (the base model and a trial's pruned model, with room to spare).
CACHED = 4

_compiled: OrderedDict[Hashable, nn.Module] = OrderedDict()


def shape_key(model: nn.Module, compute: Compute) -> Hashable:
    """What a compiled graph of ``model`` depends on besides its weights' values."""
    shapes = tuple((name, tuple(t.shape), t.dtype) for name, t in model.state_dict().items())
    return id(model), shapes, str(compute.device), compute.amp


def for_evaluation(model: nn.Module, compute: Compute) -> nn.Module:
    """``model`` itself, or with ``compute.compile`` its compiled module (made on first use, then reused)."""
    if not compute.compile:
        return model
    key = shape_key(model, compute)
    if key in _compiled:  # the entry keeps the model alive, so its id is not reused
        _compiled.move_to_end(key)
        return _compiled[key]
    config = torch._dynamo.config
    for name in ("recompile_limit", "accumulated_recompile_limit"):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), RECOMPILE_LIMIT))
    runner = torch.compile(model, dynamic=False)
    _compiled[key] = runner
    while len(_compiled) > CACHED:
        _compiled.popitem(last=False)
    return runner
