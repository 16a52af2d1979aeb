"""Typed schemas of the config groups: every key's type, and every number's range.

Each group file of ``conf/`` (``train/default.yaml``, ``search/default.yaml``, ...) starts from its schema here
(``defaults: [/schema/<group>@_here_, _self_]``), so Hydra checks every value's type when it composes a config:
``search.seed=abc`` or ``search.bits=[a]`` fail there, in one line, before any work. The values live in the
yaml files (the schemas have none), and a number's range is the ``range`` of its field, which
:func:`psvit.config.check_numbers` checks for every command and the Python API.

A range is an interval: ``[`` / ``]`` closed, ``(`` / ``)`` open, ``inf`` unbounded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING


def ranged(interval: str) -> Any:
    """A required field (its value comes from the yaml) whose number must lie in ``interval``."""
    return field(default=MISSING, metadata={"range": interval})


@dataclass
class TrainSchema:
    epochs: int = ranged("[1, inf)")
    batch_size: int = ranged("[1, inf)")
    lr: float = ranged("(0, inf)")
    weight_decay: float = ranged("[0, inf)")
    label_smoothing: float = ranged("[0, 1)")
    cosine: bool = MISSING


@dataclass
class FinetuneSchema:
    epochs: int = ranged("[0, inf)")
    batch_size: int = ranged("[1, inf)")
    accumulate: int = ranged("[1, inf)")
    lr: float = ranged("(0, inf)")
    weight_decay: float = ranged("[0, inf)")
    label_smoothing: float = ranged("[0, 1)")
    cosine: bool = MISSING
    kd_weight: float = ranged("[0, 1]")
    temperature: float = ranged("(0, inf)")


@dataclass
class ComputeSchema:
    amp: Optional[str] = MISSING
    eval_batch_size: int = ranged("[1, inf)")
    num_workers: Optional[int] = ranged("[0, inf)")
    pin_memory: bool = MISSING
    compile: bool = MISSING


@dataclass
class ConstraintsSchema:
    min_channels: int = ranged("[1, inf)")
    round_to: int = ranged("[1, inf)")


@dataclass
class PruneSchema:
    enabled: list[str] = MISSING
    importance: str = MISSING
    constraints: ConstraintsSchema = field(default_factory=ConstraintsSchema)
    bits: int = MISSING
    bn_recalibration_batches: int = ranged("[0, inf)")


@dataclass
class SensitivitySchema:
    grid: list[float] = MISSING
    batch_size: int = ranged("[1, inf)")
    val_fraction: float = ranged("(0, 1]")
    bits: list[int] = MISSING


@dataclass
class FidelitySchema:
    subset: float = ranged("(0, 1]")
    promote: float = ranged("(0, 1]")


@dataclass
class ParityToleranceSchema:
    max_abs_logit: float = ranged("[0, inf)")
    min_match_graph: float = ranged("[0, inf)")  # as python -m psvit.export: above 1 never passes
    min_top1_graph: float = ranged("[0, inf)")
    min_top1_model: float = ranged("[0, inf)")


@dataclass
class SearchSchema:
    sampler: str = MISSING
    n_trials: int = ranged("[1, inf)")
    study_name: Optional[str] = MISSING
    storage: str = MISSING
    seed: int = ranged("[0, inf)")
    n_startup_trials: int = ranged("[0, inf)")
    priors: bool = MISSING
    prior_tolerance: float = ranged("[0, 1]")
    front_every: int = ranged("[0, inf)")
    step: Optional[float] = ranged("(0, 1]")
    repair: bool = MISSING
    bits: list[int] = MISSING
    recovery_epochs: Optional[int] = ranged("[0, inf)")
    fidelity: FidelitySchema = field(default_factory=FidelitySchema)
    dry_run: bool = MISSING
    energy_objective: bool = MISSING
    latency_repeats: int = ranged("[1, inf)")
    select_tolerance: float = ranged("[0, 1]")
    finalize: bool = MISSING
    export: bool = MISSING
    register_model: Optional[str] = MISSING
    parity: ParityToleranceSchema = field(default_factory=ParityToleranceSchema)
    heartbeat_interval: float = ranged("(0, inf)")
    grace_period: float = ranged("(0, inf)")


@dataclass
class MlflowSchema:
    tracking_uri: str = MISSING
    experiment: str = MISSING


@dataclass
class PsvitStrategySchema:
    name: str = MISSING
    step: float = ranged("(0, 1]")


@dataclass
class LargestFirstStrategySchema:
    name: str = MISSING
    tolerance: float = ranged("[0, 1]")


@dataclass
class UniformStrategySchema:
    name: str = MISSING


#: ``conf/<group>/<option>.yaml`` -> its schema, stored in Hydra's ConfigStore as ``schema/<group>/<option>``.
SCHEMAS: dict[str, type] = {
    "train/default": TrainSchema,
    "finetune/default": FinetuneSchema,
    "compute/default": ComputeSchema,
    "prune/default": PruneSchema,
    "sensitivity/default": SensitivitySchema,
    "search/default": SearchSchema,
    "mlflow/default": MlflowSchema,
    "strategy/psvit": PsvitStrategySchema,
    "strategy/largest_first": LargestFirstStrategySchema,
    "strategy/uniform": UniformStrategySchema,
}
#: Numbers outside the schemas: the primary configs' own keys and the data group's (each dataset has its own
#: options; these are the ones they share).
OTHER_RANGES: dict[str, tuple[str, str]] = {
    "seed": ("int", "[0, inf)"),
    "data.seed": ("int", "[0, inf)"),
    "data.img_size": ("int", "[1, inf)"),
    "data.val_fraction": ("number", "[0, 1)"),
    "data.test_fraction": ("number", "[0, 1)"),
}


def register() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent); the group files refer to them."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for path, schema in SCHEMAS.items():
        group, name = path.split("/")
        store.store(group=f"schema/{group}", name=name, node=schema)


def ranges() -> dict[str, tuple[str, str]]:
    """Every ranged number: dotted key -> (kind, interval). Kind ``int`` takes integers, ``number`` integers or
    floats; a trailing ``?`` allows null. Keys of schemas of the same group (the strategies) are merged."""
    found: dict[str, tuple[str, str]] = dict(OTHER_RANGES)
    for path, schema in SCHEMAS.items():
        found.update(_ranges(schema, path.split("/")[0]))
    return found


def _ranges(schema: type, prefix: str) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    hints = _annotations(schema)
    for f in dataclasses.fields(schema):
        key, kind = f"{prefix}.{f.name}", hints[f.name]
        if dataclasses.is_dataclass(f.default_factory) if f.default_factory is not dataclasses.MISSING else False:
            out.update(_ranges(f.default_factory, key))  # type: ignore[arg-type]
        elif "range" in f.metadata:
            base = "int" if kind.startswith(("int", "Optional[int]")) else "number"
            out[key] = (base + ("?" if kind.startswith("Optional") else ""), f.metadata["range"])
    return out


def _annotations(schema: type) -> dict[str, str]:
    """The fields' annotations as written (strings: this module postpones them)."""
    return {
        name: str(hint)
        for klass in reversed(schema.__mro__)
        for name, hint in getattr(klass, "__annotations__", {}).items()
    }
