"""The Optuna study behind a search: storage, identity, resume, and the worker loop that survives faults.

* Storage: any RDB URL (default ``sqlite:///optuna.db`` in the working directory; PostgreSQL for clusters), with
  heartbeats. A worker killed mid-trial leaves a RUNNING trial: the next worker on the same host fails it at
  once (its process is gone), one on another host once its heartbeat is ``search.grace_period`` old; either way
  its parameters are queued once more (:mod:`psvit.search.recovery`).
* Identity: a study records what its trials mean (budget, base checkpoint hash, search space, trial settings)
  when it is made; reusing its name with other settings is refused before anything is written.
* Resume: ``search.n_trials`` is the number of COMPLETE trials the study should hold. Rerunning the same
  ``search.study_name`` runs only the missing ones. A worker starts a trial only while COMPLETE + RUNNING trials
  fall short; once they do not, it waits for the RUNNING ones and takes over any that fail, so the study ends
  with ``n_trials`` COMPLETE trials even when a worker dies.
* Errors: an exception in a trial (a CUDA out-of-memory error, say) fails that trial, not the worker, up to
  :data:`MAX_FAILURES_IN_A_ROW`; Ctrl-C fails the trial and stops the worker.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.samplers import BaseSampler
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from psvit.errors import ConfigError, PsvitError
from psvit.search.recovery import fail_dead_workers_trials, retry

RDB_PREFIXES = ("sqlite:", "postgresql", "mysql", "oracle", "mssql")
#: The study user attribute recording what the study's trials mean (see :func:`check_identity`).
IDENTITY_ATTR = "psvit.identity"
#: A worker stops after this many of its trials failed in a row (a bug or a broken device, not bad luck).
MAX_FAILURES_IN_A_ROW = 3
# Heartbeats and stale-trial retries are marked experimental in Optuna 5; they are what we rely on.
warnings.filterwarnings("ignore", category=ExperimentalWarning, module="optuna")
warnings.filterwarnings("ignore", category=ExperimentalWarning, module=__name__)


class _QuietInterruptedTrials(logging.Filter):
    """Optuna logs an interrupted trial as failed, in two warnings (the first with a traceback); the interrupt is
    reported in one line instead (:mod:`psvit.cli.interrupt`), so both are dropped."""

    _FAILED = re.compile(r"Trial (\d+) failed")

    def __init__(self) -> None:
        super().__init__()
        self.interrupted: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        found = self._FAILED.match(record.getMessage())
        if found is None:
            return True
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            self.interrupted.add(found[1])
        return found[1] not in self.interrupted


logging.getLogger(optuna.study._optimize.__name__).addFilter(_QuietInterruptedTrials())


def make_storage(url: str, heartbeat_interval: int = 10, grace_period: int = 30) -> RDBStorage:
    """An RDB storage with heartbeats and one retry of each trial whose worker fell silent."""
    if not url.startswith(RDB_PREFIXES):
        raise ConfigError(
            f"search.storage must be an RDB URL (e.g. sqlite:///optuna.db, postgresql://...), got {url!r}"
        )
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else {}
    try:
        return RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=retry,
        )
    except Exception as exc:
        raise ConfigError(f"cannot open Optuna storage {url!r}: {str(exc).splitlines()[0]}") from None


def open_study(name: str, storage: RDBStorage, sampler: BaseSampler, n_objectives: int) -> optuna.Study:
    """Create the study, or load it to resume; all objectives are maximized."""
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, directions=["maximize"] * n_objectives, load_if_exists=True
    )
    if len(study.directions) != n_objectives:
        raise ConfigError(
            f"study {name!r} exists with {len(study.directions)} objectives, not {n_objectives}; "
            "use another search.study_name"
        )
    return study


def check_identity(study: optuna.Study, name: str, identity: Mapping[str, Any]) -> None:
    """Record ``identity`` on a new study; on a reused one, refuse (one line) if any item differs.

    ``identity`` maps readable names (``budget``, ``base model``, ``search.sampler``, ``range of <group>`` ...)
    to JSON values; the first item that differs is named in the message.
    """
    made = study.user_attrs.get(IDENTITY_ATTR)
    if made is None:
        study.set_user_attr(IDENTITY_ATTR, dict(identity))
        return
    for key, value in identity.items():
        if made.get(key) != value:
            raise PsvitError(
                f"study {name!r} was made with {key} {_show(made.get(key))}, not {_show(value)}; "
                f"resume with the same settings, or pass search.study_name=<new> to start fresh"
            )


def _show(value: Any) -> str:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def count(study: optuna.Study, *states: TrialState) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def recover(study: optuna.Study) -> None:
    """Fail (and queue once more) the RUNNING trials of dead workers: this host's at once, others' when stale."""
    fail_dead_workers_trials(study)
    with warnings.catch_warnings():  # experimental in Optuna 5 (it is what RDB heartbeats run on)
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def run_trials(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], tuple[float, ...]],
    n_trials: int,
    *,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
    before_each: Callable[[optuna.Study], None] | None = None,
    after_each: Callable[[optuna.Study], None] | None = None,
    poll_seconds: float = 1.0,
) -> int:
    """Run trials until the study holds ``n_trials`` COMPLETE ones; returns how many this worker ran.

    ``callbacks`` run after Optuna commits each trial (also a failed one); ``before_each`` runs after recovery,
    before every trial and every wait; ``after_each`` after every trial of this worker.
    """
    ran = failures = 0
    last: list[FrozenTrial] = []
    while True:
        recover(study)
        if before_each is not None:
            before_each(study)
        complete = count(study, TrialState.COMPLETE)
        if complete >= n_trials:
            return ran
        if complete + count(study, TrialState.RUNNING) >= n_trials:  # the rest is running elsewhere: wait for it
            time.sleep(poll_seconds)
            continue
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[*callbacks, lambda _, t: last.append(t)])
        ran += 1
        failures = failures + 1 if last[-1].state == TrialState.FAIL else 0
        if failures >= MAX_FAILURES_IN_A_ROW:
            raise PsvitError(
                f"{failures} trials in a row failed on this worker (the last: trial {last[-1].number}, "
                "see the warning above); fix the cause, then rerun to resume"
            )
        if after_each is not None:
            after_each(study)
