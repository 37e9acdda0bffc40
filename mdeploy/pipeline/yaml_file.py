"""One pipeline file's YAML, read within limits, and errors that point into it (`file:line:col: key.path: ...`).

The file is composed (`yaml.compose` keeps every node's line and column), never constructed whole. A pipeline file
is a few KiB written by hand, so anything far beyond that is refused before it can cost time or memory: a file
over 1 MiB, a binary file, nesting deeper than 64 levels (PyYAML's composer recurses: deeper would be a
RecursionError), more than 1,000 aliases, or a document whose aliases expand to more than 2,000,000 nodes and
characters. That last one is the "billion laughs": nine levels of nine aliases are a few hundred bytes on disk and
hundreds of millions of items expanded. PyYAML constructs an alias as a shared reference, so building the value
stays cheap; it is printing or walking it that would not, and the limit makes sure nothing ever has to.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from mdeploy.errors import InputError, shown

MAX_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_ALIASES = 1_000
MAX_EXPANDED = 2_000_000  # nodes + scalar characters, with every alias expanded
_HINT = "see docs/ci.md for the pipeline file format"


class _Refused(Exception):
    def __init__(self, mark: Any, message: str) -> None:
        super().__init__(message)
        self.mark, self.message = mark, message


def _loader(text: str) -> Any:
    """A SafeLoader whose composer counts aliases and nesting as it goes (both known before anything expands)."""
    import yaml

    class Loader(yaml.SafeLoader):
        aliases = 0
        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_ALIASES:
                    raise _Refused(self.peek_event().start_mark, f"more than {MAX_ALIASES:,} aliases (*name); refused")
            self.depth += 1
            try:
                if self.depth > MAX_DEPTH:
                    raise _Refused(self.peek_event().start_mark, f"nested more than {MAX_DEPTH} levels deep; refused")
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    return Loader(text)


def _expanded_size(root: Any) -> int:
    """The size of the document with every alias expanded (nodes + scalar characters), counted without expanding:
    a node shared through aliases is measured once and counted each time it is used. Refused past MAX_EXPANDED, at
    the node where the count passed it; also refused: a node that contains itself (`&a [*a]`, its expansion never
    ends), and nesting deeper than MAX_DEPTH once aliases are expanded (an alias of a deep list inside a deep list:
    building the value recurses that deep)."""
    import yaml

    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, expanded height)
    open_nodes: set[int] = set()

    def measure(node: Any, depth: int) -> tuple[int, int]:
        key = id(node)
        if key in open_nodes:
            raise _Refused(node.start_mark, "an alias that contains itself (its expansion never ends); refused")
        if key not in measured:
            if depth > MAX_DEPTH:
                raise _Refused(node.start_mark, f"nested more than {MAX_DEPTH} levels deep (with its aliases expanded); "
                                                "refused")
            open_nodes.add(key)
            if isinstance(node, yaml.ScalarNode):
                children: list[Any] = []
            elif isinstance(node, yaml.SequenceNode):
                children = node.value
            else:
                children = [n for pair in node.value for n in pair]
            parts = [measure(child, depth + 1) for child in children]
            open_nodes.discard(key)
            size = 1 + (len(node.value) if isinstance(node, yaml.ScalarNode) else sum(p[0] for p in parts))
            if size > MAX_EXPANDED:
                raise _Refused(node.start_mark, f"expands to more than {MAX_EXPANDED:,} nodes and characters through "
                                                "its aliases (*name); refused")
            measured[key] = (size, 1 + max((p[1] for p in parts), default=0))
        size, height = measured[key]
        if depth + height > MAX_DEPTH + 1:
            raise _Refused(node.start_mark, f"nested more than {MAX_DEPTH} levels deep (with its aliases expanded); refused")
        return size, height

    return measure(root, 1)[0]


def read_text(path: Path) -> str:
    """The file as text: a file too big, binary or not UTF-8 is one line saying so (not a codec traceback)."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise InputError(f"{path} is {size / (1 << 20):.1f} MiB; a pipeline file is YAML of at most 1 MiB", hint=_HINT)
    data = path.read_bytes()
    what = f"{path} is a binary file, not a pipeline file (YAML text)"
    hint = "mdeploy run takes a pipeline .yaml file; models go in its `models:` entries (" + _HINT + ")"
    if b"\0" in data:
        raise InputError(what, hint=hint)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what}: byte 0x{data[exc.start]:02x} at offset {exc.start} is not UTF-8", hint=hint) from None


