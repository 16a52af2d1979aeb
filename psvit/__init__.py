"""psvit: structured pruning and budget-constrained width search for Spiking Vision Transformers.

``psvit.create_model("spikformer_tiny")`` (``list_models()`` names them all), ``psvit.load`` / ``psvit.save`` for
checkpoints; :mod:`psvit.api` searches, prunes and fine-tunes from Python; ``python -m psvit.<command>`` from
the command line.
"""

from psvit.checkpoint import load, save
from psvit.models import create_model, list_models

__all__ = ["create_model", "list_models", "load", "save"]
__version__ = "0.1.0"
