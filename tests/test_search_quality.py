"""The search's quality machinery: exact budget projection, the guided sampler end to end, and the benchmark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY, compose

from psvit.allocation import project_to_saving, repair_to_budget, sensitivity_greedy
from psvit.budget import MemoryModel
from psvit.prune import PruneConstraints, prune
from psvit.workflow import sensitivity, setup

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")  # tests/conftest.py spreads this file's tests over the workers
def tiny(cache_dir: Path):
    s = setup(compose("search", *TINY, f"cache_dir={cache_dir}"))
    table, _ = sensitivity(s)
    return s, table


def real_saving(s, ratios: dict[str, float]) -> float:
    size = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return 1 - size(prune(s.base.model, ratios)) / size(s.base.model)


@pytest.mark.parametrize("target", [0.3, 0.6, 0.75])
def test_projection_lands_exactly_on_the_saving(tiny, target: float) -> None:
    s, _ = tiny
    names = [g.name for g in s.groups]
    rng = np.random.default_rng(1)
    for _ in range(20):
        raw = dict(zip(names, rng.random(len(names)).tolist()))
        projected = project_to_saving(s.memory, raw, target)
        assert projected is not None and set(projected) == set(names)
        saving = s.memory.saving(projected)
        assert saving >= target
        # minimal: handing back the smallest step of the projection misses the target
        back = {n: min(1.0, r + 1e-3 * (1 - raw[n] + 0.05)) for n, r in projected.items()}
        assert s.memory.saving(back) < target or s.memory.kept(back) == s.memory.kept(projected)
        assert repair_to_budget(s.memory, projected, target) == projected  # the objective takes it as it is
    assert real_saving(s, projected) == pytest.approx(s.memory.saving(projected), abs=1e-12)


def test_repair_keeps_feasible_samples_and_fixes_the_rest(tiny) -> None:
    s, _ = tiny
    names = [g.name for g in s.groups]
    light = {n: 0.9 for n in names}
    deep = {n: 0.2 for n in names}
    assert s.memory.saving(light) < 0.5 <= s.memory.saving(deep)
    assert repair_to_budget(s.memory, deep, 0.5) == deep
    fixed = repair_to_budget(s.memory, light, 0.5)
    assert 0.5 <= s.memory.saving(fixed) < 0.52
    # unpruned groups are moved too when the sample's own direction cannot reach the budget
    one = {n: (0.5 if n == names[0] else 1.0) for n in names}
    assert s.memory.saving(repair_to_budget(s.memory, one, 0.5)) >= 0.5


def test_memory_model_memo_matches_a_fresh_model(tiny) -> None:
    s, _ = tiny
    fresh = MemoryModel(s.base.model_name, s.base.config, PruneConstraints())
    rng = np.random.default_rng(2)
    for _ in range(10):
        ratios = {g.name: float(v) for g, v in zip(s.groups, rng.random(len(s.groups)))}
        assert s.memory.bytes(ratios) == MemoryModel(s.base.model_name, s.base.config, PruneConstraints()).bytes(ratios)
        assert fresh.bytes(ratios) == s.memory.bytes(ratios)


def study_trials(tmp_path: Path, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials


def test_guided_search_wastes_no_trial_and_starts_from_psvit_exactly(run_cli, tiny, tmp_path: Path) -> None:
    s, table = tiny
    out = run_cli(
        "search",
        "+budget=0.6",
        "search.study_name=g",
        "search.n_trials=8",
        "search.latency_repeats=1",
        "search.finalize=false",
    ).stdout
    assert "8 complete" in out
    trials = study_trials(tmp_path, "g")
    assert len(trials) == 8 and all(t.state.name == "COMPLETE" for t in trials)
    shapes = [tuple(s.memory.kept(t.user_attrs["ratios"]).values()) for t in trials]
    assert len(set(shapes)) == len(shapes)  # no pruned shape evaluated twice
    assert all(t.user_attrs["evaluated"] and t.values[1] >= 0.6 for t in trials)  # none wasted on the budget
    # trial 0 is psvit's own allocation at the budget (same rule and ladder as python -m psvit.prune strategy=psvit)
    psvit = sensitivity_greedy(s.memory, s.groups, table, 0.6)
    assert s.memory.kept(trials[0].user_attrs["ratios"]) == s.memory.kept(psvit)
    assert trials[0].values[1] == pytest.approx(s.memory.saving(psvit))
    # most trials sit on the budget itself (just above it), a few map the front further out
    on_budget = [t for t in trials[2:] if t.values[1] < 0.62]
    assert len(on_budget) >= 4 and any(t.values[1] > 0.62 for t in trials[2:])


def test_repair_makes_every_tpe_trial_feasible(run_cli, tmp_path: Path) -> None:
    run_cli(
        "search",
        "+budget=0.6",
        "search.study_name=t",
        "search.sampler=tpe",
        "search.priors=false",
        "search.n_trials=6",
        "search.latency_repeats=1",
        "search.finalize=false",
    )
    trials = study_trials(tmp_path, "t")
    assert all(t.values[1] >= 0.6 for t in trials)
    for t in trials:  # the parameters are what was sampled; the ratios what was pruned
        assert set(t.params) == set(t.user_attrs["ratios"])


def test_search_quality_benchmark_quick_path(cache_dir: Path, tmp_path: Path) -> None:
    """``bench/search_quality.py --quick``, cut to 4 trials and three strategies, writes its JSON, table and plot."""
    out = tmp_path / "bq"
    args = [
        sys.executable,
        str(ROOT / "bench" / "search_quality.py"),
        "--quick",
        "--trials",
        "2",
        "4",
        "--strategies",
        "psvit",
        "random",
        "guided",
        "--cache-dir",
        str(cache_dir),
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    (run_json,) = out.glob("run-*.json")
    blob = json.loads(run_json.read_text())
    assert blob["command"].startswith("python bench/search_quality.py --quick") and len(blob["git_commit"]) == 40
    by_strategy = {r["strategy"]: r for r in blob["results"]}
    assert set(by_strategy) == {"psvit", "random", "guided"}
    psvit = by_strategy["psvit"]["chosen"]["1"]
    assert psvit["memory_saving"] >= 0.6 and 0 < psvit["test_acc"] <= 1
    for name in ("random", "guided"):
        r = by_strategy[name]
        assert sorted(r["hypervolume"], key=int) == ["2", "4"] and len(r["hv_curve"]) == 4
        assert r["hv_curve"] == sorted(r["hv_curve"])  # more trials never shrink the dominated area
        best = max(acc for _, acc in r["points"])
        assert r["chosen"]["4"]["val_acc"] == pytest.approx(best)
        assert r["chosen"]["4"]["val_acc"] >= psvit["val_acc"] - 1e-9  # the search starts from psvit's allocation
    assert by_strategy["guided"]["wasted"]["4"] == 0
    table = (out / "search_quality.md").read_text()
    assert "| guided | 4 |" in table and "| psvit | 1 (one-shot) |" in table
    assert (out / "search_quality-digits-b0.6.png").stat().st_size > 10_000
