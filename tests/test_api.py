"""The Python API (psvit.api) with no Hydra config in the test: the same chosen trial as the command, and the
other entry points on real digits data."""

from __future__ import annotations

import re
import subprocess
import sys

import optuna
import pytest
import torch
from helpers import TINY

import psvit
from psvit import api
from psvit.data import build_splits
from psvit.errors import ConfigError, DataError

TRIALS = 5
BUDGET = 0.5
#: The command's tiny settings (tests/helpers.py TINY) that are not the model's: the API takes them as options.
OPTIONS = {"sensitivity.grid": [0.75, 0.5, 0.25], "finetune.epochs": 1}


@pytest.fixture(scope="module")
def command_run(tmp_path_factory, tiny_cache):
    """``python -m psvit.search`` with the tiny settings: its folder (its study), its output and its base model (the
    tests' tiny base, in the shared cache)."""
    s, _ = tiny_cache
    root = tmp_path_factory.mktemp("command")
    args = [
        sys.executable,
        "-m",
        "psvit.search",
        f"+budget={BUDGET}",
        *TINY,
        f"search.n_trials={TRIALS}",
        "search.export=false",
        f"cache_dir={s.cfg.cache_dir}",
        f"search.storage=sqlite:///{root / 'optuna.db'}",
        f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
        f"hydra.run.dir={root / 'out'}",
    ]
    done = subprocess.run(args, capture_output=True, text=True, cwd=root, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"base model: reused cached {s.base.path}" in done.stdout
    return root, done.stdout, s.base.path


def digits():
    """The digits splits the command uses by default (conf/data/digits.yaml: 16 px, 20% val, 20% test, seed 0)."""
    return build_splits("digits", img_size=16, val_fraction=0.2, test_fraction=0.2, seed=0)


def test_api_search_chooses_the_commands_trial(command_run, tmp_path):
    root, out, base_path = command_run
    chosen = re.search(r"chosen: trial (\d+) \(val acc ([\d.]+), saving ([\d.]+)\)", out)
    assert chosen, out
    base = psvit.load(base_path)
    splits = digits()

    result = api.search(
        base,
        splits.train,
        splits.val,
        splits.test,
        budget=BUDGET,
        n_trials=TRIALS,
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        tracking=f"sqlite:///{tmp_path / 'mlflow.db'}",
        cache_dir=tmp_path / "cache",
        out_dir=tmp_path / "out",
        options=OPTIONS,
    )

    assert result.best.number == int(chosen[1])
    assert f"{result.best.values[0]:.4f}" == chosen[2] and f"{result.best.values[1]:.4f}" == chosen[3]
    command = optuna.load_study(study_name=None, storage=f"sqlite:///{root / 'optuna.db'}")
    assert [t.values for t in result.study.trials] == [t.values for t in command.trials]
    assert [t.params for t in result.study.trials] == [t.params for t in command.trials]
    assert result.front and all(t.values[1] >= BUDGET for t in result.front)
    # the chosen model, fine-tuned and saved: psvit.load reads it, and it is as small as the trial said
    final = result.final
    assert final is not None and final.row.memory_saving == pytest.approx(result.best.values[1], abs=1e-9)
    reloaded = psvit.load(final.checkpoint)
    assert (
        sum(p.numel() for p in reloaded.parameters()) == final.cost.params < sum(p.numel() for p in base.parameters())
    )


def test_api_prune_sensitivity_finetune_and_cost_on_tensors(command_run, tmp_path):
    _, _, base_path = command_run
    base = psvit.load(base_path)
    splits = digits()
    train = (splits.train.images, torch.as_tensor(splits.train.labels))  # plain tensors
    val = torch.utils.data.DataLoader(splits.val, batch_size=50)  # a DataLoader
    table = api.sensitivity(base, train, val, grid=[0.5], cache_dir=tmp_path / "cache")
    assert {r["ratio"] for r in table.rows} == {0.5} and table.groups and 0 <= table.base_val_acc <= 1

    done = api.prune(
        base,
        train,
        val,
        splits.test,
        strategy="uniform",
        ratio=0.5,
        cache_dir=tmp_path / "cache",
        out_dir=tmp_path / "uniform",
        options={"finetune.epochs": 0},
    )
    assert set(done.ratios.values()) == {0.5} and done.checkpoint.is_file()
    assert 0 < done.row.memory_saving < 1 and done.row.finetuned_acc is None

    quantized = api.prune(
        base,
        train,
        val,
        strategy="uniform",
        ratio=1.0,
        bits=4,
        cache_dir=tmp_path / "cache",
        out_dir=tmp_path / "int4",
        options={"finetune.epochs": 0},
    )
    assert set(quantized.bits.values()) == {4} and quantized.row.memory_saving > 0.8

    history = api.finetune(done.model, train, val, teacher=base, epochs=1)
    assert [h["epoch"] for h in history] == [0, 1] and all("val_acc" in h for h in history)

    report = api.cost_report(done.model, val)
    assert report.params == sum(p.numel() for p in done.model.parameters()) and report.flops > 0


def test_api_rejects_bad_input_in_one_line(tmp_path):
    model = psvit.create_model(
        "spikformer",
        variant="cifar",
        img_size=16,
        patch_size=4,
        in_channels=1,
        num_classes=10,
        embed_dim=32,
        num_heads=2,
        depth=1,
    )
    images, labels = torch.rand(20, 1, 16, 16), torch.arange(20) % 10
    with pytest.raises(ConfigError, match="search.nope is not a key"):
        api.search(model, (images, labels), (images, labels), options={"search.nope": 1})
    with pytest.raises(ConfigError, match="search.n_trials must be an integer"):
        api.search(model, (images, labels), (images, labels), n_trials=0)
    with pytest.raises(DataError, match=r"images \[N, C, H, W\]"):
        api.sensitivity(model, (images[0], labels), (images, labels), cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="must be a psvit model"):
        api.prune(torch.nn.Linear(2, 2), (images, labels), (images, labels), ratio=0.5)
