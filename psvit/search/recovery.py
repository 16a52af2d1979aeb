"""Crash recovery for search workers: which process runs a trial, and failing then retrying dead workers' trials.

Every trial records the worker running it (the ``worker`` user attribute: host, PID namespace, PID and the
process's start time). Before each trial a worker fails, at once, the RUNNING trials whose process on its own
host is gone: a rerun right after ``kill -9`` does not wait out ``search.grace_period`` (while the dead trial
looked "still coming", the study would end one trial short). Trials of other hosts are failed by Optuna's
heartbeats once silent for ``search.grace_period``. Either way the failed trial's parameters are queued once
more, as a new WAITING trial whose ``failed_trial`` system attribute is the number of the trial it retries.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

#: The trial user attribute naming the worker process that runs (or ran) the trial.
WORKER_ATTR = "worker"
#: How many times the parameters of a trial whose worker died are tried again.
MAX_RETRY = 1


def _process(pid: int) -> tuple[str, str] | None:
    """``(state, start time)`` of a live process from ``/proc`` (``None`` if there is none with this PID)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 3, start time field 22
    return fields[0], fields[19]


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def this_worker() -> dict[str, Any]:
    """This process, as recorded on the trials it runs."""
    me = _process(os.getpid())
    return {"host": socket.gethostname(), "pidns": _pid_namespace(), "pid": os.getpid(), "start": me[1] if me else ""}


def is_dead(worker: dict[str, Any]) -> bool:
    """Whether ``worker`` was a process on this host (and PID namespace) that has ended. Other hosts' workers are
    never judged here (their heartbeats are)."""
    me = this_worker()
    if (worker.get("host"), worker.get("pidns")) != (me["host"], me["pidns"]):
        return False
    if not me["start"]:  # no /proc (macOS): only ask whether the PID exists
        try:
            os.kill(worker["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    found = _process(worker["pid"])
    return found is None or found[0] == "Z" or found[1] != worker.get("start")  # gone, a zombie, or PID reused


def retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue ``trial``'s parameters once more (:data:`MAX_RETRY` times per original trial at most), without the
    failed attempt's user attributes (its worker, its MLflow run): Optuna's stale-trial callback, and ours."""
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > MAX_RETRY:
        return
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            system_attrs={**trial.system_attrs, "failed_trial": history[0], "retry_history": history},
        )
    )


def fail_trial(study: optuna.Study, trial_id: int) -> bool:
    """Mark a RUNNING trial FAIL; False if it had already finished (e.g. another worker failed it first)."""
    try:
        return study._storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False


def fail_dead_workers_trials(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials whose worker on this host has died and queue their retries; returns their numbers."""
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR)
        if worker and is_dead(worker) and fail_trial(study, trial._trial_id):
            retry(study, study._storage.get_trial(trial._trial_id))
            failed.append(trial.number)
    return failed
