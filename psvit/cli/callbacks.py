"""Hydra callback for multirun sweeps: check every job's request, then create the MLflow and Optuna databases
once, before any worker starts."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class PrepareStores(Callback):
    """``on_multirun_start``: a bad value anywhere in the sweep is refused before the first job runs (not when
    its job's turn comes, hours later), and parallel workers do not race to create the same SQLite schemas."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from psvit import tracking
        from psvit.cli.launcher import USAGE_EXIT_CODE
        from psvit.cli.search import check_request
        from psvit.data import remember_splits
        from psvit.errors import PsvitError
        from psvit.search.study import make_storage

        # A bad request ends the sweep here, in one line, before a store or a job folder is made (an exception
        # would only become a warning: Hydra's callbacks may not stop a run, but an exit does).
        try:
            with remember_splits():  # jobs on the same data (a sweep of workers, of budgets) read it once
                for n, (overrides, job) in enumerate(sweep_jobs(config)):
                    try:
                        check_request(job)
                    except PsvitError as exc:
                        raise PsvitError(f"sweep job {n} ({' '.join(overrides)}): {exc}") from None
        except Exception as exc:
            from psvit.cli.launcher import user_error

            error = user_error(exc)
            if error is None:
                raise
            print(f"error: {error}", file=sys.stderr)
            sys.exit(USAGE_EXIT_CODE)
        tracking.ensure_store(config.mlflow.tracking_uri, config.mlflow.experiment)
        make_storage(config.search.storage)


def sweep_jobs(config: DictConfig) -> Iterator[tuple[list[str], DictConfig]]:
    """Each job of the sweep: its swept values (``+budget=0.3``) and its config, composed as Hydra's basic
    sweeper and the launchers will compose them (the sweeper's ``params`` first, then the command line's).

    While a job is checked, it is Hydra's current config with its job number set, as a launcher sets them, so
    ``${hydra:job.num}`` resolves (``device: cuda:${hydra:job.num}``: one GPU per worker)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import open_dict

    loader = GlobalHydra.instance().config_loader()
    params = [f"{key}={value}" for key, value in (config.hydra.sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(params + list(config.hydra.overrides.task))
    swept = {override.get_key_element() for override in parsed if override.is_sweep_override()}
    current = HydraConfig.instance().cfg
    try:
        for num, overrides in enumerate(o for batch in BasicSweeper.split_arguments(parsed, None) for o in batch):
            values = [o for o in overrides if o.split("=", 1)[0] in swept]
            job = loader.load_sweep_config(config, list(overrides))
            with open_dict(job):
                job.hydra.job.num = num
            HydraConfig.instance().set_config(job)
            yield values, job
    finally:
        HydraConfig.instance().cfg = current
