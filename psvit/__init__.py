"""psvit: structured pruning and budget-constrained width search for Spiking Vision Transformers.

``psvit.create_model("spikformer_tiny")`` (``list_models()`` names them all), ``psvit.load`` / ``psvit.save`` for
checkpoints; :mod:`psvit.api` searches, prunes and fine-tunes from Python; ``python -m psvit.<command>`` from
the command line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psvit.checkpoint import load, save
    from psvit.models import create_model, list_models

__all__ = ["create_model", "list_models", "load", "save"]
__version__ = "0.1.0"

#: Where each name of the package's namespace is defined. They are imported on first use (PEP 562), so that
#: ``python -m psvit.<command>`` does not import torch (~3 s) before it has checked its config.
_EXPORTS = {
    "create_model": "psvit.models",
    "list_models": "psvit.models",
    "load": "psvit.checkpoint",
    "save": "psvit.checkpoint",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'psvit' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
