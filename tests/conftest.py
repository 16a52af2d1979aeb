"""Shared fixtures: a tiny, quickly trained base model, and a runner for the real CLI in a subprocess; and the
order in which the two xdist workers take the tests (``--dist loadgroup``, see :func:`pytest_collection_modifyitems`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Two test workers share 2 cores: one thread each (and in every CLI subprocess), or they slow each other 10-50x.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
from helpers import TINY_BY_COMMAND, compose


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One base-model/sensitivity cache for the whole run, shared by both xdist workers: each base model and table
    is made once (psvit.cache makes an entry in exactly one process, under a file lock; a process that needs an
    entry another one is making waits for it, then loads it)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the workers' temporary folders (popen-gw0, popen-gw1) are in one folder of this run
    path = root / "psvit-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tiny_cache(cache_dir: Path):
    """The tiny base model and its sensitivity table (the ones every ``run_cli`` search, prune and sensitivity
    command uses) in :func:`cache_dir`, made in this process if no worker has made them yet: a test that asks for
    it starts its commands on a warm cache. Returns the search command's :class:`psvit.workflow.Setup` and table."""
    from psvit.workflow import sensitivity, setup

    s = setup(compose("search", *TINY_BY_COMMAND["search"], f"cache_dir={cache_dir}"))
    table, _ = sensitivity(s)
    return s, table


@pytest.fixture
def run_cli(cache_dir: Path, tmp_path: Path):
    """``run_cli(module, *overrides, flags=(...))`` runs ``python -m psvit.<module>`` for real; Hydra ``flags``
    (``--config-name`` ...) go before the overrides, as Hydra's argument parser needs."""

    def run(
        module: str,
        *overrides: str,
        flags: tuple[str, ...] = (),
        cwd: Path | None = None,
        tiny: bool = True,
        check: bool = True,
        timeout: float = 600,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        env = {**os.environ, "PSVIT_CACHE_DIR": str(cache_dir), "HYDRA_FULL_ERROR": "0", **(env or {})}
        args = [sys.executable, "-m", f"psvit.{module}", *flags, *(TINY_BY_COMMAND[module] if tiny else []), *overrides]
        result = subprocess.run(args, cwd=cwd or tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    return run


# --- Scheduling --------------------------------------------------------------------------------------------------
#
# The suite is mostly real CLI runs in subprocesses, a few of them minutes long, on 2 workers (pyproject's addopts:
# -n 2 --dist loadfile). xdist hands out work units in collection order, and a worker takes the next unit when it has
# fewer than 3 tests left. Here (pytest_xdist_make_scheduler) a unit is a test file, as with loadfile, except in the
# files of SPLIT, where each test is its own unit; and the units are ordered longest first (by COST), so the long ones
# start at once on both workers and the short ones fill in at the end, keeping both workers busy to the last test.
# (A fixture that tests of a SPLIT file share is session-scoped, so a worker makes it once however their tests
# interleave with other units.)

#: Files whose tests are independent and long enough to be worth spreading over both workers.
SPLIT = {
    "test_search.py",
    "test_faults.py",
    "test_methodology.py",
    "test_scale.py",
    "test_search_quality.py",
    "test_bad_input.py",
    "test_cluster_stack.py",
    "test_gpu_sweeps.py",
    "test_held_out.py",
}

#: Seconds measured in a full run on 2 cores (2 workers), for the order only (a stale number costs balance, not
#: results): of a test ("file::test", matched as a prefix of the test's id, so it covers its parameters) or of a
#: whole file ("file", shared by its tests that no "file::test" key matches). Any other test costs 0.2 s.
COST = {
    "test_export.py": 151,
    "test_serving.py": 144,
    "test_api.py": 94,
    "test_mlflow_ui.py": 104,
    "test_compression_bench.py": 117,
    "test_family_cli.py": 118,
    "test_bench_gpu.py": 102,
    "test_search.py::test_search_end_to_end_and_resume": 91,
    "test_search.py::test_two_parallel_workers": 42,
    "test_search.py::test_killed_worker": 28,
    "test_search.py::test_search_without_budget": 24,
    "test_search.py::test_strategy_sampler": 20,
    "test_search.py": 6,
    "test_faults.py::test_kill_9": 51,
    "test_faults.py::test_workers_started_together": 42,
    "test_faults.py::test_an_interrupt": 41,
    "test_faults.py::test_reusing": 33,
    "test_cluster_stack.py::test_submitit": 65,
    "test_scale.py::test_multi_fidelity": 47,
    "test_scale.py::test_base_cache_is_keyed": 20,
    "test_scale.py": 3,
    "test_search_quality.py::test_search_quality_benchmark": 27,
    "test_search_quality.py::test_guided": 23,
    "test_search_quality.py::test_repair_makes": 21,
    "test_search_quality.py": 1,
    "test_methodology.py::test_prune_cli": 14,
    "test_methodology.py::test_sensitivity_cli": 8,
    "test_methodology.py::test_infeasible": 4,
    "test_methodology.py": 1,
    "test_gpu_sweeps.py::test_local_gpu_sweep": 19,
    "test_gpu_sweeps.py": 5,
    "test_held_out.py::test_pretrained": 11,
    "test_bad_input.py::test_bad_input_is_one_line": 5,
    "test_recovery.py": 32,
    "test_train_cli.py": 19,
    "test_spikingjelly_convert.py": 12,
    "test_install.py": 8,
    "test_spike_driven.py": 7,
    "test_prune.py": 8,
    "test_security.py": 4,
    "test_data.py": 8,
    "test_quant.py": 7,
    "test_cost.py": 6,
    "test_compiled.py": 5,
    "test_docs.py": 1,
    "test_tracking.py": 10,
}


def costs(items: list[pytest.Item]) -> dict[str, float]:
    """The :data:`COST` of each test, by its id."""
    by_test, by_file = {}, {}
    for item in items:
        test_id = f"{item.path.name}::{item.name}"
        keys = [k for k in COST if "::" in k and test_id.startswith(k)]
        if keys:
            by_test[item.nodeid] = COST[max(keys, key=len)]
        else:
            by_file.setdefault(item.path.name, []).append(item.nodeid)
    for file, nodeids in by_file.items():
        for nodeid in nodeids:
            by_test[nodeid] = COST[file] / len(nodeids) if file in COST else 0.2
    return by_test


def work_unit(nodeid: str) -> str:
    """A test file, or in a SPLIT file the test itself (from the test's id alone: the scheduler has no items)."""
    path = nodeid.split("::", 1)[0]
    return nodeid if Path(path).name in SPLIT else path


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # optional: pytest -p no:xdist runs without it
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """xdist's loadfile scheduling with the work units of :func:`work_unit`, in collection order (the order of
    :func:`pytest_collection_modifyitems`)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class WorkUnits(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    config.option.loadscopereorder = False  # xdist would otherwise put the units with most tests first
    return WorkUnits(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The units of :func:`work_unit`, longest first; a unit's tests keep their order."""
    cost = costs(items)
    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        units.setdefault(work_unit(item.nodeid), []).append(item)
    order = sorted(units.values(), key=lambda members: -sum(cost[i.nodeid] for i in members))  # stable
    items[:] = [item for members in order for item in members]
