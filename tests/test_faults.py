"""Faults injected into real ``python -m psvit.search`` workers (subprocesses, SQLite Optuna + MLflow stores).

``kill -9`` mid-trial and an immediate rerun, Ctrl-C (SIGINT) or SIGTERM and a rerun, workers started together on an
empty cache, and a study reused with other settings. Plus the worker loop's handling of a failing trial, on a real
Optuna storage.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from helpers import open_study_storage
from optuna.trial import TrialState

from psvit.errors import PsvitError
from psvit.search.recovery import WORKER_ATTR, _process, is_dead, this_worker
from psvit.search.study import MAX_FAILURES_IN_A_ROW, make_storage, run_trials

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
#: An even tinier search than helpers.TINY: 8x8 images, a barely trained base and a one-point sensitivity grid
#: (the faults, not the accuracy, are under test).
FAST = [
    "model.embed_dim=32",
    "model.num_heads=2",
    "train.epochs=2",
    "progress=false",
    "sensitivity.grid=[0.5]",
    "data.img_size=8",
    "search.latency_repeats=1",
    "search.finalize=false",
    "+budget=0.3",
]
#: Trials that last a few seconds (one recovery epoch each), so a signal reliably lands mid-trial.
SLOW_TRIALS = ["search.recovery_epochs=1"]


@pytest.fixture(scope="session")  # tests/conftest.py spreads this file's tests over the workers
def warm_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache holding the FAST base model and its sensitivity table."""
    cache = tmp_path_factory.mktemp("faults-cache")
    subprocess.run(
        [sys.executable, "-m", "psvit.sensitivity", *FAST[:6]],
        cwd=tmp_path_factory.mktemp("warm"),
        env=environment(cache),
        capture_output=True,
        timeout=300,
    ).check_returncode()
    return cache


def command(*overrides: str, flags: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "psvit.search", *flags, *FAST, *overrides]


