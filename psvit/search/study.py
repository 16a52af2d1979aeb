"""The Optuna study behind a search: storage, resume, and the worker loop that never duplicates trials.

* Storage: any RDB URL (default ``sqlite:///optuna.db`` in the working directory; PostgreSQL for clusters), with
  heartbeats. A worker killed mid-trial leaves a RUNNING trial whose heartbeat stops; the next worker to start a
  trial marks it FAIL and :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback` re-queues its parameters once.
* Resume: ``search.n_trials`` is the number of COMPLETE trials the study should hold. Rerunning the same
  ``search.study_name`` runs only the missing ones; each worker checks the count before every trial.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import optuna
from optuna.samplers import BaseSampler
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from psvit.errors import ConfigError

RDB_PREFIXES = ("sqlite:", "postgresql", "mysql", "oracle", "mssql")
# Heartbeats and stale-trial retries are marked experimental in Optuna 5; they are what we rely on.
warnings.filterwarnings("ignore", category=ExperimentalWarning, module="optuna")
warnings.filterwarnings("ignore", category=ExperimentalWarning, module=__name__)


def make_storage(url: str, heartbeat_interval: int = 10, grace_period: int = 30) -> RDBStorage:
    """An RDB storage with heartbeats and one automatic retry of trials whose worker died."""
    if not url.startswith(RDB_PREFIXES):
        raise ConfigError(f"search.storage must be an RDB URL (e.g. sqlite:///optuna.db, postgresql://...), got {url!r}")
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else {}
    try:
        return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                          grace_period=grace_period,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))
    except Exception as exc:
        raise ConfigError(f"cannot open Optuna storage {url!r}: {str(exc).splitlines()[0]}") from None


def open_study(name: str, storage: RDBStorage, sampler: BaseSampler, n_objectives: int) -> optuna.Study:
    """Create the study, or load it to resume; all objectives are maximized."""
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                                directions=["maximize"] * n_objectives, load_if_exists=True)
    if len(study.directions) != n_objectives:
        raise ConfigError(f"study {name!r} exists with {len(study.directions)} objectives, not {n_objectives}; "
                          "use another search.study_name")
    return study


def count(study: optuna.Study, *states: TrialState) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def run_trials(study: optuna.Study, objective: Callable[[optuna.Trial], tuple[float, ...]], n_trials: int,
               after_each: Callable[[optuna.Study], None] | None = None) -> int:
    """Run trials until the study holds ``n_trials`` COMPLETE ones (others' RUNNING trials count as coming);
    returns how many this worker ran."""
    ran = 0
    while True:
        optuna.storages.fail_stale_trials(study)
        if count(study, TrialState.COMPLETE, TrialState.RUNNING) >= n_trials:
            return ran
        study.optimize(objective, n_trials=1, catch=())
        ran += 1
        if after_each is not None:
            after_each(study)
