"""Stopping a command from outside: Ctrl-C (SIGINT) and SIGTERM, as one interrupt reported in one line.

A scheduler (SLURM, Kubernetes, ``timeout``) stops a job with SIGTERM before it kills it. Python's default for
SIGTERM is to die at once, leaving the running trial RUNNING until another worker's heartbeat check fails it.
:func:`stop_on_sigterm` makes SIGTERM raise :class:`Interrupted`, a :class:`KeyboardInterrupt`, so it is cleaned
up exactly as Ctrl-C is: Optuna marks the trial FAIL, its MLflow run ends KILLED, caches keep no partial file.
The launcher then prints ``interrupted by <signal>: <what was done>`` and exits with ``128 + signal`` (130 for
Ctrl-C, 143 for SIGTERM), as a shell reports a process stopped by that signal.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


class Interrupted(KeyboardInterrupt):
    """The command was stopped by ``signum``; ``detail`` says what was left and how to go on."""

    def __init__(self, signum: int = signal.SIGINT, detail: str = "") -> None:
        super().__init__(signum, detail)
        self.signum = signum
        self.detail = detail

    @classmethod
    def of(cls, exc: KeyboardInterrupt, detail: str) -> Interrupted:
        """``exc`` (a plain Ctrl-C or an :class:`Interrupted`) with ``detail`` added."""
        return cls(exc.signum if isinstance(exc, Interrupted) else signal.SIGINT, detail)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        name = "Ctrl-C (SIGINT)" if self.signum == signal.SIGINT else signal.Signals(self.signum).name
        return f"interrupted by {name}" + (f": {self.detail}" if self.detail else "")


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Interrupted` in the main thread, unless another handler was
    installed first (submitit's, for example, which has its own plan for SIGTERM)."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
