"""Model families (one self-contained file each) behind a registry."""

from psvit.models import spike_driven, spikformer  # noqa: F401  (register "sdt" and "spikformer")
from psvit.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
