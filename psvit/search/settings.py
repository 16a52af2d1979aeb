"""Settings a search reads from its config beyond the search space: its sampler, bit-width choices, recovery and
model registration, checked before any work."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from psvit.errors import ConfigError
from psvit.quant import check_bits
from psvit.search.samplers import SEARCH_SAMPLERS, STRATEGY_SAMPLERS


def check_settings(cfg: DictConfig) -> None:
    """One-line errors for an unknown sampler, bad ``search.bits`` (or several with a strategy sampler), and a
    ``search.register_model`` that is not a name or has no model to register."""
    if cfg.search.sampler not in SEARCH_SAMPLERS + STRATEGY_SAMPLERS:
        raise ConfigError(
            f"search.sampler must be one of {', '.join(SEARCH_SAMPLERS + STRATEGY_SAMPLERS)}, "
            f"got {cfg.search.sampler!r}"
        )
    bits = list(cfg.search.bits) if OmegaConf.is_list(cfg.search.bits) else None
    try:
        if not bits:
            raise ValueError("it must be a non-empty list, e.g. [32] or [2,3,4,8]")
        for b in bits:
            check_bits(b)
    except ValueError as exc:
        raise ConfigError(f"search.bits: {exc}; got {cfg.search.bits}") from None
    if cfg.search.sampler in STRATEGY_SAMPLERS and len(set(bits)) > 1:
        raise ConfigError(
            f"search.sampler={cfg.search.sampler} evaluates its strategy at one bit-width: give "
            f"search.bits one value (e.g. [4]), got {list(bits)}"
        )
    name = cfg.search.get("register_model")
    if name is not None:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"search.register_model must be null or a model name, got {name!r}")
        if not (cfg.search.finalize and cfg.search.export):
            raise ConfigError(
                "search.register_model needs search.finalize=true and search.export=true (it registers "
                "the chosen model's MLflow Model)"
            )


def bit_choices(cfg: DictConfig) -> tuple[int, ...]:
    """``search.bits`` as sorted, distinct bit-widths (checked by the request)."""
    return tuple(sorted({int(b) for b in cfg.search.bits}))


def recovery_epochs(cfg: DictConfig) -> int:
    """``search.recovery_epochs``; null means 1 when the search quantizes, else 0."""
    epochs = cfg.search.recovery_epochs
    return int(epochs) if epochs is not None else int(min(bit_choices(cfg)) < 32)
