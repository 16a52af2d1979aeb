"""The base (unpruned) model every pruning run starts from: trained once, then cached by config hash.

The cache key hashes the model, data and training configs, the seed and the split policy, so the search, the sensitivity
analysis and the prune command never retrain an identical base. A base can also start from an official
Spikformer checkpoint (``model.checkpoint``), in which case it is only evaluated. Processes started together
on an empty cache train it once (:func:`psvit.cache.load_or_make`): the others wait for it and load it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from psvit import checkpoint
from psvit.cache import load_or_make
from psvit.data import DataSplits, build_splits
from psvit.errors import ConfigError, DataError
from psvit.models import create_model
from psvit.train.compute import Compute
from psvit.train.loop import evaluate, seed_everything, train_model

#: Keys of the model config group that are not architecture (they say where weights come from).
_SOURCE_KEYS = ("name", "checkpoint", "checkpoint_format", "trust_pickle", "weights")


@dataclass
class BaseModel:
    """A trained base model with its data splits and where it is cached."""

    model: nn.Module
    splits: DataSplits
    path: Path
    val_acc: float
    test_acc: float
    from_cache: bool
    train_seconds: float

    @functools.cached_property
    def sha256(self) -> str:
        """A content hash of the base checkpoint file: what identifies the weights a study's trials prune."""
        return file_hash(self.path)

    @property
    def splits_file(self) -> Path:
        """The validation and test members (:meth:`DataSplits.listing`), beside the cached checkpoint."""
        return self.path.with_name(f"{self.path.stem}.splits.tsv")

    @property
    def model_name(self) -> str:
        return self.model.model_name

    @property
    def config(self) -> dict[str, Any]:
        return self.model.config

    def describe(self) -> str:
        """Three lines: the data splits, where the base model comes from, and its accuracies."""
        how = (
            "reused cached"
            if self.from_cache
            else "loaded checkpoint weights, cached in"
            if self.train_seconds == 0
            else f"trained in {self.train_seconds:.1f} s,"
        )
        return (
            f"{self.splits.describe()}\nbase model: {how} {self.path}\n"
            f"test accuracy: {self.test_acc:.4f}  (validation {self.val_acc:.4f})"
        )


def model_config(model_cfg: dict[str, Any], splits: DataSplits) -> dict[str, Any]:
    """The architecture part of the ``model`` config group, with channels, classes and (when null) the image
    size filled in from the data. A model ``img_size`` that differs from the data's is a one-line error: the
    model would run, but its FLOPs, SOPs and energy would be computed for the wrong size."""
    cfg = {k: v for k, v in model_cfg.items() if k not in _SOURCE_KEYS}
    cfg["in_channels"] = cfg.get("in_channels") or splits.in_channels
    cfg["num_classes"] = cfg.get("num_classes") or splits.num_classes
    if "img_size" in cfg:
        cfg["img_size"] = cfg["img_size"] or splits.img_size
        if cfg["img_size"] != splits.img_size:
            raise ConfigError(
                f"model.img_size={cfg['img_size']} but the data gives {splits.img_size}-px images; "
                f"set data.img_size={cfg['img_size']} (or model.img_size=null to follow the data)"
            )
    return cfg


def config_hash(*parts: Any) -> str:
    """A short, stable hash of JSON-able config parts."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_hash(path: str | Path) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB chunks), as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def base_splits(model_cfg: dict[str, Any], data_cfg: dict[str, Any]) -> DataSplits:
    """The data splits of the base model of these configs: with ``model.checkpoint`` (weights that saw the
    training part) validation and test are halves of the dataset's held-out part (:mod:`psvit.data.splits`)."""
    return build_splits(**data_cfg, held_out=bool(model_cfg.get("checkpoint")))


def split_policy(model_cfg: dict[str, Any], splits: DataSplits) -> str:
    """The split policy :func:`base_splits` applies to this dataset (the same whichever policy ``splits`` has)."""
    return "held-out" if model_cfg.get("checkpoint") and splits.has_held_out_part else "from-train"


