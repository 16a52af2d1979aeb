"""Model families (one self-contained file each) behind a registry; see :mod:`psvit.models.registry`."""

from psvit.models import spike_driven, spikformer  # noqa: F401  (register "sdt" and "spikformer")
from psvit.models.registry import (
    Family,
    Variant,
    create_model,
    get_family,
    get_variant,
    list_models,
    register_model,
    register_variant,
)

__all__ = [
    "Family",
    "Variant",
    "create_model",
    "get_family",
    "get_variant",
    "list_models",
    "register_model",
    "register_variant",
]
