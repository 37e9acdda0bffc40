"""The one plugin registry, fed by entry points.

Built-in converters, passes, runners and package targets are declared in mdeploy's own pyproject.toml through the same
entry-point groups a third-party package would use. Plugins are loaded on first use; one that fails to
import is recorded as broken (shown by `mdeploy plugins`) and never takes the CLI down.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from mdeploy.core import Format
from mdeploy.errors import InputError

GROUPS = ("mdeploy.converters", "mdeploy.passes", "mdeploy.runners", "mdeploy.targets")


@dataclass(frozen=True)
class Plugin:
    group: str
    name: str
    target: str
    obj: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def unavailable(self) -> str | None:
        """Why a plugin that loaded cannot work on this machine (its `available()` reason: a missing package), or None."""
        check = getattr(self.obj, "available", None)
        return check() if self.ok and callable(check) else None


@cache
def plugins(group: str) -> tuple[Plugin, ...]:
    """Every plugin of a group, loaded; broken ones carry their import error."""
    from importlib.metadata import entry_points  # 30 ms: only once a verb looks a plugin up, never for --help

    found = []
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            found.append(Plugin(group, ep.name, ep.value, ep.load()))
        except Exception as exc:  # a broken plugin must not take the CLI down
            found.append(Plugin(group, ep.name, ep.value, error=f"{type(exc).__name__}: {exc}"))
    return tuple(found)


@cache
def names(group: str) -> tuple[str, ...]:
    """The names a group's entry points declare, sorted, without importing any plugin."""
    from importlib.metadata import entry_points

    return tuple(sorted({ep.name for ep in entry_points(group=group)}))


class Names(Sequence):
    """A group's plugin names, read when first used: an option's `choices` (package's --target) that includes a
    third party's plugins, while importing the verb's options (for `--help`) reads no entry point."""

    def __init__(self, group: str) -> None:
        self.group = group

    def __getitem__(self, index: int) -> str:  # type: ignore[override]
        return names(self.group)[index]

    def __len__(self) -> int:
        return len(names(self.group))

    def __iter__(self) -> Iterator[str]:
        return iter(names(self.group))

    def __contains__(self, value: object) -> bool:
        return value in names(self.group)


def plugin(group: str, name: str) -> Any:
    """The loaded object of plugin `name` in `group` (a package target's module, ...), importing that one plugin only
    (a target's module may import its server's client); a broken one is an InputError that names its error."""
    from importlib.metadata import entry_points

    kind = group.split(".")[-1][:-1]
    for ep in entry_points(group=group, name=name):
        try:
            return ep.load()
        except Exception as exc:  # a broken plugin is the user's input problem, not a crash
            raise InputError(f"the {kind} plugin '{name}' is broken: {type(exc).__name__}: {exc}",
                             hint=f"fix or uninstall the package that declares {ep.value}") from None
    raise InputError(f"no {kind} plugin named '{name}'", hint="there are: " + ", ".join(names(group)))


def runner_for(fmt: Format) -> type:
    """The runner class that executes models of `fmt`."""
    for plugin in plugins("mdeploy.runners"):
        if plugin.ok and fmt in plugin.obj.formats:
            return plugin.obj
    broken = [p for p in plugins("mdeploy.runners") if not p.ok]
    hint = "; ".join(f"{p.name}: {p.error}" for p in broken) or None
    raise InputError(f"no runner can execute {fmt.value} models", hint=hint)


def converters() -> list[type]:
    return [p.obj for p in plugins("mdeploy.converters") if p.ok]


def plan_conversion(src: Format, dst: Format) -> list[type]:
    """The shortest chain of converters from `src` to `dst` (breadth-first over the converter edges); from a format to
    itself, the edge that rewrites it in place (ONNX -> ONNX at another opset)."""
    edges = converters()
    same = [conv for conv in edges if src == dst and src in conv.sources and conv.target == dst]
    if same:
        return same[:1]
    previous: dict[Format, tuple[Format, type] | None] = {src: None}
    queue = deque([src])
    while queue:
        fmt = queue.popleft()
        if fmt == dst:
            break
        for conv in edges:
            if fmt in conv.sources and conv.target not in previous:
                previous[conv.target] = (fmt, conv)
                queue.append(conv.target)
    if dst not in previous or src == dst:
        existing = sorted({f"{s.value}->{c.target.value}" for c in edges for s in c.sources})
        raise InputError(
            f"no conversion path from {src.value} to {dst.value}",
            hint="edges that exist: " + ", ".join(existing),
        )
    chain = []
    fmt = dst
    while previous[fmt] is not None:
        fmt, conv = previous[fmt]  # type: ignore[misc]
        chain.append(conv)
    return chain[::-1]


def pass_for(verb: str, fmt: Format) -> type:
    """The pass that performs `verb` (quantize, prune, ...) on models of `fmt`."""
    candidates = [p.obj for p in plugins("mdeploy.passes") if p.ok and p.obj.verb == verb]
    for obj in candidates:
        if fmt in obj.sources:
            return obj
    handled = sorted({f.value for c in candidates for f in c.sources})
    raise InputError(
        f"mdeploy {verb} does not handle {fmt.value} models",
        hint=f"it handles: {', '.join(handled)}" if handled else None,
    )


def open_runner(ref: Any, device: str = "cpu", input_specs: list[Any] | None = None, threads: int | None = None) -> Any:
    """A loaded runner for any model format that has one (`ref`: a ModelRef; `input_specs`: `--input` overrides)."""
    return runner_for(ref.format)(ref, device=device, input_specs=input_specs, threads=threads)
