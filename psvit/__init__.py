"""psvit: structured pruning and budget-constrained width search for Spiking Vision Transformers.

``psvit.create_model("spikformer_tiny")`` (``list_models()`` names them all), ``psvit.load`` / ``psvit.save`` for
checkpoints; :mod:`psvit.api` searches, prunes and fine-tunes from Python; ``python -m psvit.<command>`` from
the command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from psvit.lazy import lazy_exports

if TYPE_CHECKING:
    from psvit.checkpoint import load, save
    from psvit.models import create_model, list_models

__all__ = ["create_model", "list_models", "load", "save"]
__version__ = "0.1.0"

#: The package's namespace, imported on first use, so that ``python -m psvit.<command>`` does not import torch
#: (~3 s) before it has checked its config.
__getattr__ = lazy_exports(
    __name__,
    {
        "create_model": "psvit.models",
        "list_models": "psvit.models",
        "load": "psvit.checkpoint",
        "save": "psvit.checkpoint",
    },
)
