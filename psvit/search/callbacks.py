"""Hydra callback for multirun sweeps: create the MLflow and Optuna databases once, before workers start."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class PrepareStores(Callback):
    """``on_multirun_start``: parallel workers would otherwise race to create the same SQLite schemas."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from psvit import tracking
        from psvit.errors import exit_on_user_error
        from psvit.search.request import check_request
        from psvit.search.study import make_storage

        # A bad request ends the sweep here, in one line, before a store or a job folder is made (an exception
        # would only become a warning: Hydra's callbacks may not stop a run, but an exit does).
        exit_on_user_error(check_request)(config)
        tracking.ensure_store(config.mlflow.tracking_uri, config.mlflow.experiment)
        make_storage(config.search.storage)
