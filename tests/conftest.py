"""Shared fixtures: a tiny, quickly trained base model, and a runner for the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Two test workers share 2 cores: one thread each (and in every CLI subprocess), or they slow each other 10-50x.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
from helpers import TINY_BY_COMMAND


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One base-model/sensitivity cache for the whole test session (the base trains once)."""
    return tmp_path_factory.mktemp("psvit-cache")


@pytest.fixture
def run_cli(cache_dir: Path, tmp_path: Path):
    """``run_cli(module, *overrides, flags=(...))`` runs ``python -m psvit.<module>`` for real; Hydra ``flags``
    (``--config-name`` ...) go before the overrides, as Hydra's argument parser needs."""

    def run(
        module: str,
        *overrides: str,
        flags: tuple[str, ...] = (),
        cwd: Path | None = None,
        tiny: bool = True,
        check: bool = True,
        timeout: float = 600,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        env = {**os.environ, "PSVIT_CACHE_DIR": str(cache_dir), "HYDRA_FULL_ERROR": "0", **(env or {})}
        args = [sys.executable, "-m", f"psvit.{module}", *flags, *(TINY_BY_COMMAND[module] if tiny else []), *overrides]
        result = subprocess.run(args, cwd=cwd or tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    return run
