"""PSViT methodology on the tiny digits base: sensitivity, allocation strategies, and the prune CLI."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
import torch
from helpers import TINY, compose

import psvit
from psvit.allocation import largest_first, sensitivity_greedy, uniform_for_budget, uniform_ratios
from psvit.budget import MemoryModel
from psvit.prune import PruneConstraints, prune
from psvit.workflow import sensitivity, setup


def real_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


@pytest.fixture(scope="session")  # tests/conftest.py spreads this file's tests over the workers
def tiny(cache_dir: Path):
    cfg = compose("prune", *TINY, f"cache_dir={cache_dir}")
    s = setup(cfg)
    table, _ = sensitivity(s)
    return s, table


def test_sensitivity_has_one_curve_per_group_with_exact_savings(tiny) -> None:
    s, table = tiny
    names = [g.name for g in s.groups]
    assert len(names) >= 8 and table.groups == names
    base_bytes = real_bytes(s.base.model)
    for g in s.groups:
        rows = [r for r in table.rows if r["group"] == g.name]
        assert [r["ratio"] for r in rows] == [0.75, 0.5, 0.25]
        kept = [r["kept"] for r in rows]
        assert kept == sorted(kept, reverse=True) and kept[-1] < g.width
        # monotone-ish: pruning deeper never helps by more than noise
        assert rows[-1]["acc_drop"] >= rows[0]["acc_drop"] - 0.03, g.name
        for r in rows:  # the saving is exactly the pruned model's real saving
            pruned = prune(s.base.model, {g.name: r["ratio"]})
            assert r["memory_saving"] == pytest.approx(1 - real_bytes(pruned) / base_bytes, abs=1e-12)
    assert max(r["acc_drop"] for r in table.rows) > 0.02  # some group is really sensitive: the analysis measures


def test_sensitivity_cache_is_hit_on_second_run(tiny) -> None:
    s, table = tiny
    again, cached = sensitivity(s)
    assert cached and again.rows == table.rows


@pytest.mark.parametrize("budget", [0.224, 0.4, 0.6])
def test_psvit_allocation_meets_budget_and_constraints(tiny, budget: float) -> None:
    s, table = tiny
    constraints = PruneConstraints(min_channels=4, round_to=2)
    memory = MemoryModel(s.base.model_name, s.base.config, constraints)
    ratios = sensitivity_greedy(memory, s.groups, table, budget)
    assert memory.saving(ratios) >= budget
    pruned = prune(s.base.model, ratios, constraints=constraints)
    assert memory.saving(ratios) == pytest.approx(1 - real_bytes(pruned) / real_bytes(s.base.model), abs=1e-12)
    cfg = pruned.config
    for key in ("qk_dims", "v_dims"):
        for width in cfg[key]:
            assert width >= 4 and (width // cfg["num_heads"]) % 2 == 0 and width % cfg["num_heads"] == 0
    for width in [*cfg["sps_dims"], *cfg["mlp_dims"], cfg["embed_dim"]]:
        assert width >= 4 and (width % 2 == 0 or width == 4)


@pytest.mark.parametrize("budget", [0.224, 0.4])
def test_uniform_and_largest_first_meet_budget(tiny, budget: float) -> None:
    s, table = tiny
    uniform = uniform_for_budget(s.memory, s.groups, budget)
    assert s.memory.saving(uniform) >= budget and len(set(uniform.values())) == 1
    assert s.memory.saving(uniform_ratios(s.groups, next(iter(uniform.values())) + 1 / 128)) < budget
    lf = largest_first(s.memory, s.groups, table, budget, tolerance=1.0)
    assert s.memory.saving(lf) >= budget


def test_prune_cli_uniform_ratio(run_cli, tmp_path: Path) -> None:
    out = run_cli("prune", "strategy=uniform", "+ratio=0.75").stdout
    assert "| original acc | pruned acc, no fine-tune | pruned acc, fine-tuned | memory saving |" in out
    ckpt = Path(out.split("pruned checkpoint: ")[1].split()[0])
    model = psvit.load(ckpt)
    assert model.config["embed_dim"] == 24  # 0.75 of 32
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        names = {r[0] for r in db.execute("select key from metrics")}
    assert {"test_original_acc", "test_pruned_acc", "test_finetuned_acc", "memory_saving"} <= names


def test_prune_cli_psvit_budget(run_cli) -> None:
    out = run_cli("prune", "strategy=psvit", "+budget=0.4").stdout
    row = out.split("|---|---|---|---|---|---|---|\n")[1].split("|")
    assert float(row[4].strip().rstrip("%")) >= 40.0


def test_infeasible_budget_is_one_line_error_before_evaluation(run_cli, tiny_cache, tmp_path: Path) -> None:
    # a cache of its own holding the warm base alone (the error must come before sensitivity or trials, not before
    # training); the shared cache gets other tests' tables at any time
    base = tiny_cache[0].base
    cache = tmp_path / "cache"
    cache.mkdir()
    for entry in (base.path, base.splits_file):
        shutil.copy2(entry, cache)
    before = sorted(cache.iterdir())
    result = run_cli("prune", "strategy=psvit", "+budget=0.9", "prune.enabled=[mlp]", f"cache_dir={cache}", check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: budget 0.9000 is infeasible"), result.stderr
    assert sorted(cache.iterdir()) == before  # no sensitivity table, and the base was not trained again


def test_sensitivity_cli_writes_table_plot_and_mlflow_run(run_cli, tmp_path: Path) -> None:
    out = run_cli("sensitivity").stdout
    files = [Path(line.strip()) for line in out.splitlines() if line.strip().endswith((".csv", ".json", ".png"))]
    assert {f.suffix for f in files} == {".csv", ".json", ".png"} and all(f.is_file() for f in files)
    assert files[-1].read_bytes()[:4] == b"\x89PNG"
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        (artifact_uri,) = db.execute("select artifact_uri from runs").fetchone()
    stored = {p.name for p in Path(artifact_uri.removeprefix("file://")).iterdir()}
    assert {"sensitivity.csv", "sensitivity.json", "sensitivity.png"} <= stored
