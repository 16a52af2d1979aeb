"""psvit's configuration as data: the packaged defaults (``conf/``) composed without a command line, their numeric
keys checked for type and range (:data:`NUMBERS`), and a composed config's sections as plain, resolved dicts.

Every command composes its config with Hydra from ``conf/``; the Python API (:mod:`psvit.api`) composes the same
files with :func:`compose`, so both start from one definition of every option.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from psvit.errors import ConfigError
from psvit.schema import ranges


def config_sections(cfg: DictConfig, *names: str) -> list[dict[str, Any]]:
    """Resolve the named config groups to plain dicts (interpolations resolved)."""
    return [cast(dict[str, Any], OmegaConf.to_container(cfg[name], resolve=True)) for name in names]


#: Every ranged number of the config: dotted key -> (kind, interval), from the schemas (:mod:`psvit.schema`). A
#: key that a command's config does not have, or that interpolates another key (checked under its own name), is
#: skipped.
NUMBERS: dict[str, tuple[str, str]] = ranges()


def check_numbers(cfg: DictConfig) -> None:
    """Every key of :data:`NUMBERS` in ``cfg`` has its kind and lies in its range; if not, one line names the key."""
    for key, (kind, interval) in NUMBERS.items():
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if not isinstance(node, DictConfig) or leaf not in node or OmegaConf.is_interpolation(node, leaf):
            continue
        value = node[leaf]
        if value is None and kind.endswith("?"):
            continue
        low, high = (float(bound) for bound in interval[1:-1].split(","))
        is_int = kind.startswith("int")
        if (
            isinstance(value, bool)
            or not isinstance(value, int if is_int else (int, float))
            or not (low <= value if interval[0] == "[" else low < value)
            or not (value <= high if interval[-1] == "]" else value < high)
        ):
            raise ConfigError(number_error(key, value))


def number_error(key: str, value: object) -> str:
    """The one line for a ranged number ``key`` (of :data:`NUMBERS`) that ``value`` does not fit."""
    kind, interval = NUMBERS[key]
    nullable = " or null" if kind.endswith("?") else ""
    what = "an integer" if kind.startswith("int") else "a number"
    return f"{key} must be {what} in {interval}{nullable}, got {value!r}"


def compose(
    config_name: str, options: Mapping[str, Any] | None = None, *, groups: Mapping[str, str] | None = None
) -> DictConfig:
    """The packaged primary config ``config_name`` (``search``, ``prune``, ...) as a command composes it, with
    its default config groups or the ones chosen in ``groups`` (``{"strategy": "uniform"}``); then ``options``
    (dotted keys, ``{"finetune.epochs": 1}``) set on it. A group option or key that does not exist, or a number
    out of range, is a one-line :class:`ConfigError`."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    outer = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="psvit.conf", version_base="1.3"):
            cfg = hydra_compose(
                config_name=config_name, overrides=[f"{group}={option}" for group, option in (groups or {}).items()]
            )
    except HydraException as exc:
        raise ConfigError(str(exc).splitlines()[0]) from None
    finally:
        GlobalHydra.instance().clear()
        if outer is not None:
            GlobalHydra.instance().initialize(outer)
    for key, value in (options or {}).items():
        if OmegaConf.select(cfg, key, default=_MISSING) is _MISSING:
            raise ConfigError(f"{key} is not a key of the {config_name} config")
        try:
            with open_dict(cfg):
                OmegaConf.update(cfg, key, value, merge=False)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{key}: {exc}".splitlines()[0]) from None
    check_numbers(cfg)
    return cfg


_MISSING = object()


def check_budget_value(budget: object) -> float:
    """``budget`` as a float strictly inside (0, 1), else a one-line :class:`ConfigError`."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0.0 < float(budget) < 1.0:
        raise ConfigError(
            f"budget must be a number strictly between 0 and 1 (a memory-saving fraction), got {budget!r}"
        )
    return float(budget)
