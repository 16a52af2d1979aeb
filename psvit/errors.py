"""User-facing errors and the CLI wrapper that turns them into one-line messages."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

R = TypeVar("R")

#: Exit code for bad configuration or input (as argparse uses for usage errors).
USAGE_EXIT_CODE = 2


class PsvitError(Exception):
    """An error caused by the user's config, data or files; reported as one line, without a traceback."""


class ConfigError(PsvitError, ValueError):
    """A config value is invalid (wrong type, out of range, inconsistent)."""


class DataError(PsvitError, ValueError):
    """A dataset path is missing, empty or corrupt."""


class CheckpointError(PsvitError, ValueError):
    """A checkpoint file is missing, unreadable or not a psvit checkpoint."""


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
