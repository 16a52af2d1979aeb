"""``python -m psvit.prune``: prune the base model with a strategy, fine-tune, and print the paper's table row.

python -m psvit.prune strategy=uniform +ratio=0.75
python -m psvit.prune strategy=psvit +budget=0.224
python -m psvit.prune strategy=largest_first +budget=0.4
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from psvit.cli.launcher import hydra_main
from psvit.cli.preflight import check_plan
from psvit.errors import ConfigError


def check_request(cfg: DictConfig) -> None:
    """Fail fast, before any work or write, on a bad strategy/budget/ratio combination, an unwritable cache or
    store, unknown groups, or a budget the enabled groups cannot reach."""
    from psvit.allocation import check_strategy
    from psvit.quant import check_bits

    try:
        check_bits(cfg.prune.bits)
    except ValueError as exc:
        raise ConfigError(f"prune.bits: {exc}") from None
    budget = check_strategy(cfg.strategy.name, cfg.get("budget"), cfg.get("ratio"))
    if budget is not None:
        cfg.budget = budget
    check_plan(cfg, None if cfg.get("ratio") is not None else budget, cfg.prune.bits)


@hydra_main("prune")
def main(cfg: DictConfig) -> None:
    check_request(cfg)
    from psvit import tracking
    from psvit.workflow import allocate, finish, one_shot_bits, setup

    s = setup(cfg)
    ratios, note = allocate(s)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    bits = one_shot_bits(s)
    done = finish(s, ratios, out_dir, bits=bits)
    at = f", weights at {cfg.prune.bits} bits" if bits else ""
    print(f"strategy {cfg.strategy.name} ({note}{at}); keep ratios:")
    for name, r in ratios.items():
        print(f"  {name:<16} {r:.4f}")
    print(done.row.markdown())
    print(f"pruned checkpoint: {done.checkpoint}")
    with tracking.run(
        cfg.mlflow.tracking_uri,
        cfg.mlflow.experiment,
        f"prune-{cfg.strategy.name}",
        tags={"psvit.command": "prune", "strategy": cfg.strategy.name},
    ) as active:
        tracking.log_params(
            {
                "config": OmegaConf.to_container(cfg, resolve=True),
                "ratio": {k: round(v, 6) for k, v in ratios.items()},
                "bits": done.bits,
            }
        )
        tracking.log_metrics({**done.row.metrics(), **done.cost.to_dict()})
        tracking.log_text(done.row.markdown() + "\n", "result_row.md")
        tracking.log_artifact(done.checkpoint)
        tracking.log_artifact(s.base.splits_file, artifact_path="data")
    print(f"MLflow run {active.info.run_id} in {cfg.mlflow.tracking_uri} (experiment {cfg.mlflow.experiment!r})")
