"""``python -m psvit.prune``: prune the base model with a strategy, fine-tune, and print the paper's table row.

    python -m psvit.prune strategy=uniform +ratio=0.75
    python -m psvit.prune strategy=psvit +budget=0.224
    python -m psvit.prune strategy=largest_first +budget=0.4
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from psvit.entry import hydra_main
from psvit.errors import ConfigError

if TYPE_CHECKING:
    from psvit.workflow import Setup


def one_shot_bits(cfg: DictConfig, groups: list) -> dict[str, int] | None:
    """``prune.bits`` for every enabled group, or None for float32 (32)."""
    bits = int(cfg.prune.bits)
    return {g.name: bits for g in groups} if bits < 32 else None


def allocate(s: Setup, cfg: DictConfig) -> tuple[dict[str, float], str]:
    """Keep ratios per group for the configured strategy (widths for the budget left once ``prune.bits`` is
    counted); and a note on how they were found."""
    from psvit.allocation import largest_first, sensitivity_greedy, uniform_for_budget, uniform_ratios
    from psvit.workflow import sensitivity

    strategy, budget, ratio = cfg.strategy.name, cfg.get("budget"), cfg.get("ratio")
    bits = one_shot_bits(cfg, s.groups)
    if strategy == "uniform" and ratio is not None:
        return uniform_ratios(s.groups, ratio), f"uniform keep ratio {ratio}"
    s.memory.check_feasible(budget, s.groups, bits)  # before any evaluation
    if strategy == "uniform":
        return uniform_for_budget(s.memory, s.groups, budget, bits=bits), f"largest uniform ratio saving >= {budget}"
    table, cached = sensitivity(s)
    note = "sensitivity from cache" if cached else "sensitivity computed"
    if strategy == "psvit":
        return sensitivity_greedy(s.memory, s.groups, table, budget, cfg.strategy.step, bits), note
    return largest_first(s.memory, s.groups, table, budget, cfg.strategy.tolerance, bits), note


def check_request(cfg: DictConfig) -> None:
    """Fail fast, before any work or write, on a bad strategy/budget/ratio combination, an unwritable cache or
    store, unknown groups, or a budget the enabled groups cannot reach."""
    from psvit.allocation import STRATEGIES, check_budget_value
    from psvit.cli import check_pruning_plan
    from psvit.preflight import check_outputs
    from psvit.quant import check_bits
    from psvit.workflow import plan

    try:
        check_bits(cfg.prune.bits)
    except ValueError as exc:
        raise ConfigError(f"prune.bits: {exc}") from None
    strategy = cfg.strategy.name
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    budget, ratio = cfg.get("budget"), cfg.get("ratio")
    if budget is not None:
        cfg.budget = check_budget_value(budget)
    if ratio is not None:
        if strategy != "uniform":
            raise ConfigError("+ratio=R is for strategy=uniform; other strategies take +budget=B")
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
            raise ConfigError(f"ratio must be a keep ratio in (0, 1], got {ratio!r}")
    elif budget is None:
        raise ConfigError(f"strategy={strategy} needs +budget=B (minimum memory saving, 0 < B < 1)"
                          + (" or +ratio=R" if strategy == "uniform" else ""))
    plan(cfg)
    check_outputs(cfg)
    check_pruning_plan(cfg, None if ratio is not None else cfg.budget, cfg.prune.bits)


@hydra_main("prune")
def main(cfg: DictConfig) -> None:
    check_request(cfg)
    from psvit import tracking
    from psvit.workflow import finish, setup

    s = setup(cfg)
    ratios, note = allocate(s, cfg)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    bits = one_shot_bits(cfg, s.groups)
    done = finish(s, ratios, out_dir, bits=bits)
    at = f", weights at {cfg.prune.bits} bits" if bits else ""
    print(f"strategy {cfg.strategy.name} ({note}{at}); keep ratios:")
    for name, r in ratios.items():
        print(f"  {name:<16} {r:.4f}")
    print(done.row.markdown())
    print(f"pruned checkpoint: {done.checkpoint}")
    with tracking.run(cfg.mlflow.tracking_uri, cfg.mlflow.experiment, f"prune-{cfg.strategy.name}",
                      tags={"psvit.command": "prune", "strategy": cfg.strategy.name}) as active:
        tracking.log_params({"config": OmegaConf.to_container(cfg, resolve=True),
                             "ratio": {k: round(v, 6) for k, v in ratios.items()}, "bits": done.bits})
        tracking.log_metrics({**done.row.metrics(), **done.cost.to_dict()})
        tracking.log_text(done.row.markdown() + "\n", "result_row.md")
        tracking.log_artifact(done.checkpoint)
        tracking.log_artifact(s.base.splits_file, artifact_path="data")
    print(f"MLflow run {active.info.run_id} in {cfg.mlflow.tracking_uri} (experiment {cfg.mlflow.experiment!r})")


if __name__ == "__main__":
    main()
