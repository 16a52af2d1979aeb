"""The base (unpruned) model every pruning run starts from: trained once, then cached by config hash.

The cache key hashes the model, data and training configs and the seed, so the search, the sensitivity
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
from psvit.models import create_model
from psvit.train.loop import evaluate, seed_everything, train_model

#: Keys of the model config group that are not architecture (they say where weights come from).
_SOURCE_KEYS = ("name", "checkpoint", "trust_pickle")


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
        with self.path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()

    @property
    def model_name(self) -> str:
        return self.model.model_name

    @property
    def config(self) -> dict[str, Any]:
        return self.model.config

    def describe(self) -> str:
        """Three lines: the data splits, where the base model comes from, and its accuracies."""
        how = "reused cached" if self.from_cache else f"trained in {self.train_seconds:.1f} s,"
        return (f"{self.splits.describe()}\nbase model: {how} {self.path}\n"
                f"test accuracy: {self.test_acc:.4f}  (validation {self.val_acc:.4f})")


def model_config(model_cfg: dict[str, Any], splits: DataSplits) -> dict[str, Any]:
    """The architecture part of the ``model`` config group, with channels/classes filled in from the data."""
    cfg = {k: v for k, v in model_cfg.items() if k not in _SOURCE_KEYS}
    cfg["in_channels"] = cfg.get("in_channels") or splits.in_channels
    cfg["num_classes"] = cfg.get("num_classes") or splits.num_classes
    return cfg


def config_hash(*parts: Any) -> str:
    """A short, stable hash of JSON-able config parts."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def get_base_model(
    model_cfg: dict[str, Any],
    data_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    *,
    seed: int = 0,
    cache_dir: str | Path = ".psvit-cache",
    device: str = "auto",
    progress: bool = True,
) -> BaseModel:
    """Load the cached base model for these configs, or train (or load official weights) and cache it."""
    splits = build_splits(**data_cfg)
    arch = model_config(model_cfg, splits)
    source = model_cfg.get("checkpoint")
    key = config_hash(model_cfg.get("name", "spikformer"), arch, data_cfg, train_cfg if not source else str(source), seed)
    path = Path(cache_dir).expanduser() / f"base-{key}.pt"

    def load(path: Path) -> BaseModel:
        meta = checkpoint.read(path)["meta"]
        model = checkpoint.load(path, device="cpu")
        return BaseModel(model, splits, path, meta["val_acc"], meta["test_acc"], True, meta["train_seconds"])

    def make() -> BaseModel:
        seed_everything(seed)
        model = create_model(model_cfg.get("name", "spikformer"), **arch)
        start = time.perf_counter()
        if source:
            checkpoint.load_official_weights(model, source, trust_pickle=bool(model_cfg.get("trust_pickle", False)))
        else:
            train_model(model, splits.train, seed=seed, device=device, progress=progress, desc="train base",
                        **train_cfg)
        train_seconds = time.perf_counter() - start
        model = model.cpu().eval()
        val_acc = evaluate(model, splits.val, device=device)
        test_acc = evaluate(model, splits.test, device=device)
        model.cpu()
        meta = {"val_acc": val_acc, "test_acc": test_acc, "train_seconds": train_seconds, "key": key}
        checkpoint.save(model, path, meta=meta)
        return BaseModel(model, splits, path, val_acc, test_acc, False, train_seconds)

    return load_or_make(path, load, make, "base model")[0]


def sample_images(splits: DataSplits, n: int = 64) -> torch.Tensor:
    """The first ``n`` validation images as one batch (for firing rates and latency)."""
    n = min(n, len(splits.val))
    return torch.stack([splits.val[i][0] for i in range(n)])
