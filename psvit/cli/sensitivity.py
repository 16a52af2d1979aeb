"""``python -m psvit.sensitivity``: the base model's layer-wise sensitivity table (CSV/JSON) and plot (PNG)."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from psvit.cli.launcher import hydra_main
from psvit.cli.preflight import check_plan


@hydra_main("sensitivity")
def main(cfg: DictConfig) -> None:
    from psvit import tracking
    from psvit.workflow import sensitivity, setup, write_sensitivity

    check_plan(cfg)
    s = setup(cfg)
    table, cached = sensitivity(s)
    files = write_sensitivity(table, Path(HydraConfig.get().runtime.output_dir))
    print(
        f"sensitivity of {len(table.groups)} groups x {len(cfg.sensitivity.grid)} keep ratios "
        f"({'from cache' if cached else 'computed'}), base val acc {table.base_val_acc:.4f}"
    )
    for f in files:
        print(f"  {f}")
    with tracking.run(
        cfg.mlflow.tracking_uri, cfg.mlflow.experiment, "sensitivity", tags={"psvit.command": "sensitivity"}
    ) as active:
        tracking.log_params({"config": OmegaConf.to_container(cfg, resolve=True)})
        tracking.log_metrics({"base_val_acc": table.base_val_acc, "from_cache": float(cached)})
        for f in files:
            tracking.log_artifact(f)
        tracking.log_artifact(s.base.splits_file, artifact_path="data")
    print(f"MLflow run {active.info.run_id} in {cfg.mlflow.tracking_uri}")
