"""Names a package re-exports, imported on first use (PEP 562): ``__getattr__ = lazy_exports(__name__, {...})``.

psvit's commands check their config before they import torch (~3 s): a package whose re-exports import torch
(``psvit``, ``psvit.data``) defers them this way, so that importing the package itself stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports each name of ``exports`` (name -> the module that
    defines it) from its module when it is first asked for."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__
