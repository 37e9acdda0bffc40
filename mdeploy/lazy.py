"""Modules that load on first use: `from mdeploy.lazy import numpy as np` reads like an import and costs nothing.

Why: the CLI builds a verb's flags from its options type, so `mdeploy VERB --help` imports the verb's module and
everything that module imports at its top. numpy alone is most of a second's tenth; a user asking for help, or a
typo answered with exit 2, should not pay for it (benchmarks/startup.py holds the figure). A module that needs
numpy in its functions imports this stand-in instead, and numpy is imported the first time an attribute of it is
read (`np.asarray`), i.e. when a verb really runs. Only attribute reads are deferred, so module-level code must not
touch `np` (write `dict[str, "np.ndarray"]` in a type alias).
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class LazyModule(types.ModuleType):
    """Stands in for the module `name`; the first attribute read imports it, and each attribute read is then
    kept on the stand-in, so later reads are plain attribute lookups."""

    def __getattr__(self, attr: str) -> Any:
        value = getattr(importlib.import_module(self.__name__), attr)
        setattr(self, attr, value)
        return value

    def __repr__(self) -> str:
        return f"<lazy module {self.__name__!r}>"


numpy = LazyModule("numpy")
# standard modules that cost a few ms each, needed only when a verb runs
hashlib = LazyModule("hashlib")  # loads OpenSSL
logging = LazyModule("logging")
zipfile = LazyModule("zipfile")

__all__ = ["LazyModule", "hashlib", "logging", "numpy", "zipfile"]
