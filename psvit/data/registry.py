"""Dataset registry: ``register_dataset`` decorates a loader, ``load_dataset`` checks the options and runs it.

A loader is a function of keyword-only arguments: ``img_size``, ``root`` (a checked, existing, non-empty
directory) if the dataset reads files, and its own options; it returns a :class:`LoadedData`. A dataset that ships
a sample with psvit registers its folder as ``default_root``: the folder read when ``root`` is not given.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from psvit.data.datasets import LoadedData
from psvit.errors import ConfigError, DataError

Loader = Callable[..., LoadedData]
_DATASETS: dict[str, Loader] = {}
_DEFAULT_ROOTS: dict[str, Path] = {}
_COMMON = ("root", "img_size")
#: The modules of psvit's own datasets, which register them when imported (on the registry's first use).
_BUILT_IN = ("psvit.data.cifar", "psvit.data.digits", "psvit.data.image_folder", "psvit.data.mnist_idx")


def register_dataset(name: str, default_root: Path | None = None) -> Callable[[Loader], Loader]:
    """Register ``loader`` under ``name``; ``default_root``: the folder it reads when ``root`` is not given."""

    def decorate(loader: Loader) -> Loader:
        _DATASETS[name] = loader
        if default_root is not None:
            _DEFAULT_ROOTS[name] = default_root
        return loader

    return decorate


def _register_built_in() -> None:
    for module in _BUILT_IN:
        importlib.import_module(module)


def list_datasets() -> list[str]:
    _register_built_in()
    return sorted(_DATASETS)


def dataset_options(name: str) -> list[str]:
    """The dataset-specific option names of ``name`` (beyond root and img_size)."""
    return [p for p in inspect.signature(_loader(name)).parameters if p not in _COMMON]


def _loader(name: str) -> Loader:
    _register_built_in()
    if name not in _DATASETS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}")
    return _DATASETS[name]


def data_root(name: str, root: str | Path | None) -> Path:
    """``root`` (or, when None, the dataset's ``default_root``) as an existing, non-empty directory."""
    root = _DEFAULT_ROOTS.get(name) if root is None else root
    if root is None:
        raise DataError(f"dataset {name!r} reads files: set data.root to its folder")
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such directory")
    if not path.is_dir():
        raise DataError(f"{path}: not a directory")
    if next(path.iterdir(), None) is None:
        raise DataError(f"{path}: empty folder")
    return path


def load_dataset(name: str, root: str | Path | None, img_size: int, options: dict[str, Any]) -> LoadedData:
    """Run the loader of ``name``; ``root`` is ignored by datasets that read no files."""
    loader = _loader(name)
    unknown = sorted(set(options) - set(dataset_options(name)))
    if unknown:
        known = ", ".join(dataset_options(name)) or "none"
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for dataset {name!r}; its options: {known}")
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1:
        raise ConfigError(f"img_size must be a positive integer, got {img_size!r}")
    where = name
    if "root" in inspect.signature(loader).parameters:
        where = data_root(name, root)
        options = {**options, "root": where}
    data = loader(img_size=img_size, **options)
    if len(data.classes) < 2:
        found = f"only class {data.classes[0]!r}" if data.classes else "no class"
        raise DataError(f"{where}: {found}; a classifier needs at least 2 classes")
    return data
