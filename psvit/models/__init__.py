"""Model families (one self-contained file each) behind a registry."""

from psvit.models import spikformer  # noqa: F401  (registers "spikformer")
from psvit.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