def join(keypath: str, key: str | int) -> str:
    """`steps[2].quantize.mode`: the key path an error names."""
    if isinstance(key, int):
        return f"{keypath}[{key}]"
    return f"{keypath}.{key}" if keypath else key


def suggest(key: str, known: Any) -> str:
    near = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f"; did you mean '{near[0]}'?" if near else ""


class Doc:
    """The composed YAML of one file, and errors that point into it."""

    def __init__(self, path: Path) -> None:
        import yaml

        self.path = path
        self.display = str(path)
        self.base = path.resolve().parent
        try:
            text = read_text(path)
        except OSError as exc:
            raise InputError(f"cannot read pipeline file {path}: {exc.strerror or exc}") from None
        self._loader = _loader(text)
        try:
            self._root = self._loader.get_single_node()
            if self._root is not None:
                _expanded_size(self._root)
        except _Refused as exc:
            raise InputError(f"{self._where(exc.mark)}: {exc.message}", hint="a pipeline file is a few KiB of plain YAML; "
                             "write the values out (or use a few aliases)") from None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            raise InputError(f"{self._where(mark)}: not valid YAML: {exc.problem or exc.context}",
                             hint=f"{exc.context}" if exc.context and exc.problem else None) from None
        except yaml.YAMLError as exc:
            raise InputError(f"{self.display}: not valid YAML: {exc}") from None

    def _where(self, mark: Any) -> str:
        return f"{self.display}:{mark.line + 1}:{mark.column + 1}" if mark else self.display

    def root(self) -> Any:
        import yaml

        if self._root is None:
            raise InputError(f"{self.display}: the pipeline file is empty", hint=_HINT)
        if not isinstance(self._root, yaml.MappingNode):
            self.fail(self._root, "", "expected a mapping (version, models, data, steps, gates)")
        return self._root

    def at(self, node: Any) -> str:
        return self._where(node.start_mark)

    def file(self, text: str) -> Path:
        """A path written in the file, relative to the file's folder; shown relative to the working folder when it
        lies under it (shorter plans and reports)."""
        path = Path(text).expanduser()
        path = Path(os.path.normpath(path if path.is_absolute() else self.base / path))
        try:
            return path.relative_to(Path.cwd())
        except ValueError:
            return path

    def source(self, node: Any, keypath: str) -> str:
        """Where a value came from, as the plan records it: `pipeline.yaml:12:7 steps[1].quantize.mode`."""
        return f"{self.at(node)} {keypath}"

    def fail(self, node: Any, keypath: str, message: str, hint: str | None = None) -> Any:
        raise InputError(f"{self.at(node)}: {keypath + ': ' if keypath else ''}{message}", hint=hint)

    def value(self, node: Any) -> Any:
        """The plain Python value of a node (YAML's safe types); one YAML cannot construct is an error at the node
        (an integer of more digits than Python converts, a malformed timestamp, ...)."""
        import yaml

        try:
            return self._loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            self.fail(node, "", f"cannot read this value: {shown(problem, 120)}")

    def mapping(self, node: Any, keypath: str, known: tuple[str, ...] | None) -> dict[str, tuple[Any, Any]]:
        """{key: (key node, value node)} of a mapping node; an unknown key (when `known` is given) or a repeated key
        is an error pointing at the key."""
        import yaml

        if not isinstance(node, yaml.MappingNode):
            self.fail(node, keypath, f"expected a mapping, got {self.kind(node)}")
        items: dict[str, tuple[Any, Any]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.fail(key_node, keypath, "a key must be a plain name")
            key = str(self.value(key_node))
            where = join(keypath, key)
            if key in items:
                self.fail(key_node, where, f"given twice (first at line {items[key][0].start_mark.line + 1})")
            if known is not None and key not in known:
                self.fail(key_node, where, "unknown key" + suggest(key, known), hint="known keys: " + ", ".join(known))
            items[key] = (key_node, value_node)
        return items

    def sequence(self, node: Any, keypath: str) -> list[Any]:
        import yaml

        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, keypath, f"expected a list, got {self.kind(node)}")
        return list(node.value)

    def string(self, node: Any, keypath: str) -> str:
        import yaml

        value = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if not isinstance(value, str) or not value.strip():
            self.fail(node, keypath, f"expected a string, got {self.kind(node)}")
        return value.strip()

    def kind(self, node: Any) -> str:
        """What a node holds, for an error message: a container by its kind, a scalar cut short."""
        import yaml

        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        return shown(self.value(node))
