"""User-facing errors: the user's config, data or files are wrong (the command line prints them as one line)."""

from __future__ import annotations


class PsvitError(Exception):
    """An error caused by the user's config, data or files; reported as one line, without a traceback."""


class ConfigError(PsvitError, ValueError):
    """A config value is invalid (wrong type, out of range, inconsistent)."""


class DataError(PsvitError, ValueError):
    """A dataset path is missing, empty or corrupt."""


class CheckpointError(PsvitError, ValueError):
    """A checkpoint file is missing, unreadable or not a psvit checkpoint."""
