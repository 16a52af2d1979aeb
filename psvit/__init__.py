"""psvit: structured pruning and budget-constrained width search for Spiking Vision Transformers."""

from psvit.checkpoint import load, save
from psvit.models import create_model

__all__ = ["create_model", "load", "save"]
__version__ = "0.1.0"
