"""The Hydra launcher behind every ``python -m psvit.<command>``: one-line errors, exit code 2, nothing left behind.

``@hydra_main("search")`` replaces ``@hydra.main(...)`` on an entry point. Besides running the command as Hydra
does (overrides, ``-m`` sweeps, launchers, ``--cfg``/``--help``), it

* checks the config's numeric keys (:func:`psvit.config.check_numbers`: type and range) before the command
  runs;
* turns Hydra's own errors (an override it cannot parse, a config group option that does not exist, a key that
  is not in the config, an argument it does not know) and OmegaConf's errors into one ``error: ...`` line and
  exit code 2, as :func:`exit_on_user_error` does for psvit's own errors;
* removes what Hydra wrote for a job that stopped on a user error (its ``.hydra/`` record, its empty log, and the
  output folders that are then empty), so a rejected command leaves nothing behind;
* turns SIGTERM into an interrupt, as Ctrl-C is (:mod:`psvit.cli.interrupt`), and reports either in one line,
  ``interrupted by ...``, with exit code 128 + the signal's number.

``HYDRA_FULL_ERROR=1`` keeps Hydra's full tracebacks for its own errors, as it does without this launcher.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException, ValidationError

from psvit.cli.interrupt import Interrupted, stop_on_sigterm
from psvit.config import NUMBERS, check_numbers, number_error
from psvit.data import remember_splits
from psvit.errors import ConfigError, PsvitError

Task = Callable[[DictConfig], None]
R = TypeVar("R")

#: Exit code for bad configuration or input (as argparse uses for usage errors).
USAGE_EXIT_CODE = 2

#: What Hydra writes in a job's output folder before the job runs (besides the job's log file).
_HYDRA_RECORD = ("config.yaml", "hydra.yaml", "overrides.yaml")
_NOT_IN_CONFIG = re.compile(r"Could not override '(?P<key>[^']+)'\.\s*To append to your config use \+(?P<fix>\S+)")
_ALREADY_IN_CONFIG = re.compile(r"An item is already at '(?P<key>[^']+)'\.\s*Either remove \+ prefix: '(?P<fix>[^']+)'")


def exit_on_user_error(fn: Callable[..., R]) -> Callable[..., R]:
    """Decorate a CLI entry point: a :class:`PsvitError` prints ``error: <message>`` and exits with code 2."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> R:
        try:
            return fn(*args, **kwargs)
        except PsvitError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(USAGE_EXIT_CODE)

    return wrapper


def hydra_main(config_name: str) -> Callable[[Task], Callable[[], None]]:
    """Decorate ``task(cfg)`` as the Hydra app of primary config ``config_name`` (in ``psvit.conf``)."""

    def decorate(task: Task) -> Callable[[], None]:
        @functools.wraps(task)
        @exit_on_user_error  # in the job itself: Hydra would add a line of its own to an error it catches
        def job(cfg: DictConfig) -> None:
            try:
                check_numbers(cfg)
                with remember_splits():  # the pre-flight checks and the work read the data once
                    task(cfg)
            except (PsvitError, OmegaConfBaseException, OSError) as exc:
                error = user_error(exc)
                if error is None:
                    raise
                with contextlib.suppress(OSError):
                    remove_job_output()
                raise error from None

        app = hydra.main(version_base="1.3", config_path="pkg://psvit.conf", config_name=config_name)(job)

        @functools.wraps(task)
        @exit_on_user_error
        def main() -> None:
            full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
            os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises its errors instead of printing them
            try:
                check_arguments()
                with stop_on_sigterm():
                    app()
            except KeyboardInterrupt as exc:
                stopped = exc if isinstance(exc, Interrupted) else Interrupted.of(exc, "")
                print(stopped, file=sys.stderr)
                sys.exit(stopped.exit_code)
            except (HydraException, OmegaConfBaseException, OSError) as exc:
                error = None if full_error else user_error(exc)
                if error is None:
                    raise
                raise error from None

        return main

    return decorate


def check_arguments() -> None:
    """Parse the command line as Hydra will, but report an unknown argument in one line, not a usage text."""
    from hydra._internal.utils import get_args_parser  # the parser hydra.main uses

    parser = get_args_parser()

    def error(message: str) -> None:
        raise ConfigError(f"{message} (options go before the overrides; see --help)")

    parser.error = error  # type: ignore[method-assign]
    parser.parse_args()


