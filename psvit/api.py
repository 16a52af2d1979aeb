"""psvit from Python: search, prune, sensitivity, fine-tune and cost report on a model and data you hold.

No Hydra and no ``DictConfig`` in sight: a model from :func:`psvit.create_model` or :func:`psvit.load`, data as
``(images, labels)`` tensors, a ``Dataset`` or a ``DataLoader``, and keyword arguments::

    from psvit import api, create_model
    result = api.search(model, train_data, val_data, budget=0.6, n_trials=40,
                        storage="sqlite:///optuna.db", tracking="sqlite:///mlflow.db")
    result.front, result.best, result.study

The commands (``python -m psvit.search`` ...) and these functions run the same library code
(:mod:`psvit.workflow`, :class:`psvit.search.session.SearchSession`); the settings start from the same packaged
defaults (``conf/``, composed by :func:`psvit.config.compose`). Any other setting of those files goes in
``options`` as a dotted key, e.g. ``options={"finetune.epochs": 1, "search.fidelity.subset": 0.5}``; a key that
does not exist or a value out of range is a :class:`psvit.errors.ConfigError`.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from omegaconf import DictConfig, open_dict
from optuna.trial import FrozenTrial
from torch import nn
from torch.utils.data import DataLoader, Dataset

from psvit import checkpoint
from psvit import tracking as mlflow_runs
from psvit.config import check_budget_value, compose, config_sections
from psvit.cost import CostReport
from psvit.cost import cost_report as measure_cost
from psvit.data.datasets import ArrayDataset
from psvit.data.splits import DataSplits
from psvit.errors import ConfigError, DataError
from psvit.quant import quantization_aware
from psvit.search.session import SearchSession
from psvit.search.settings import check_settings
from psvit.sensitivity import SensitivityTable
from psvit.train.base import BaseModel
from psvit.train.compute import Compute
from psvit.train.loop import evaluate, train_model
from psvit.workflow import Finished, Setup, allocate, compute_of, finish, setup_for
from psvit.workflow import sensitivity as sensitivity_of

#: Labelled images: ``(images [N, C, H, W], labels [N])``, a ``Dataset`` of ``(image, label)`` or a ``DataLoader``
#: of ``(images, labels)`` batches. Datasets and loaders are read into memory once.
Data = tuple[torch.Tensor, torch.Tensor] | Dataset | DataLoader

__all__ = ["Data", "SearchResult", "cost_report", "finetune", "prune", "search", "sensitivity"]


@dataclass
class SearchResult:
    """A finished search: its Optuna ``study``, the Pareto ``front`` (memory saving against validation accuracy,
    feasible trials only), the chosen trial ``best``, and (with ``finalize``) the chosen model fine-tuned and
    tested, ``final``, whose ``checkpoint`` is a file :func:`psvit.load` reads."""

    study: optuna.Study
    front: list[FrozenTrial]
    best: FrozenTrial
    final: Finished | None
    parent_run_id: str


def search(
    model: nn.Module,
    train_data: Data,
    val_data: Data,
    test_data: Data | None = None,
    *,
    budget: float | None = None,
    n_trials: int = 24,
    bits: Sequence[int] = (32,),
    sampler: str = "guided",
    seed: int = 0,
    storage: str = "sqlite:///optuna.db",
    tracking: str = "sqlite:///mlflow.db",
    experiment: str = "psvit",
    out_dir: str | Path = "psvit-search",
    finalize: bool = True,
    export: bool = False,
    device: str = "auto",
    cache_dir: str | Path = ".psvit-cache",
    progress: bool = False,
    options: Mapping[str, Any] | None = None,
) -> SearchResult:
    """Search per-group keep ratios (and, with several ``bits``, weight bit-widths) of ``model`` for the most
    accurate model that saves at least ``budget`` of its weight memory (``None``: the whole front), as
    ``python -m psvit.search +budget=B`` does: sensitivity priors, ``n_trials`` Optuna trials in ``storage``, each
    a nested MLflow run at the tracking URI ``tracking``, then (``finalize``) the chosen model
    fine-tuned, tested on ``test_data`` (default: ``val_data``) and saved under ``out_dir``; with ``export`` also as
    ONNX and an MLflow Model. Same base model, data, seed and settings as a command: same trials."""
    cfg = compose(
        "search",
        {
            "search.n_trials": n_trials,
            "search.bits": list(bits),
            "search.sampler": sampler,
            "search.seed": seed,
            "search.storage": storage,
            "mlflow.tracking_uri": tracking,
            "mlflow.experiment": experiment,
            "search.finalize": finalize,
            "search.export": export,
            **(options or {}),
        },
    )
    check_settings(cfg)
    s = _setup(cfg, model, train_data, val_data, test_data, device=device, cache_dir=cache_dir, progress=progress)
    budget = _budget(budget)
    session = SearchSession.start(cfg, budget, s=s)
    status = "FAILED"
    try:
        session.run()
        front = session.front()
        best = session.chosen_trial()
        final = None
        if finalize:
            final, best = session.finalize(Path(out_dir))
            if export:
                from psvit.search.publish import publish

                publish(session, final, best, Path(out_dir))
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        mlflow_runs.end_run(session.parent_run_id, status)
    return SearchResult(session.study, front, best, final, session.parent_run_id)


def prune(
    model: nn.Module,
    train_data: Data,
    val_data: Data,
    test_data: Data | None = None,
    *,
    strategy: str = "psvit",
    budget: float | None = None,
    ratio: float | None = None,
    bits: int = 32,
    out_dir: str | Path = "psvit-prune",
    device: str = "auto",
    cache_dir: str | Path = ".psvit-cache",
    progress: bool = False,
    options: Mapping[str, Any] | None = None,
) -> Finished:
    """Prune ``model`` with one strategy, as ``python -m psvit.prune`` does: ``uniform`` at a keep ``ratio`` or
    for a ``budget``, ``psvit`` or ``largest_first`` for a ``budget`` (from the sensitivity table); weights at
    ``bits`` (32: float). The model is BN-recalibrated, fine-tuned (``finetune`` settings, distilled from
    ``model``, best validation epoch kept) and saved as ``out_dir/pruned.pt``; the result holds its table row."""
    cfg = compose("prune", {"prune.bits": bits, **(options or {})}, groups={"strategy": strategy})
    with open_dict(cfg):
        cfg.budget, cfg.ratio = budget, ratio
    s = _setup(cfg, model, train_data, val_data, test_data, device=device, cache_dir=cache_dir, progress=progress)
    ratios, _ = allocate(s)
    return finish(s, ratios, Path(out_dir), bits={g.name: bits for g in s.groups} if bits < 32 else None)


def sensitivity(
    model: nn.Module,
    train_data: Data,
    val_data: Data,
    *,
    grid: Sequence[float] | None = None,
    bits: Sequence[int] = (),
    device: str = "auto",
    cache_dir: str | Path = ".psvit-cache",
    progress: bool = False,
    options: Mapping[str, Any] | None = None,
) -> SensitivityTable:
    """The layer-wise sensitivity table of ``model``: validation accuracy drop of each enabled group pruned alone
    to each keep ratio of ``grid`` (default: ``conf/sensitivity/default.yaml``'s), and (``bits``) quantized alone
    to each bit-width. Cached in ``cache_dir`` by model, data and settings."""
    cfg = compose(
        "sensitivity",
        {
            **({"sensitivity.grid": list(grid)} if grid is not None else {}),
            "sensitivity.bits": list(bits),
            **(options or {}),
        },
    )
    s = _setup(cfg, model, train_data, val_data, None, device=device, cache_dir=cache_dir, progress=progress)
    return sensitivity_of(s)[0]


def finetune(
    model: nn.Module,
    train_data: Data,
    val_data: Data | None = None,
    *,
    teacher: nn.Module | None = None,
    epochs: int = 4,
    device: str = "auto",
    seed: int = 0,
    progress: bool = False,
    options: Mapping[str, Any] | None = None,
) -> list[dict[str, float]]:
    """Fine-tune ``model`` in place with the ``finetune`` settings (``options``: ``{"finetune.lr": 1e-4}``...):
    quantization-aware when its weights are quantized, distilled from ``teacher`` when given, and (with
    ``val_data``) ending on its best validation epoch, the starting model counting as epoch 0. Returns the
    per-epoch history."""
    cfg = compose("prune", {"finetune.epochs": epochs, "device": device, **(options or {})})
    settings = {k: v for k, v in config_sections(cfg, "finetune")[0].items() if k != "epochs"}
    if teacher is None:
        settings["kd_weight"] = 0.0
    compute = compute_of(cfg)
    model.to(compute.device)
    if teacher is not None:
        teacher.to(compute.device).eval()
    with quantization_aware(model):
        return train_model(
            model,
            dataset(train_data),
            epochs=epochs,
            seed=seed,
            compute=compute,
            progress=progress,
            desc="fine-tune",
            teacher=teacher,
            val_set=dataset(val_data) if val_data is not None else None,
            **settings,
        )


def cost_report(
    model: nn.Module,
    images: torch.Tensor | Data,
    *,
    device: str = "cpu",
    amp: str | None = None,
    latency_repeats: int = 10,
) -> CostReport:
    """Parameters, stored weight bytes, FLOPs, firing rates, energy and latency of ``model`` on ``images`` (a
    batch ``[N, C, H, W]``, or the first 64 images of ``images`` given as data)."""
    compute = Compute.from_options(device, {"amp": amp})
    if not isinstance(images, torch.Tensor):
        data = dataset(images)
        images = torch.stack([data[i][0] for i in range(min(64, len(data)))])
    return measure_cost(
        model.to(compute.device).eval(), images.to(compute.device), latency_repeats=latency_repeats, compute=compute
    )


def dataset(data: Data) -> ArrayDataset:
    """``data`` as an in-memory :class:`~psvit.data.datasets.ArrayDataset` of float32 images and int labels."""
    if isinstance(data, ArrayDataset):
        return data
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        images, labels = data
    elif isinstance(data, (DataLoader, Dataset)):
        pairs: Iterable[Any] = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=256)
        batches = [(x, torch.as_tensor(y)) for x, y in pairs]
        if not batches:
            raise DataError("the data is empty")
        images, labels = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
    else:
        raise ConfigError(
            f"data must be (images, labels) tensors, a Dataset or a DataLoader, got {type(data).__name__}"
        )
    labels = torch.as_tensor(labels)
    if images.ndim != 4 or labels.ndim != 1 or len(images) != len(labels) or not len(labels):
        raise DataError(
            f"data must be images [N, C, H, W] with labels [N], N > 0; got {tuple(images.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if images.is_floating_point() is False or labels.is_floating_point():
        raise DataError(f"images must be floating point and labels integers, got {images.dtype} and {labels.dtype}")
    return ArrayDataset(images.float().cpu(), labels.cpu().numpy())


def _budget(budget: float | None) -> float | None:
    return None if budget is None else check_budget_value(budget)


def _setup(
    cfg: DictConfig,
    model: nn.Module,
    train_data: Data,
    val_data: Data,
    test_data: Data | None,
    *,
    device: str,
    cache_dir: str | Path,
    progress: bool,
) -> Setup:
    """The workflow's :class:`~psvit.workflow.Setup` for a model and data in hand: the model is evaluated and
    saved in ``cache_dir`` under its content hash (what identifies a study's base and keys its sensitivity
    table), and ``cfg.data`` names the data by a content hash of its images and labels."""
    if not hasattr(model, "model_name"):
        raise ConfigError(
            "model must be a psvit model (psvit.create_model or psvit.load), whose channel groups "
            f"psvit knows; got {type(model).__name__}"
        )
    splits = data_splits(train_data, val_data, test_data)
    with open_dict(cfg):
        cfg.device, cfg.cache_dir, cfg.progress = device, str(cache_dir), progress
        cfg.data = {"name": "in-memory", "img_size": splits.img_size, "fingerprint": _fingerprint(splits)}
    compute = compute_of(cfg)
    model = model.to(compute.device).eval()
    val_acc, test_acc = evaluate(model, splits.val, compute), evaluate(model, splits.test, compute)
    folder = Path(cache_dir).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        staged = checkpoint.save(
            model, Path(tmp) / "base.pt", meta={"val_acc": val_acc, "test_acc": test_acc, "train_seconds": 0.0}
        )
        digest = hashlib.sha256(staged.read_bytes()).hexdigest()[:16]
        path = staged.replace(folder / f"base-model-{digest}.pt")
    base = BaseModel(model, splits, path, val_acc, test_acc, from_cache=False, train_seconds=0.0)
    splits.write_listing(base.splits_file)
    return setup_for(cfg, base, compute)


def data_splits(train_data: Data, val_data: Data, test_data: Data | None = None) -> DataSplits:
    """Train/validation/test splits of data in hand (``test_data`` defaults to ``val_data``)."""
    train, val = dataset(train_data), dataset(val_data)
    test = dataset(test_data) if test_data is not None else val
    shapes = {tuple(d.images.shape[1:]) for d in (train, val, test)}
    if len(shapes) != 1:
        raise DataError(f"train, validation and test images differ in shape: {sorted(shapes)}")
    channels, height, width = shapes.pop()
    if height != width:
        raise DataError(f"images must be square, got {height}x{width}")
    classes = int(max(d.labels.max() for d in (train, val, test))) + 1
    members = {"val": ("given", np.arange(len(val))), "test": ("given", np.arange(len(test)))}
    return DataSplits(train, val, test, classes, channels, height, "in-memory", members=members)


def _fingerprint(splits: DataSplits) -> str:
    digest = hashlib.sha256()
    for part in (splits.train, splits.val, splits.test):
        assert isinstance(part, ArrayDataset)  # data_splits made them
        digest.update(part.images.numpy().tobytes())
        digest.update(part.labels.tobytes())
    return digest.hexdigest()[:16]
