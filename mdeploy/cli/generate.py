"""A typer command made from a verb's options type, so that the flags, their help and their defaults are written
once, in mdeploy/verbs/<verb>.py, and the CLI, the pipeline file and the docs cannot drift apart.

The command parses the flags into the options type, calls the verb's `run`, renders the report (rich, --json or
--quiet) and exits with the report's code: parse -> verb -> render -> exit code.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mdeploy.cli.common import JsonOpt, Output, QuietOpt, VerboseOpt
from mdeploy.verbs.options import describe

if TYPE_CHECKING:
    from mdeploy.reports.report import Report

_COMMON = {"json_": JsonOpt, "quiet": QuietOpt, "verbose": VerboseOpt}


def command(verb: ModuleType, show: Callable[[Report], None], after: Callable[[Report], None] | None = None,
            run: Callable[[Any, Output], Report] | None = None) -> Callable[..., None]:
    """A typer command for the verb module `verb` (its `Options` and `run`); its first docstring line is the help.
    `after` runs once the report is shown (e.g. inspect's exit 2 for an invalid model). `run(options, output)`, when
    given, calls the verb instead of `verb.run(options, progress=...)` (distill: its plain epoch lines on stderr)."""
    infos = [i for i in describe(verb.Options) if i.cli]
    params = [inspect.Parameter(i.name, inspect.Parameter.KEYWORD_ONLY, default=_cli_default(i), annotation=_annotation(i))
              for i in infos]
    params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=False, annotation=a) for n, a in _COMMON.items()]

    def run_command(**given: Any) -> None:
        out = Output(given.pop("json_"), given.pop("quiet"), given.pop("verbose"))
        options = verb.Options(**{k: v for k, v in given.items() if v is not None})
        report = run(options, out) if run is not None else verb.run(options, progress=out.progress)
        out.finish(report, show, after)

    run_command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    run_command.__doc__ = (verb.run.__doc__ or "").strip().splitlines()[0]
    run_command.__name__ = verb.__name__.rsplit(".", 1)[-1]
    return run_command


def _cli_default(info: Any) -> Any:
    from dataclasses import MISSING

    if info.default is MISSING:
        return ...
    if info.kind == "list":
        return None
    return info.default


def _annotation(info: Any) -> Any:
    tp = {"bool": bool, "int": int, "float": float, "str": str, "list": list[str]}[info.kind]
    optional = info.kind == "list" or (info.default is None and info.kind != "bool")
    if info.kind == "bool" and info.default is None:
        tp, optional = bool, True
    help_text = info.help + (f" ({' | '.join(info.choices)})" if info.choices and "|" not in info.help else "")
    if info.argument:
        spec = typer.Argument(help=help_text, show_default=False)
    else:
        spec = typer.Option(*info.flags, help=help_text, metavar=_range(info),
                            show_default=info.default not in (None, [], False))
    return Annotated[tp | None if optional else tp, spec]


def _range(info: Any) -> str | None:
    """`<float range> [0<=x<1]`: the bounds of a number option as typer writes its own, but all of them (typer's
    `min`/`max` know no exclusive bound) and checked by the verb itself (mdeploy.verbs.options.check), whose error
    names the flag, the value and the range, and refuses NaN and infinity."""
    if info.kind not in ("int", "float") or info.bounds is None:
        return None
    low = (("<=", info.min) if info.min is not None else ("<", info.above)) if (info.min, info.above) != (None, None) else None
    high = (("<=", info.max) if info.max is not None else ("<", info.below)) if (info.max, info.below) != (None, None) else None
    if low and high:
        text = f"{_n(low[1])}{low[0]}x{high[0]}{_n(high[1])}"
    elif low:
        text = f"x{low[0].replace('<', '>')}{_n(low[1])}"
    else:
        text = f"x{high[0]}{_n(high[1])}"
    return f"<{info.kind} range> [{text}]"


def _n(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"
