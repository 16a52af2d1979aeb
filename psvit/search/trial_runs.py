"""Each trial's MLflow child run: opened when the trial starts, ended only after Optuna has recorded the trial.

A child run starts RUNNING, tagged ``state=RUNNING`` and with its ``trial_number``. After Optuna commits the trial
(:meth:`TrialRuns.close`, an Optuna callback) it ends FINISHED with ``state=COMPLETE``, or FAILED with
``state=FAIL`` (and the error in the ``error`` tag). Ctrl-C ends it KILLED (:meth:`TrialRuns.abort`). The run of
a worker that died (``kill -9``, a lost node) stays RUNNING until a later worker's :meth:`TrialRuns.reconcile`
ends it by its trial's state. So a run says COMPLETE only for a trial the study holds as COMPLETE, and every
trial number has one run: a trial retried after its worker died is a new trial with its own number and run.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from psvit import tracking
from psvit.search.recovery import fail_trial

#: The trial user attribute holding the id of the trial's MLflow child run.
RUN_ATTR = "mlflow_run_id"
STATE_TAG = "state"


@dataclass
class TrialRuns:
    """The child runs of one search's parent run; ``current`` is (trial id, run id) of this worker's open trial."""

    parent_run_id: str
    study_name: str
    current: tuple[int, str] | None = None

    def open(self, trial: optuna.Trial, **tags: object) -> str:
        """Start ``trial``'s child run (RUNNING) and record its id on the trial."""
        run_id = tracking.start_child_run(
            self.parent_run_id,
            f"trial-{trial.number}",
            {
                "psvit.study": self.study_name,
                "trial_number": trial.number,
                STATE_TAG: "RUNNING",
                "pareto": "false",
                **tags,
            },
        )
        trial.set_user_attr(RUN_ATTR, run_id)
        self.current = (trial._trial_id, run_id)
        return run_id

    def close(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna callback, after the trial is committed: end its run as the study records it."""
        if RUN_ATTR in trial.user_attrs:
            _end(trial.user_attrs[RUN_ATTR], trial.state, killed=False)
        self.current = None

    def abort(self, study: optuna.Study) -> None:
        """On Ctrl-C: fail this worker's open trial (if Optuna has not) and end its run KILLED (FINISHED if the
        trial was committed COMPLETE just before)."""
        if self.current is None:
            return
        trial_id, run_id = self.current
        fail_trial(study, trial_id)
        _end(run_id, study._storage.get_trial(trial_id).state, killed=True)
        self.current = None

    def reconcile(self, study: optuna.Study) -> list[str]:
        """End the RUNNING child runs whose trial has finished (their worker died before ending them); their ids."""
        states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
        ended = []
        for run_id, tags in tracking.running_child_runs(self.parent_run_id).items():
            state = states.get(int(tags.get("trial_number", -1)))
            if state is not None and state.is_finished():
                _end(run_id, state, killed=True)
                ended.append(run_id)
        return ended


def _end(run_id: str, state: TrialState, killed: bool) -> None:
    tracking.set_tags({STATE_TAG: state.name}, run_id=run_id)
    if state == TrialState.COMPLETE:
        tracking.end_run(run_id, "FINISHED")
    else:
        tracking.end_run(run_id, "KILLED" if killed else "FAILED")
