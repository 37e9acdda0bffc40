"""Options types: one dataclass per verb whose fields carry type, default and help text.

They are the single source for the CLI (flags and help are generated from them, see mdeploy/cli/generate.py), the
pipeline file (`mdeploy run`: step options are the same names as the CLI flags, with `-` or `_`), the JSON Schema
that `mdeploy run --schema` prints, and the option tables in docs. A field's name is its flag's name with `_` for
`-`, unless `flag` says otherwise (`--from` cannot be a Python name).
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

from mdeploy.errors import InputError, shown


def option(
    default: Any = MISSING,
    *,
    help: str,  # noqa: A002  the word the CLI uses
    flag: str | None = None,
    short: str | None = None,
    argument: bool = False,
    choices: tuple[str, ...] | None = None,
    min: float | None = None,  # noqa: A002
    max: float | None = None,  # noqa: A002
    above: float | None = None,
    below: float | None = None,
    cli: bool = True,
    pipeline: bool = True,
) -> Any:
    """A verb option. `flag`: the CLI spelling when it is not `--name-with-dashes` (`--per-channel/--per-tensor` for a
    switch with two names); `argument`: positional on the CLI; `cli` / `pipeline`: where the option exists (a
    pipeline sets a step's model and output itself).

    Bounds of a number: `min` / `max` inclusive, `above` / `below` exclusive (`min=0, below=1` is 0 <= x < 1). They
    are the bounds the verb really enforces for every value it accepts: the CLI help shows them, every way of making
    the options (CLI, pipeline file, Python) refuses a value outside them with the flag, the value and the range,
    and a float option never takes NaN or infinity. A rule that depends on another option (prune's --sparsity 0
    only with --head-sparsity) stays in the verb."""
    metadata = {"help": help, "flag": flag, "short": short, "argument": argument, "choices": choices, "min": min,
                "max": max, "above": above, "below": below, "cli": cli, "pipeline": pipeline}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class OptionInfo:
    """One option as every consumer sees it."""

    name: str  # the dataclass field
    key: str  # the name in a pipeline file and on the CLI, without dashes: `calib-data`
    type: Any  # the resolved annotation
    default: Any
    required: bool
    help: str
    flag: str | None
    short: str | None
    argument: bool
    choices: tuple[str, ...] | None
    min: float | None
    max: float | None
    above: float | None
    below: float | None
    cli: bool
    pipeline: bool

    @property
    def flags(self) -> list[str]:
        main = self.flag or "--" + self.key
        return [main] + ([self.short] if self.short else [])

    @property
    def kind(self) -> str:
        """bool | int | float | str | list (a list of strings)."""
        return _kind(self.type)

    @property
    def bounds(self) -> str | None:
        """The range in words, as help and errors show it: `>= 0 and < 1`; None for an option without bounds."""
        parts = [f"{op} {_number(v)}" for op, v in ((">=", self.min), (">", self.above), ("<=", self.max), ("<", self.below))
                 if v is not None]
        return " and ".join(parts) or None


def describe(options_type: type) -> list[OptionInfo]:
    """Every option of a verb's options type, in declaration order."""
    hints = typing.get_type_hints(options_type)
    infos = []
    for f in fields(options_type):
        md = f.metadata
        if "help" not in md:
            continue
        flag = md.get("flag")
        key = (flag.split("/")[0].lstrip("-") if flag else f.name.replace("_", "-"))
        default = _default(f)
        infos.append(OptionInfo(name=f.name, key=key, type=hints[f.name], default=default, required=default is MISSING,
                                help=md["help"], flag=flag, short=md.get("short"), argument=md.get("argument", False),
                                choices=md.get("choices"), min=md.get("min"), max=md.get("max"), above=md.get("above"),
                                below=md.get("below"), cli=md.get("cli", True), pipeline=md.get("pipeline", True)))
    return infos


def build(options_type: type, values: dict[str, Any], where: str = "") -> Any:
    """The options from a mapping keyed by flag names (`calib-data`, `calib_data`, `--calib-data`) or field names,
    each value checked against its type and choices. `where` prefixes errors (`steps[2].quantize`)."""
    infos = {i.key.replace("-", "_"): i for i in describe(options_type)}
    by_field = {i.name: i for i in infos.values()}
    given: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = str(raw_key).lstrip("-").replace("-", "_")
        info = infos.get(key) or by_field.get(key)
        if info is None:
            known = sorted(i.key for i in infos.values())
            near = difflib.get_close_matches(str(raw_key).lstrip("-").replace("_", "-"), known, n=1)
            raise InputError(f"{_at(where, raw_key)}: unknown option" + (f"; did you mean '{near[0]}'?" if near else ""),
                             hint="options: " + ", ".join(known))
        given[info.name] = check_value(info, value, _at(where, raw_key))
    missing = [i.key for i in by_field.values() if i.required and i.name not in given]
    if missing:
        raise InputError(f"{where or 'options'}: missing {', '.join(missing)}")
    return options_type(**given)


def check_value(info: OptionInfo, value: Any, where: str) -> Any:
    """`value` as the option's type, or an InputError naming where it came from and what was expected."""
    kind = info.kind
    if value is None:
        return None if _optional(info.type) else _fail(where, f"a {kind}", value)
    if kind == "bool":
        return value if isinstance(value, bool) else _fail(where, "true or false", value)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(where, "an integer", value)
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(where, "a number", value)
        value = float(value)
    elif kind == "str":
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            _fail(where, "a string", value)
        value = str(value)
        if info.choices and value not in info.choices:
            _fail(where, "|".join(info.choices), value)
    elif kind == "list":
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in items):
            _fail(where, "a string or a list of strings", value)
        value = [str(v) for v in items]
    if kind in ("int", "float"):
        check_number(info, value, where, info.key)
    return value