def environment(cache: Path) -> dict[str, str]:
    return {**os.environ, "PSVIT_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}


def search(cache: Path, cwd: Path, *overrides: str, flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(*overrides, flags=flags), cwd=cwd, env=environment(cache), capture_output=True, text=True, timeout=300
    )


def load(cwd: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd / 'optuna.db'}")


def child_runs(cwd: Path) -> tuple[list, list]:
    """(parent runs, child runs) in the experiment ``psvit`` of ``cwd``'s MLflow store."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "psvit"]
    runs = client.search_runs([experiment.experiment_id], max_results=10000)
    return (
        [r for r in runs if r.data.tags.get("psvit.role") == "search"],
        [r for r in runs if "mlflow.parentRunId" in r.data.tags],
    )


def start_and_signal(
    cache: Path, cwd: Path, name: str, sig: int, after_complete: int, *overrides: str
) -> tuple[subprocess.Popen, int, str]:
    """Start a worker; once ``after_complete`` trials are COMPLETE and another has its MLflow run open, send it
    ``sig`` and wait for it to end. Returns the worker, the number of the trial it was running and its stderr."""
    # SIGINT back to its default: a shell's background job (CI run with `&`) starts with it ignored, and Python
    # then never turns it into KeyboardInterrupt, as it does at a terminal.
    worker = subprocess.Popen(
        command(f"search.study_name={name}", *SLOW_TRIALS, *overrides),
        cwd=cwd,
        env=environment(cache),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    running, storage = None, None
    try:
        deadline = time.monotonic() + 180
        while running is None and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            storage = storage or open_study_storage(cwd / "optuna.db", name)
            if storage is None:  # the worker has not made its study yet
                continue
            trials = optuna.load_study(study_name=name, storage=storage).get_trials()
            complete = [t for t in trials if t.state == TrialState.COMPLETE]
            running = next(
                (
                    t.number
                    for t in trials
                    if t.state == TrialState.RUNNING
                    and "mlflow_run_id" in t.user_attrs
                    and len(complete) >= after_complete
                ),
                None,
            )
        if running is not None:
            worker.send_signal(sig)
    finally:
        if running is None:
            worker.kill()
        out, err = worker.communicate(timeout=120)
    assert running is not None, f"the worker never reached a trial:\n{out}\n{err}"
    return worker, running, err


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_settled(cwd: Path, name: str, n_trials: int, cache: Path) -> optuna.Study:
    """The study holds ``n_trials`` COMPLETE trials and nothing RUNNING; MLflow has one run per trial, none left
    RUNNING, FINISHED exactly for the COMPLETE trials; every trial records the cached base checkpoint's hash."""
    st = load(cwd, name)
    states = [t.state for t in st.trials]
    assert states.count(TrialState.COMPLETE) == n_trials and TrialState.RUNNING not in states
    parents, children = child_runs(cwd)
    assert [p.info.status for p in parents] == ["FINISHED"]
    numbers = [int(c.data.tags["trial_number"]) for c in children]
    assert sorted(numbers) == [t.number for t in st.trials if t.state != TrialState.WAITING]  # one run per trial
    by_number = dict(zip(numbers, children))
    for t in st.trials:
        run = by_number[t.number]
        assert run.data.tags["state"] == t.state.name
        assert run.info.status == ("FINISHED" if t.state == TrialState.COMPLETE else "KILLED")
    (base,) = cache.glob("base-*.pt")
    assert {t.user_attrs["base_sha256"] for t in st.trials} == {file_sha256(base)}
    return st


def test_kill_9_mid_trial_then_immediate_rerun_completes_the_study(warm_cache: Path, tmp_path: Path) -> None:
    """The rerun comes well within ``search.grace_period`` (60 s): the dead worker's trial is failed at once."""
    worker, killed, _ = start_and_signal(warm_cache, tmp_path, "k9", signal.SIGKILL, 2, "search.n_trials=3")
    assert worker.returncode == -signal.SIGKILL
    st = load(tmp_path, "k9")
    assert st.trials[killed].state == TrialState.RUNNING  # what the killed worker leaves behind
    _, children = child_runs(tmp_path)
    (run,) = [c for c in children if c.data.tags["trial_number"] == str(killed)]
    assert run.info.status == "RUNNING" and run.data.tags["state"] == "RUNNING"  # not COMPLETE before Optuna's commit

    rerun = search(warm_cache, tmp_path, "search.study_name=k9", *SLOW_TRIALS, "search.n_trials=3")
    assert rerun.returncode == 0, rerun.stderr
    assert "ran 1 trials here; 3 complete" in rerun.stdout
    st = assert_settled(tmp_path, "k9", 3, warm_cache)
    assert st.trials[killed].state == TrialState.FAIL
    (retried,) = [t for t in st.trials if t.system_attrs.get("failed_trial") == killed]
    assert retried.state == TrialState.COMPLETE and retried.params == st.trials[killed].params
    assert retried.user_attrs[WORKER_ATTR]["pid"] != st.trials[killed].user_attrs[WORKER_ATTR]["pid"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupt_fails_the_trial_kills_its_run_and_a_rerun_resumes(
    warm_cache: Path, tmp_path: Path, sig: int
) -> None:
    """Ctrl-C, or the SIGTERM a scheduler sends before it kills a job: one line, exit code 128 + signal."""
    worker, interrupted, stderr = start_and_signal(warm_cache, tmp_path, "int", sig, 1, "search.n_trials=2")
    assert worker.returncode == 128 + sig
    assert "Traceback" not in stderr
    name = "Ctrl-C (SIGINT)" if sig == signal.SIGINT else "SIGTERM"
    assert stderr.strip().splitlines()[-1] == (
        f"interrupted by {name}: study 'int' keeps its 1 complete trials (a trial in progress is marked FAIL); "
        "rerun the same command to resume"
    )
    st = load(tmp_path, "int")
    assert st.trials[interrupted].state == TrialState.FAIL
    assert TrialState.RUNNING not in [t.state for t in st.trials]
    parents, children = child_runs(tmp_path)
    assert [p.info.status for p in parents] == ["KILLED"]
    (run,) = [c for c in children if c.data.tags["trial_number"] == str(interrupted)]
    assert run.info.status == "KILLED" and run.data.tags["state"] == "FAIL"

    rerun = search(warm_cache, tmp_path, "search.study_name=int", *SLOW_TRIALS, "search.n_trials=2")
    assert rerun.returncode == 0, rerun.stderr
    assert "ran 1 trials here; 2 complete" in rerun.stdout
    assert_settled(tmp_path, "int", 2, warm_cache)


def test_workers_started_together_on_an_empty_cache_train_one_base(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    result = search(
        cache,
        tmp_path,
        "search.study_name=cold",
        "search.n_trials=3",
        flags=("--config-dir", str(SWEEPS), "--config-name", "workers_local"),
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert output.count("base model: trained in") == 1 and output.count("base model: reused cached") == 1
    assert len(list(cache.glob("base-*.pt"))) == 1 and len(list(cache.glob("sensitivity-*.json"))) == 1
    assert not list(cache.glob("*.tmp")) and not list(cache.glob(".*.tmp"))
    st = load(tmp_path, "cold")
    assert len({t.user_attrs[WORKER_ATTR]["pid"] for t in st.trials}) == 2  # both workers ran trials
    (base,) = cache.glob("base-*.pt")
    assert {t.user_attrs["base_sha256"] for t in st.trials} == {file_sha256(base)}


def test_reusing_a_study_with_another_budget_sampler_or_base_is_refused(warm_cache: Path, tmp_path: Path) -> None:
    assert search(warm_cache, tmp_path, "search.study_name=same", "search.n_trials=1").returncode == 0
    other = tmp_path / "other-cache"  # the same files, but the base model's weights differ slightly
    shutil.copytree(warm_cache, other)
    (base,) = warm_cache.glob("base-*.pt")
    payload = torch.load(other / base.name, weights_only=True)
    name = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][name] += 1e-3
    torch.save(payload, other / base.name)
    for cache, override, made in [
        (warm_cache, "budget=0.4", "budget 0.3, not 0.4"),
        (warm_cache, "search.sampler=random", "search.sampler guided, not random"),
        (other, "search.n_trials=2", f"base model {file_sha256(base)[:16]}, not {file_sha256(other / base.name)[:16]}"),
    ]:
        refused = search(cache, tmp_path, "search.study_name=same", "search.n_trials=2", override)
        assert refused.returncode == 2
        assert refused.stderr.strip().splitlines() == [
            f"error: study 'same' was made with {made}; resume with the same settings, or pass "
            "search.study_name=<new> to start fresh"
        ]
    assert len(load(tmp_path, "same").trials) == 1  # nothing ran, nothing was logged
    parents, children = child_runs(tmp_path)
    assert len(parents) == 1 and len(children) == 1


def test_a_failing_trial_fails_alone_and_ctrl_c_stops_the_worker(tmp_path: Path) -> None:
    storage = make_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(study_name="loop", storage=storage, directions=["maximize"])

    def flaky(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 1:
            raise RuntimeError("CUDA out of memory (injected)")
        return x

    closed: list[tuple[int, str]] = []
    ran = run_trials(study, flaky, 3, callbacks=[lambda _, t: closed.append((t.number, t.state.name))])
    assert ran == 4 and closed == [(0, "COMPLETE"), (1, "FAIL"), (2, "COMPLETE"), (3, "COMPLETE")]

    def broken(trial: optuna.Trial) -> float:
        raise RuntimeError("always")

    with pytest.raises(PsvitError, match=f"{MAX_FAILURES_IN_A_ROW} trials in a row failed"):
        run_trials(study, broken, 10)

    def interrupted(trial: optuna.Trial) -> float:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_trials(study, interrupted, 10)
    assert study.trials[-1].state == TrialState.FAIL
    assert len(study.trials) == 4 + MAX_FAILURES_IN_A_ROW + 1


def test_a_worker_takes_over_dead_workers_trials_before_it_stops(tmp_path: Path) -> None:
    """Two trials left RUNNING by dead workers: one on this host (failed at once), one elsewhere (failed once its
    heartbeat is ``grace_period`` old, while this worker waits). Both are run again; the study ends complete."""
    storage = make_storage(f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="takeover", storage=storage, directions=["maximize"])
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])
    dead_here = {**this_worker(), "pid": child.pid, "start": _process(child.pid)[1]}
    child.wait()
    here, elsewhere = study.ask(), study.ask()
    for trial, worker in ((here, dead_here), (elsewhere, {**this_worker(), "host": "elsewhere"})):
        trial.suggest_float("x", 0, 1)
        trial.set_user_attr(WORKER_ATTR, worker)
    storage.record_heartbeat(elsewhere._trial_id)

    ran = run_trials(study, lambda trial: trial.suggest_float("x", 0, 1), 2, poll_seconds=0.2)
    assert ran == 2
    states = {t.number: t.state for t in study.trials}
    assert states[here.number] == states[elsewhere.number] == TrialState.FAIL
    retries = {t.system_attrs["failed_trial"]: t for t in study.trials if t.state == TrialState.COMPLETE}
    assert sorted(retries) == [here.number, elsewhere.number]
    assert all(retries[t.number].params == t.params for t in (here, elsewhere))
    assert TrialState.RUNNING not in states.values()


def test_a_dead_process_on_this_host_is_recognised(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        worker = {**this_worker(), "pid": child.pid, "start": _process(child.pid)[1]}
        assert not is_dead(worker) and not is_dead(this_worker())
        assert is_dead({**worker, "start": "0"})  # the PID now belongs to another process
        assert not is_dead({**worker, "host": "elsewhere"})  # other hosts are left to heartbeats
    finally:
        child.kill()
        child.wait()
    assert is_dead(worker)
