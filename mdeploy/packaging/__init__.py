"""Model-server packages for `mdeploy package`: one module per target, each saying what it serves, how it writes a
package, how the package is loaded the way its server loads it, and how its server is started for a smoke test.

Targets are plugins like converters, passes and runners: entry points of the group `mdeploy.targets` (the built-in
ones in mdeploy's own pyproject.toml, where a third party's package declares its own the same way), each naming a
module. They are imported by name only when asked for, so `mdeploy --help` imports none of mlflow, tritonclient or
tensorflow.
"""

from __future__ import annotations

from types import ModuleType

GROUP = "mdeploy.targets"


def target(name: str) -> ModuleType:
    """The module for target `name` (its `FORMATS`, `check`, `write` and `server`; see mdeploy/packaging/base.py)."""
    from mdeploy import registry

    return registry.plugin(GROUP, name)
