"""``python -m psvit.export checkpoint=<pruned.pt> format=onnx``: write the model as ONNX (or ``format=pt2``, a
``torch.export`` program), check it against psvit on real images of the data it was made with, and time it.

Prints ``onnx: <path>`` (or ``pt2: <path>``), the exporter, the parity and the latencies.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from psvit.cli.launcher import hydra_main
from psvit.errors import ConfigError


def check_request(cfg: DictConfig) -> None:
    """One-line errors, before anything is read or written, for a missing checkpoint or a bad option."""
    from psvit.export import FORMATS

    if OmegaConf.is_missing(cfg, "checkpoint") or cfg.checkpoint is None:
        raise ConfigError("name the model: checkpoint=<path to a psvit checkpoint, e.g. pruned.pt>")
    if cfg.format not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {cfg.format!r}")
    for key in ("parity.images", "latency.repeats"):
        value = OmegaConf.select(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    batch = cfg.latency.batch
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
        raise ConfigError(f"latency.batch must be an integer >= 0 (0: no timing), got {batch!r}")
    for key in ("parity.max_abs_logit", "parity.min_match_graph", "parity.min_top1_graph", "parity.min_top1_model"):
        value = OmegaConf.select(cfg, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{key} must be a number >= 0, got {value!r}")


def output_path(cfg: DictConfig) -> Path:
    from psvit.export.files import SUFFIX

    return Path(cfg.out) if cfg.out else Path(cfg.checkpoint).with_suffix(SUFFIX[cfg.format])


@hydra_main("export")
def main(cfg: DictConfig) -> None:
    check_request(cfg)
    from psvit.export import Tolerance, export_model
    from psvit.export.source import open_source

    data = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") is not None else None
    source = open_source(cfg.checkpoint, data)
    images = source.images(cfg.parity.images)
    batches = (1, cfg.latency.batch) if cfg.latency.batch else ()
    tol = Tolerance(**{key: float(cfg.parity[key]) for key in asdict(Tolerance())})
    done = export_model(
        source.model,
        output_path(cfg),
        images,
        fmt=cfg.format,
        fold_bn=cfg.fold_bn,
        tol=tol,
        latency_batches=tuple(dict.fromkeys(batches)),
        repeats=cfg.latency.repeats,
        compiled=cfg.latency.compile,
        progress=cfg.progress,
    )
    print(done.format())
