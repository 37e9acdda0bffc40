"""The one place optional frameworks are imported.

`require("torch", extra="torch")` returns the module or raises MissingDependencyError naming the pip
extra, so that `mdeploy --help` never pays for (or crashes on) a framework it does not need.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from mdeploy.errors import MissingDependencyError


def require(module: str, extra: str, purpose: str | None = None) -> ModuleType:
    """Import `module` or explain which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        _reraise_interrupt(exc)
        top = module.split(".")[0]
        what = f" to {purpose}" if purpose else ""
        raise MissingDependencyError(
            f"{top} is needed{what} but is not installed ({exc})",
            hint=f"pip install 'mdeploy[{extra}]'",
        ) from exc


def _reraise_interrupt(exc: ImportError) -> None:
    """A Ctrl-C (or SIGTERM, see interrupts.py) that lands while a C extension initialises comes back as that
    module's ImportError (pybind11: "initialization failed", the interrupt as its cause). It is an interrupt, not a
    missing package: raise it as one, so the verb cleans up and exits 130 instead of blaming the install."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            raise seen
        seen = seen.__cause__ or seen.__context__
