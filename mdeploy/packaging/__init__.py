"""Model-server packages for `mdeploy package`: one module per target, each saying what it serves, how it writes a
package, how the package is loaded the way its server loads it, and how its server is started for a smoke test.

Targets are imported by name only when asked for, so `mdeploy --help` imports none of mlflow, tritonclient or
tensorflow.
"""

from __future__ import annotations

import importlib
from types import ModuleType

TARGETS = {
    "mlflow": "mdeploy.packaging.mlflow_target",
    "triton": "mdeploy.packaging.triton",
    "tfserving": "mdeploy.packaging.tfserving",
    "kserve": "mdeploy.packaging.kserve",
}


def target(name: str) -> ModuleType:
    """The module for target `name` (its `FORMATS`, `check`, `write` and `server`; see mdeploy/packaging/base.py)."""
    return importlib.import_module(TARGETS[name])
