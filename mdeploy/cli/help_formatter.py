"""typer's rich help formatter, imported without the two modules mdeploy's help never uses.

typer.rich_utils, the module that draws every `--help`, imports at its top rich.markdown (markdown-it and pygments,
for help written in Markdown: mdeploy's is rich markup) and rich.traceback (rich.pretty and attrs, for typer's pretty
exceptions: mdeploy turns them off and prints its own `error:` line). The two are 40% of what `mdeploy --help`
costs (`python -X importtime -m mdeploy --help`; benchmarks/startup.py). `load()` imports the formatter with a
stand-in for each of them that holds the one name typer takes from it (`Markdown`, `Traceback`): a class that
imports the real one if it is ever called. The stand-ins leave sys.modules as soon as typer.rich_utils is imported,
so any later `import rich.markdown` gets the real module; should a typer release take other names from these
modules, the stand-in import fails and the formatter is imported the ordinary way.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

FORMATTER = "typer.rich_utils"
_DEFERRED = {"rich.markdown": "Markdown", "rich.traceback": "Traceback"}


def load() -> None:
    """Import typer's help formatter, once, without rich.markdown and rich.traceback (they load if ever used)."""
    if FORMATTER in sys.modules:
        return
    stand_ins = {name: _stand_in(name, attr) for name, attr in _DEFERRED.items() if name not in sys.modules}
    sys.modules.update(stand_ins)
    try:
        importlib.import_module(FORMATTER)
    except ImportError:
        pass  # imported the ordinary way below
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    importlib.import_module(FORMATTER)


def _stand_in(module_name: str, class_name: str) -> types.ModuleType:
    """A module holding `class_name`: a class (typer writes `Markdown | Text` in annotations) whose instances are
    those of the real class, imported on the first call."""

    def new(cls: type, *args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module_name), class_name)(*args, **kwargs)

    module = types.ModuleType(module_name, f"stand-in for {module_name} (mdeploy/cli/help_formatter.py)")
    setattr(module, class_name, type(class_name, (), {"__new__": new, "__module__": module_name}))
    return module
