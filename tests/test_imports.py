"""The layers import downward only (../shared/DESIGN.md, "Layers"), checked on every import of every module of
mdeploy: those at the top of a file and those inside functions, which run later but still make a circle (the
loader -> pruning record -> pruning -> loader circle there once was went through imports inside functions).

- no cycles: no module imports, at any time, one that imports it back (the import order would decide what works);
- the bottom layer (core, errors, deps, lazy, logs, outputs, machine, interrupts, progress) and frameworks/ (loading
  models) import nothing above them;
- no verb imports another verb (what two verbs share lives below them), and verbs import neither the CLI nor the API;
- only the CLI imports typer's layer (mdeploy.cli).

Imports under `if TYPE_CHECKING:` never run and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mdeploy"
BOTTOM = ("mdeploy.core", "mdeploy.errors", "mdeploy.deps", "mdeploy.lazy", "mdeploy.logs", "mdeploy.outputs",
          "mdeploy.machine", "mdeploy.interrupts", "mdeploy.progress")
SHARED_BY_VERBS = ("mdeploy.verbs", "mdeploy.verbs.options")  # the package and the options type every verb uses
# Imports against the layer order that are still there, each with why; the test fails when one is gone (drop it here)
# as it does on any other. Fixing these means a lower-level export / validation function the verbs share.
KNOWN = {
    "mdeploy.outputs -> mdeploy.frameworks.onnx_models": "an ONNX output's companion files are its external data, which "
    "only the ONNX loader can name (read inside outputs.companions)",
    "mdeploy.outputs -> mdeploy.frameworks.onnx_skeleton": "the same: the model is read without its weights for the names",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those under `if TYPE_CHECKING:`."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        for child in ast.iter_child_nodes(node):
            if _type_checking_only(child):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            todo.append(child)
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The mdeploy modules that module `name` imports (`from pkg import mod` is mod when mod is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _import_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
            full = f"{base}.{alias.name}"
            if full in known:
                found.add(full)
            elif base in known:
                found.add(base)
    return found - {name}


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(paths)
    return {name: _imports(name, path, known) for name, path in paths.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _in(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that goes against the layer order, as `importer -> imported (rule)`."""
    found = []
    for name, imports in sorted(graph.items()):
        for imported in sorted(imports):
            if _in(name, BOTTOM) and not _in(imported, BOTTOM):
                found.append(f"{name} -> {imported} (the bottom layer imports only itself)")
            elif _in(name, ("mdeploy.frameworks",)) and not _in(imported, BOTTOM + ("mdeploy.frameworks",)):
                found.append(f"{name} -> {imported} (frameworks/ imports only itself and the bottom layer)")
            if _in(name, ("mdeploy.verbs",)) and name not in SHARED_BY_VERBS:
                if _in(imported, ("mdeploy.verbs",)) and imported not in SHARED_BY_VERBS:
                    found.append(f"{name} -> {imported} (a verb imports no other verb)")
                if _in(imported, ("mdeploy.cli", "mdeploy.api")):
                    found.append(f"{name} -> {imported} (verbs import neither the CLI nor the API)")
            if _in(imported, ("mdeploy.cli",)) and not _in(name, ("mdeploy.cli", "mdeploy.__main__")):
                found.append(f"{name} -> {imported} (only the CLI imports the CLI)")
    return found


def test_no_import_cycles_between_mdeploy_modules():
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_layers_import_downward_only():
    violations = [v.split(" (")[0] for v in _violations(_graph())]
    assert [v for v in violations if v not in KNOWN] == [], "\n".join(violations)
    assert [k for k in KNOWN if k not in violations] == [], "fixed: drop these from KNOWN"


def test_the_check_finds_a_cycle_when_there_is_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_check_sees_imports_inside_functions_and_relative_ones(tmp_path):
    code = tmp_path / "m.py"
    code.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mdeploy import api\n"
                    "def f():\n    from mdeploy.frameworks import torch_models\n    from . import validate\n"
                    "    import mdeploy.core\n")
    known = {"mdeploy.api", "mdeploy.frameworks", "mdeploy.frameworks.torch_models", "mdeploy.verbs.validate", "mdeploy.core"}
    assert _imports("mdeploy.verbs.convert", code, known) == {"mdeploy.frameworks.torch_models", "mdeploy.verbs.validate",
                                                              "mdeploy.core"}


def test_the_check_names_each_kind_of_violation():
    graph = {"mdeploy.core": {"mdeploy.registry"}, "mdeploy.frameworks.x": {"mdeploy.validation.run", "mdeploy.core"},
             "mdeploy.verbs.prune": {"mdeploy.verbs.validate", "mdeploy.verbs.options", "mdeploy.api"},
             "mdeploy.pipeline.execute": {"mdeploy.cli.common"}}
    assert _violations(graph) == [
        "mdeploy.core -> mdeploy.registry (the bottom layer imports only itself)",
        "mdeploy.frameworks.x -> mdeploy.validation.run (frameworks/ imports only itself and the bottom layer)",
        "mdeploy.pipeline.execute -> mdeploy.cli.common (only the CLI imports the CLI)",
        "mdeploy.verbs.prune -> mdeploy.api (verbs import neither the CLI nor the API)",
        "mdeploy.verbs.prune -> mdeploy.verbs.validate (a verb imports no other verb)",
    ]
