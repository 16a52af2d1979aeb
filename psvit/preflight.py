"""Checks made before any work, without writing anything: are the config's numbers numbers in range, and can a
command write where it will write?

Every numeric key has a type and a range in :data:`NUMBERS`, checked for every command (:func:`check_numbers`).
Folders (the cache) must be writable or creatable; an MLflow tracking URI must be well formed and, for a server,
answer within seconds (MLflow's own client retries a dead server for minutes); an Optuna storage URL must be a
well-formed database URL whose SQLite folder exists.
"""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from omegaconf import DictConfig, OmegaConf

from psvit.errors import ConfigError

#: Seconds an MLflow server has to answer the pre-flight request.
SERVER_TIMEOUT = 5.0
#: URI schemes MLflow tracks to: files, SQLAlchemy databases (``scheme+driver`` too) and servers.
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
FILE_SCHEMES = ("", "file")
SERVER_SCHEMES = ("http", "https", "databricks")

#: Numeric config keys: key -> (kind, range). Kind ``int`` takes integers, ``number`` integers or floats; a
#: trailing ``?`` allows null. Ranges are intervals, ``[`` / ``]`` closed and ``(`` / ``)`` open. A key that a
#: command's config does not have, or that interpolates another key (checked under its own name), is skipped.
NUMBERS: dict[str, tuple[str, str]] = {
    "seed": ("int", "[0, inf)"), "data.seed": ("int", "[0, inf)"), "search.seed": ("int", "[0, inf)"),
    "data.img_size": ("int", "[1, inf)"),
    "data.val_fraction": ("number", "[0, 1)"), "data.test_fraction": ("number", "[0, 1)"),
    "train.epochs": ("int", "[1, inf)"), "finetune.epochs": ("int", "[0, inf)"),
    "train.batch_size": ("int", "[1, inf)"), "finetune.batch_size": ("int", "[1, inf)"),
    "train.lr": ("number", "(0, inf)"), "finetune.lr": ("number", "(0, inf)"),
    "train.weight_decay": ("number", "[0, inf)"), "finetune.weight_decay": ("number", "[0, inf)"),
    "train.label_smoothing": ("number", "[0, 1)"), "finetune.label_smoothing": ("number", "[0, 1)"),
    "finetune.kd_weight": ("number", "[0, 1]"), "finetune.temperature": ("number", "(0, inf)"),
    "compute.eval_batch_size": ("int", "[1, inf)"), "compute.num_workers": ("int?", "[0, inf)"),
    "prune.constraints.min_channels": ("int", "[1, inf)"), "prune.constraints.round_to": ("int", "[1, inf)"),
    "prune.bn_recalibration_batches": ("int", "[0, inf)"),
    "sensitivity.batch_size": ("int", "[1, inf)"), "sensitivity.val_fraction": ("number", "(0, 1]"),
    "strategy.step": ("number", "(0, 1]"), "strategy.tolerance": ("number", "[0, 1]"),
    "search.n_trials": ("int", "[1, inf)"), "search.n_startup_trials": ("int", "[0, inf)"),
    "search.prior_tolerance": ("number", "[0, 1]"), "search.front_every": ("int", "[0, inf)"),
    "search.step": ("number?", "(0, 1]"), "search.recovery_epochs": ("int?", "[0, inf)"),
    "search.fidelity.subset": ("number", "(0, 1]"), "search.fidelity.promote": ("number", "(0, 1]"),
    "search.latency_repeats": ("int", "[1, inf)"), "search.select_tolerance": ("number", "[0, 1]"),
    "search.heartbeat_interval": ("number", "(0, inf)"), "search.grace_period": ("number", "(0, inf)"),
}


def check_numbers(cfg: DictConfig) -> None:
    """Every key of :data:`NUMBERS` in ``cfg`` has its kind and lies in its range; if not, one line names the key."""
    for key, (kind, interval) in NUMBERS.items():
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if not isinstance(node, DictConfig) or leaf not in node or OmegaConf.is_interpolation(node, leaf):
            continue
        value = node[leaf]
        if value is None and kind.endswith("?"):
            continue
        low, high = (float(bound) for bound in interval[1:-1].split(","))
        is_int = kind.startswith("int")
        if (isinstance(value, bool) or not isinstance(value, int if is_int else (int, float))
                or not (low <= value if interval[0] == "[" else low < value)
                or not (value <= high if interval[-1] == "]" else value < high)):
            nullable = " or null" if kind.endswith("?") else ""
            raise ConfigError(f"{key} must be {'an integer' if is_int else 'a number'} in {interval}{nullable}, "
                              f"got {value!r}")


def check_writable_dir(path: str | os.PathLike, what: str) -> None:
    """``path`` is a writable folder, or could be created as one (its nearest existing parent is writable)."""
    folder = Path(path).expanduser().absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{what} {folder}: {existing} is not a folder")
    if not _writable(existing):
        raise ConfigError(f"{what} {folder}: {existing} is not writable")


def _writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried for real: permission bits do not bind root, and
    read-only mounts and pseudo file systems have their own rules); the probe leaves nothing behind."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def check_database_url(url: str, what: str) -> None:
    """``url`` parses as a SQLAlchemy URL of a known dialect; a SQLite file's folder exists and is writable."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise ConfigError(f"{what} {url!r} is not a valid database URL ({exc})") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        database = Path(parsed.database).expanduser().absolute()
        if database.is_dir():
            raise ConfigError(f"{what} {url!r}: {database} is a folder, not a database file")
        if not database.parent.is_dir():
            raise ConfigError(f"{what} {url!r}: folder {database.parent} does not exist")
        if not (os.access(database, os.W_OK) if database.exists() else _writable(database.parent)):
            raise ConfigError(f"{what} {url!r}: {database} is not writable")


def check_tracking_uri(uri: str) -> None:
    """Fail fast on an MLflow tracking URI that cannot work: malformed, an unknown scheme, a SQLite file in a
    missing folder, or a server that does not answer within :data:`SERVER_TIMEOUT` seconds."""
    what = "mlflow.tracking_uri"
    scheme = urlsplit(uri).scheme
    if scheme.split("+")[0] in DATABASE_SCHEMES:
        check_database_url(uri, what)
    elif scheme in FILE_SCHEMES:
        check_writable_dir(urlsplit(uri).path if scheme else uri, what)
    elif scheme in ("http", "https"):
        check_server(uri)
    elif scheme not in SERVER_SCHEMES:
        known = ", ".join(s for s in (*DATABASE_SCHEMES, "file", *SERVER_SCHEMES))
        raise ConfigError(f"{what} {uri!r}: unknown scheme {scheme!r}; use one of: {known}")


def check_server(uri: str) -> None:
    """An HTTP(S) MLflow server answers (any HTTP status counts: the server is there) within the timeout."""
    if not urlsplit(uri).hostname:
        raise ConfigError(f"mlflow.tracking_uri {uri!r} has no host")
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=SERVER_TIMEOUT):
            pass
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(f"MLflow tracking server {uri} is unreachable ({reason}); start it or set "
                          "mlflow.tracking_uri (the default is sqlite:///mlflow.db)") from None


def check_outputs(cfg: DictConfig) -> None:
    """Where a command writes can be written: its cache folder, its MLflow store and its Optuna storage."""
    check_writable_dir(cfg.cache_dir, "cache_dir")
    if "mlflow" in cfg:
        check_tracking_uri(cfg.mlflow.tracking_uri)
    if "search" in cfg:
        check_database_url(cfg.search.storage, "search.storage")
