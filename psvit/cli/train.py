"""``python -m psvit.train``: train (or reuse) the base model; print its test accuracy and cost report."""

from __future__ import annotations

from omegaconf import DictConfig

from psvit.cli.launcher import hydra_main
from psvit.config import config_sections


@hydra_main("train")
def main(cfg: DictConfig) -> None:
    from psvit.cli.preflight import check_outputs
    from psvit.cost import cost_report
    from psvit.train.base import get_base_model, sample_images
    from psvit.train.compute import Compute

    check_outputs(cfg)
    compute = Compute.from_options(cfg.device, config_sections(cfg, "compute")[0])
    model_cfg, data_cfg, train_cfg = config_sections(cfg, "model", "data", "train")
    base = get_base_model(
        model_cfg,
        data_cfg,
        train_cfg,
        seed=cfg.seed,
        cache_dir=cfg.cache_dir,
        compute=compute,
        progress=cfg.progress,
    )
    print(compute.describe())
    print(base.describe())
    print(cost_report(base.model, sample_images(base.splits, compute), compute=compute).format())
