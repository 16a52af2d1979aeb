"""The chosen model out of the search: an ONNX file checked against onnxruntime, and an MLflow Model (pyfunc)
logged to the study's parent run and, with ``search.register_model=<name>``, registered in the Model Registry.

A failed export or an off-tolerance parity is reported (printed, and logged as the parent run's tag
``psvit.export``) but does not fail the search: the chosen model's checkpoint and row are already logged.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial

from psvit import tracking
from psvit.errors import ConfigError
from psvit.export import ExportError, Tolerance, export_onnx
from psvit.export.mlflow_model import log_model, register
from psvit.workflow import Finished

if TYPE_CHECKING:
    from psvit.search.session import SearchSession

#: Test images the ONNX file is checked on, and the batch sizes it is timed at.
PARITY_IMAGES = 256
LATENCY_BATCHES = (1, 64)
EXPORT_TAG = "psvit.export"


def export_tolerance(cfg: DictConfig) -> Tolerance:
    """The parity tolerances of the search's export: ``search.parity.*`` (the keys of ``python -m psvit.export``'s
    ``parity``: ``max_abs_logit``, ``min_match_graph``, ``min_top1_graph``, ``min_top1_model``) over
    :class:`~psvit.export.Tolerance`'s defaults."""
    given = OmegaConf.select(cfg, "search.parity", default=None)
    given = OmegaConf.to_container(given, resolve=True) if given is not None else {}
    known = asdict(Tolerance())
    for key, value in given.items():
        if key not in known:
            raise ConfigError(f"search.parity.{key} is not a parity tolerance ({', '.join(known)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"search.parity.{key} must be a number >= 0, got {value!r}")
    return Tolerance(**{**known, **{k: float(v) for k, v in given.items() if k in known}})


def registry_tags(session: SearchSession, done: Finished, trial: FrozenTrial) -> dict[str, Any]:
    """What a registered version says about itself: budget, memory saving, val/test accuracy, study, trial."""
    row = done.row
    return {
        "budget": "none" if session.budget is None else session.budget,
        "saving": round(row.memory_saving, 6),
        "val_acc": round(trial.values[0], 6),
        "test_acc": round(row.finetuned_acc if row.finetuned_acc is not None else row.pruned_acc, 6),
        "study": session.study_name,
        "trial": trial.number,
    }


def publish(session: SearchSession, done: Finished, trial: FrozenTrial, out_dir: Path) -> list[str]:
    """Export, check and log the chosen model; returns the lines to print."""
    cfg, pid = session.cfg, session.parent_run_id
    test = session.setup.base.splits.test
    images = torch.stack([test[i][0] for i in range(min(PARITY_IMAGES, len(test)))])
    lines: list[str] = []
    onnx = None
    try:
        exported = export_onnx(
            done.model,
            out_dir / "pruned.onnx",
            images,
            latency_batches=LATENCY_BATCHES,
            repeats=cfg.search.latency_repeats,
            strict=False,
            progress=cfg.progress,
            tol=export_tolerance(cfg),
        )
    except (ExportError, ConfigError) as exc:
        lines.append(f"export failed (the search goes on): {exc}")
        tracking.set_tags({EXPORT_TAG: f"failed: {exc}"}, run_id=pid)
    else:
        onnx = exported.path
        lines.append(exported.format())
        latency = {
            f"latency_{runtime.replace(' ', '_')}_b{b}_ms": s * 1e3
            for runtime, row in (exported.latency.seconds if exported.latency else {}).items()
            for b, s in row.items()
        }
        tracking.log_metrics({**exported.parity.metrics(), **latency}, run_id=pid)
        status = "parity failed: " + "; ".join(exported.failures) if exported.failures else "ok"
        tracking.set_tags({EXPORT_TAG: status}, run_id=pid)
        tracking.log_artifact(onnx, run_id=pid, artifact_path="final_model")
    tags = registry_tags(session, done, trial)
    with tracking.run(cfg.mlflow.tracking_uri, cfg.mlflow.experiment, session.study_name, run_id=pid):
        logged = log_model(
            done.checkpoint, images.numpy(), onnx=onnx, params=tags, metadata={"data": session.setup.data_cfg}
        )
    lines.append(f"MLflow Model: {logged.model_uri} (pyfunc, logged to run {pid})")
    name = cfg.search.get("register_model")
    if name:
        logged = register(logged, name, tags)
        lines.append(
            f"registered: {logged.registry_uri}  (mlflow models serve -m {logged.registry_uri} --env-manager local)"
        )
    return lines
