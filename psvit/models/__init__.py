"""Model families (one self-contained file each) behind a registry; see :mod:`psvit.models.registry`."""

from psvit.models import spike_driven, spikformer  # noqa: F401  (register "sdt" and "spikformer")
from psvit.models.registry import Family, create_model, get_family, list_models, register_model

__all__ = ["Family", "create_model", "get_family", "list_models", "register_model"]