def user_error(exc: BaseException) -> PsvitError | None:
    """``exc`` as the one-line error the user sees; None for an error that is not about the user's input."""
    if isinstance(exc, PsvitError):
        return exc
    if isinstance(exc, (HydraException, OmegaConfBaseException)):
        return ConfigError(hydra_error_message(exc))
    if isinstance(exc, OSError) and exc.filename is not None:  # a path that cannot be written or read
        return PsvitError(f"cannot use {exc.filename}: {exc.strerror or exc}")
    return None


def hydra_error_message(exc: Exception) -> str:
    """One line for a Hydra or OmegaConf error, saying how to fix the command where that is clear."""
    text = str(exc)
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and exc.options is not None:
        group, _, name = exc.missing_cfg_file.rpartition("/")
        return f"{group}={name}: no such {group} config; choose one of: {', '.join(sorted(exc.options))}"
    if isinstance(exc, OverrideParseException):
        return f"cannot parse override {exc.override!r}: {exc.message.splitlines()[0]}"
    found = _NOT_IN_CONFIG.search(text)
    if found:
        return f"{found['key']} is not in the config; to add it, write +{found['fix']}"
    found = _ALREADY_IN_CONFIG.search(text)
    if found:
        return f"{found['key']} is already in the config; write {found['fix']} (without the +)"
    typed = exc if isinstance(exc, ValidationError) else exc.__cause__
    if isinstance(typed, ValidationError) and typed.full_key:  # a value the key's schema type refuses
        if typed.full_key in NUMBERS:
            return number_error(typed.full_key, typed.value)
        return f"{typed.full_key}: {_one_line(typed.msg)}"
    if isinstance(exc, OmegaConfBaseException):
        message, key = getattr(exc, "msg", None) or text, getattr(exc, "full_key", None)
        return _one_line(message) + (f" (config key {key})" if key and key not in message else "")
    cause = exc.__cause__
    return _one_line(text) + (f": {_one_line(str(cause))}" if isinstance(cause, OmegaConfBaseException) else "")


def _one_line(text: str) -> str:
    """The first paragraph of ``text``, its lines stripped and joined by '; ' (OmegaConf's ``full_key`` and
    ``object_type`` lines dropped)."""
    lines = [ln.strip() for ln in text.strip().split("\n\n")[0].splitlines()]
    return "; ".join(ln for ln in lines if ln and not ln.startswith(("full_key:", "object_type=", "reference_type=")))


def remove_job_output() -> None:
    """Remove the output folder Hydra made for this job, if it holds nothing but Hydra's record of the job
    (``.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml``) and an empty log; then its parents that are left
    empty, up to the directory the command was started in. In a sweep, ``multirun.yaml`` goes too once no other
    job's folder is left. A job that wrote anything else keeps its whole folder."""
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir).resolve()
    record = out / hc.output_subdir if hc.output_subdir is not None else None
    log = out / f"{hc.job.name}.log"
    expected = {p for p in (record, log) if p is not None}
    if not out.is_dir() or set(out.iterdir()) - expected:
        return
    if (log.is_file() and log.stat().st_size) or (
        record and record.is_dir() and {f.name for f in record.iterdir()} - set(_HYDRA_RECORD)
    ):
        return
    if record and record.is_dir():
        for name in _HYDRA_RECORD:
            (record / name).unlink(missing_ok=True)
        record.rmdir()
    log.unlink(missing_ok=True)
    start = Path(hc.runtime.cwd).resolve()
    folder = out
    if hc.mode.name == "MULTIRUN":
        sweep = Path(hc.sweep.dir).resolve()
        if start in folder.parents:
            _rmdir_if_empty(folder)
        if sweep.is_dir() and [p.name for p in sweep.iterdir()] == ["multirun.yaml"]:
            (sweep / "multirun.yaml").unlink()
        folder = sweep
    while start in folder.parents and _rmdir_if_empty(folder):
        folder = folder.parent


def _rmdir_if_empty(folder: Path) -> bool:
    try:
        folder.rmdir()
    except OSError:  # not empty, or already gone
        return not folder.exists()
    return True
