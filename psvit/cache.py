"""The on-disk cache of base models and sensitivity tables, safe for many processes at once.

Workers started together on an empty cache must not each train their own base model (one study would then mix
trials from different base weights). :func:`load_or_make` makes an entry exactly once: the first process takes
an exclusive lock on the entry (``fcntl.flock`` on a lock file beside it), makes it and writes it atomically;
the others wait for the lock, then load what it wrote. The lock is released by the kernel when its holder dies,
so a killed process never blocks the rest. POSIX only (Linux, macOS), as are the clusters the search runs on.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


@contextlib.contextmanager
def file_lock(path: Path, waiting: str | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block; log ``waiting`` if it is taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                log.info(waiting)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A unique temporary path beside ``path`` to write to; renamed onto ``path`` if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def load_or_make(path: Path, load: Callable[[Path], T], make: Callable[[], T], what: str) -> tuple[T, bool]:
    """``load(path)`` if the entry exists; else ``make()`` (which writes ``path``) in exactly one process while
    the others wait. Returns the value and whether it was loaded from the cache."""
    if path.is_file():
        return load(path), True
    lock = path.with_name(f".{path.name}.lock")
    new_folder = not path.parent.exists()
    with file_lock(lock, f"waiting for another process to make the {what} {path}"):
        try:
            if path.is_file():
                return load(path), True
            return make(), False
        finally:  # still held: a process waiting on it finds the entry made (or makes it after a failure)
            lock.unlink(missing_ok=True)
            if new_folder:  # a failed first entry leaves no empty cache folder behind
                with contextlib.suppress(OSError):
                    path.parent.rmdir()