def base_cache_path(
    model_cfg: dict[str, Any],
    data_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    splits: DataSplits,
    *,
    seed: int,
    cache_dir: str | Path,
) -> Path:
    """Where the base model of these configs is cached: keyed by the architecture, the data, the split policy,
    the seed and either the training config or (with ``model.checkpoint``) the checkpoint file's content hash and
    weight choice."""
    source = model_cfg.get("checkpoint")
    origin = (
        [
            file_hash(checkpoint.existing(source)),
            model_cfg.get("weights", "auto"),
            model_cfg.get("checkpoint_format", "auto"),
        ]
        if source
        else train_cfg
    )
    key = config_hash(
        model_cfg.get("name", "spikformer"),
        model_config(model_cfg, splits),
        data_cfg,
        origin,
        seed,
        split_policy(model_cfg, splits),
    )
    return Path(cache_dir).expanduser() / f"base-{key}.pt"


def get_base_model(
    model_cfg: dict[str, Any],
    data_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    *,
    seed: int = 0,
    cache_dir: str | Path = ".psvit-cache",
    compute: Compute | None = None,
    progress: bool = True,
) -> BaseModel:
    """Load the cached base model for these configs, or train (or load official weights) and cache it.

    The model is returned on ``compute``'s device. With ``model.checkpoint`` the cache key holds the file's
    content hash (not its path), and which weights were taken (EMA or not) is printed; validation and test then
    come from the dataset's held-out part, and a dataset without one is refused (after the weights are read, so a
    bad checkpoint is reported as such) unless ``data.allow_val_from_train``. The validation and test members are
    written beside the cached model (:attr:`BaseModel.splits_file`).
    """
    compute = compute or Compute()
    splits = base_splits(model_cfg, data_cfg)
    arch = model_config(model_cfg, splits)
    source = model_cfg.get("checkpoint")
    weights = model_cfg.get("weights", "auto")
    path = base_cache_path(model_cfg, data_cfg, train_cfg, splits, seed=seed, cache_dir=cache_dir)
    key = path.stem.removeprefix("base-")

    def load(path: Path) -> BaseModel:
        meta = checkpoint.read(path)["meta"]
        model = checkpoint.load(path, device=compute.device)
        base = BaseModel(model, splits, path, meta["val_acc"], meta["test_acc"], True, meta["train_seconds"])
        if not base.splits_file.is_file():  # a cache entry from before the listings
            splits.write_listing(base.splits_file)
        return base

    def make() -> BaseModel:
        seed_everything(seed)
        model = create_model(model_cfg.get("name", "spikformer"), **arch)
        start = time.perf_counter()
        if source:
            taken = checkpoint.load_official_weights(
                model,
                source,
                weights=weights,
                trust_pickle=bool(model_cfg.get("trust_pickle", False)),
                checkpoint_format=model_cfg.get("checkpoint_format", "auto"),
            )
            print(f"base weights: {taken} of {source}")
            if splits.leak:
                raise DataError(splits.leak)
        else:
            train_model(
                model, splits.train, seed=seed, compute=compute, progress=progress, desc="train base", **train_cfg
            )
        train_seconds = 0.0 if source else time.perf_counter() - start
        val_acc = evaluate(model, splits.val, compute)
        test_acc = evaluate(model, splits.test, compute)
        meta = {
            "val_acc": val_acc,
            "test_acc": test_acc,
            "train_seconds": train_seconds,
            "key": key,
            "split": splits.policy,
        }
        base = BaseModel(model.eval(), splits, path, val_acc, test_acc, False, train_seconds)
        splits.write_listing(base.splits_file)
        checkpoint.save(model, path, meta=meta)
        return base

    return load_or_make(path, load, make, "base model")[0]


def sample_size(splits: DataSplits, compute: Compute) -> int:
    """How many images :func:`sample_images` takes: 64, or fewer when the evaluation batch is smaller (a 224-px
    model's 64 images would take minutes on a CPU)."""
    return min(64, compute.eval_batch_size, len(splits.val))


def sample_images(splits: DataSplits, compute: Compute) -> torch.Tensor:
    """The first validation images as one batch on ``compute``'s device, for firing rates and latency."""
    return torch.stack([splits.val[i][0] for i in range(sample_size(splits, compute))]).to(compute.device)
