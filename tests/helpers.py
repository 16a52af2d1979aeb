"""Test helpers shared by several test files (imported as a top-level module: tests/ has no __init__)."""

from __future__ import annotations

import contextlib
from pathlib import Path

#: Overrides that make every CLI run tiny: a 32-wide, 2-block Spikformer of 2 time steps trained for 8 epochs on
#: digits, a 3-point sensitivity grid and 1 fine-tuning epoch. Each command takes the keys its config has.
TINY_BASE = ["model.embed_dim=32", "model.num_heads=2", "model.T=2", "train.epochs=8", "progress=false"]
TINY_SENSITIVITY = [*TINY_BASE, "sensitivity.grid=[0.75,0.5,0.25]"]
TINY = [*TINY_SENSITIVITY, "finetune.epochs=1"]
#: Searches skip exporting the chosen model (about a minute each on 2 cores); tests/test_serving.py turns it on.
TINY_BY_COMMAND = {
    "train": TINY_BASE,
    "sensitivity": TINY_SENSITIVITY,
    "prune": TINY,
    "search": [*TINY, "search.export=false"],
}


def compose(config_name: str, *overrides: str):
    """A real Hydra composition of a psvit primary config (as the CLI does, without running it)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module="psvit.conf", version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=False)


def calibrated(model, images):
    """``model`` with random BN affines (so neurons fire) and BN running stats measured as the plain average over
    ``images`` and one more random batch, in eval mode; returns ``(model, images)``."""
    import torch
    from spikingjelly.activation_based import functional
    from torch import nn

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = None  # running stats = plain average over the calibration batches
                m.weight.uniform_(0.8, 1.6)
                m.bias.uniform_(0.3, 1.2)
        model.train()
        for batch in (images, torch.randn_like(images)):
            model(batch)
            functional.reset_net(model)
    return model.eval(), images


def open_study_storage(db: Path, study_name: str):
    """An Optuna storage on the SQLite file ``db`` once a worker has made the study ``study_name`` in it, else None.

    For tests that poll a running worker's study: open the storage once (each opening costs a tenth of a
    core-second, which the worker under test needs), and only after the worker has made its tables. Opening it
    earlier would create the tables from this process too, racing the worker's own creation."""
    import sqlite3

    import optuna

    if not db.is_file():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            found = con.execute("SELECT 1 FROM studies WHERE study_name = ?", (study_name,)).fetchone()
    except sqlite3.OperationalError:  # no studies table yet
        return None
    return optuna.storages.RDBStorage(f"sqlite:///{db}") if found else None
