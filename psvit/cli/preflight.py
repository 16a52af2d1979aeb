"""Checks made before any work, without writing anything: can a command write where it will write, and can its
pruning plan (groups, grid, budget) work at all? (The config's numbers are checked by
:func:`psvit.config.check_numbers`, for every command.)

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

from omegaconf import DictConfig

from psvit.errors import ConfigError

#: Seconds an MLflow server has to answer the pre-flight request.
SERVER_TIMEOUT = 5.0
#: URI schemes MLflow tracks to: files, SQLAlchemy databases (``scheme+driver`` too) and servers.
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
FILE_SCHEMES = ("", "file")
SERVER_SCHEMES = ("http", "https", "databricks")


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
        raise ConfigError(
            f"MLflow tracking server {uri} is unreachable ({reason}); start it or set "
            "mlflow.tracking_uri (the default is sqlite:///mlflow.db)"
        ) from None


def check_outputs(cfg: DictConfig) -> None:
    """Where a command writes can be written: its cache folder, its MLflow store and its Optuna storage."""
    check_writable_dir(cfg.cache_dir, "cache_dir")
    if "mlflow" in cfg:
        check_tracking_uri(cfg.mlflow.tracking_uri)
    if "search" in cfg:
        check_database_url(cfg.search.storage, "search.storage")


def check_plan(cfg: DictConfig, budget: float | None = None, min_bits: int = 32) -> None:
    """What every pruning command checks before any work: where it writes (:func:`check_outputs`), then that
    ``sensitivity.grid`` holds keep ratios, a pretrained model's validation split does not
    come from its training images, ``prune.enabled`` names groups of the configured base model, and they can save
    ``budget`` (if given) at all, with weights at ``min_bits``.

    The data is read (its channels and classes size the model; inside a command it is then reused, see
    :func:`psvit.data.remember_splits`) but nothing is trained or written; the checks are
    the ones every command makes again on the trained base (``select_groups``, ``MemoryModel.check_feasible``).
    """
    from psvit.budget import MemoryModel, select_groups
    from psvit.config import config_sections
    from psvit.errors import DataError
    from psvit.train.base import base_splits, model_config
    from psvit.workflow import plan

    check_outputs(cfg)
    constraints, enabled = plan(cfg)
    grid = list(cfg.sensitivity.grid) if "sensitivity" in cfg else []
    bad = [r for r in grid if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1]
    if bad or ("sensitivity" in cfg and not grid):
        raise ConfigError(f"sensitivity.grid must be keep ratios in (0, 1], got {grid}")
    model_cfg, data_cfg = config_sections(cfg, "model", "data")
    splits = base_splits(model_cfg, data_cfg)
    if splits.leak:  # a pretrained model's validation from its training images (checked before any work)
        raise DataError(splits.leak)
    arch = model_config(model_cfg, splits)
    memory = MemoryModel(model_cfg.get("name", "spikformer"), arch, constraints)
    groups = select_groups(memory.groups, enabled)
    if budget is not None:
        memory.check_feasible(budget, groups, {g.name: min_bits for g in groups})