def check(options: Any) -> None:
    """Choices and minimums of every option, however the options were made (CLI, pipeline, Python)."""
    for info in describe(type(options)):
        value = getattr(options, info.name)
        if value is None:
            continue
        flag = info.flags[0].split("/")[0]
        if info.choices and value not in info.choices:
            _fail(flag, "|".join(info.choices), value)
        if info.kind in ("int", "float"):
            check_number(info, value, flag, flag)


def check_number(info: OptionInfo, value: float, where: str, name: str) -> None:
    """A number option's value within its bounds, and finite: NaN compares false with every bound, so it would slip
    through `value < min`; it is refused by name, as infinity is. The error names `where` and the value; the hint the
    range, for `name` (the flag, or the pipeline key)."""
    bounds = info.bounds
    expected = f"a number {bounds}" if bounds else "a finite number"
    if isinstance(value, float) and not math.isfinite(value):
        what = "NaN is not a number" if math.isnan(value) else "infinity is not a finite number"
        raise InputError(f"{where}: expected {expected}, got {value!r} ({what})", hint=f"{name} takes {expected}")
    if bounds and not _within(info, value):
        raise InputError(f"{where}: expected {expected}, got {shown(value)}", hint=f"{name} takes {expected}")


def _within(info: OptionInfo, value: float) -> bool:
    return ((info.min is None or value >= info.min) and (info.above is None or value > info.above)
            and (info.max is None or value <= info.max) and (info.below is None or value < info.below))


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def json_schema(options_type: type, title: str, exclude: typing.Collection[str] = (),
                aliases: dict[str, str] | None = None) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) object for the options a pipeline step may set. `exclude`: field names the
    pipeline sets itself; `aliases`: extra keys a pipeline file may use for an option (alias -> the option's key)."""
    props: dict[str, Any] = {}
    for info in describe(options_type):
        if not info.pipeline or info.name in exclude:
            continue
        prop: dict[str, Any] = {"description": info.help}
        prop.update(_schema_type(info))
        if info.default is not MISSING and info.default not in (None, []):
            prop["default"] = info.default
        props[info.key] = prop
    for alias, key in (aliases or {}).items():
        if key in props:
            props[alias] = {**props[key], "description": f"Short for {key}: {props[key]['description']}"}
    return {"type": "object", "title": title, "properties": props, "additionalProperties": False}


def _schema_type(info: OptionInfo) -> dict[str, Any]:
    base = {"bool": {"type": "boolean"}, "int": {"type": "integer"}, "float": {"type": "number"},
            "str": {"type": "string"}}.get(info.kind)
    if info.kind == "list":
        return {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    assert base is not None
    if info.choices:
        base = {**base, "enum": list(info.choices)}
    for key, bound in (("minimum", info.min), ("maximum", info.max), ("exclusiveMinimum", info.above),
                       ("exclusiveMaximum", info.below)):
        if bound is not None and info.kind in ("int", "float"):
            base = {**base, key: bound}
    return {"anyOf": [base, {"type": "null"}]} if _optional(info.type) else base


def _kind(tp: Any) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        tp = args[0]
    if typing.get_origin(tp) is list or tp is list:
        return "list"
    return {bool: "bool", int: "int", float: "float", str: "str"}[tp]


def _optional(tp: Any) -> bool:
    return type(None) in typing.get_args(tp)


def _default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _at(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _fail(where: str, expected: str, got: Any) -> Any:
    raise InputError(f"{where}: expected {expected}, got {shown(got)}")


def values(options: Any) -> dict[str, Any]:
    """The options as a plain dict keyed by flag name (for reports and the resolved plan)."""
    return {i.key: getattr(options, i.name) for i in describe(type(options))}


__all__ = ["OptionInfo", "build", "check", "check_number", "check_value", "describe", "json_schema", "option", "values"]
