"""The `mdeploy` entry point: parse -> api -> render -> exit code.

Exit codes: 0 success; 1 a check failed; 2 bad usage or input (one `error:` line, maybe a `hint:` line);
3 a bug (traceback). `--debug` or MDEPLOY_DEBUG=1 shows tracebacks for exit 2 as well. With `--json`, every outcome
is one JSON object on stdout: the report, or (usage error, bad input, interrupt, bug) `{"error", "hint", "code"}`.

Start-up: `mdeploy --help` lists the commands from COMMANDS without importing any of them; a command's module (and
its verb's, whose options its flags are made from) is imported only when that command runs or shows its help, and
the verbs import numpy and the frameworks only when they run (benchmarks/startup.py measures it).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from typing import Any

import typer
from typer.core import TyperCommand

try:  # typer >= 0.22 carries its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer depends on click itself
    from click import exceptions as click_exceptions

from mdeploy import __version__
from mdeploy.cli.group import Group
from mdeploy.errors import MdeployError

# name (also its module under mdeploy/cli) -> the line `mdeploy --help` shows for it, in the help's order. The line is
# the command's own first help line (its verb's `run` docstring); tests/cli/test_startup.py holds them equal.
COMMANDS: dict[str, str] = {
    "convert": "Convert a model to another format and prove the result computes what the source did (exit 1 if not).",
    "validate": "Run two models on the same inputs and compare every output. Exit 1 on a mismatch.",
    "inspect": "Show inputs, outputs, operators, parameters and size of a model (exit 2 if it is invalid).",
    "plugins": "List the plugins mdeploy found, with the error of any that is broken and why any is unavailable here.",
    "quantize": "Quantize a model to INT8 and prove on data what accuracy it kept. Exit 1 when it did not keep enough.",
    "benchmark": "Measure latency (mean/p50/p90/p99), throughput, peak memory and size of each model.",
    "prune": "Prune a PyTorch model (channels, or masks), recover it, export it to ONNX and prove what it kept.",
    "distill": "Distill a teacher in any format into a small torch student, export it and prove it on held-out data.",
    "package": "Package a model for a model server (MLflow, Triton, TF Serving, KServe), checked against the model.",
    "run": "Run a pipeline file: steps for every model, then gates; exit 1 when a gate fails.",
    "report": "Work with the reports of `mdeploy run`.",
}


class Commands(Group):
    """The root command. Its help lists COMMANDS by name and line alone; the command a user names is imported, and
    put in place of its listing, when it is resolved (to run, or to show its own help)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name, line in COMMANDS.items():
            self.commands.setdefault(name, TyperCommand(name, help=line))

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if name in COMMANDS:
            command = self.commands[name] = load(name)
        return name, command, rest


def load(name: str) -> Any:
    """The click command for COMMANDS[name], made from its module under mdeploy/cli."""
    module = importlib.import_module(f"mdeploy.cli.{name}")
    if isinstance(getattr(module, "app", None), typer.Typer):  # `report`: a group of its own subcommands
        return typer.main.get_group(module.app)
    single = typer.Typer(add_completion=False)
    single.command(name)(module.command)
    return typer.main.get_command(single)


app = typer.Typer(
    name="mdeploy",
    cls=Commands,
    help="Convert, optimize, validate and benchmark trained models for deployment.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_debug = os.environ.get("MDEPLOY_DEBUG") == "1"


def _version(value: bool) -> None:
    if value:
        print(f"mdeploy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    global _debug
    _debug = _debug or debug


def main() -> None:
    """Everything that ends a command is mapped to mdeploy's exit codes here, usage errors included: a bad flag
    value gets the same one `error:` line (and `hint:` line) as any other bad input, never a usage box."""
    args = _before_separator(sys.argv[1:])
    as_json = "--json" in args
    if not args or "--help" in args or "-h" in args:
        from mdeploy.cli import help_formatter

        help_formatter.load()
    try:
        code = app(prog_name="mdeploy", standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError as exc:
        from mdeploy.cli import help_formatter

        help_formatter.load()
        print(exc.ctx.get_help(), file=sys.stderr)
        sys.exit(2)
    except click_exceptions.ClickException as exc:
        _error(_usage_message(exc, args), _usage_hint(exc), exc.exit_code, as_json)
    except typer.Abort:
        _error("interrupted", None, 130, as_json, plain=True)
    except MdeployError as exc:
        if _debug:
            traceback.print_exc()
        _error(exc.message, exc.hint, exc.exit_code, as_json)
    except KeyboardInterrupt:
        _error("interrupted", None, 130, as_json, plain=True)
    except Exception as exc:
        traceback.print_exc()
        message = "this is a bug in mdeploy; please report it with the traceback above"
        print(f"error: {message}", file=sys.stderr)
        _json_error(f"{type(exc).__name__}: {exc}", message, 3, as_json)
        sys.exit(3)
    # The command is done. The interpreter's garbage collections at exit would walk every object a torch export
    # leaves alive (millions: 2-5 s after converting a BERT) only to free memory the OS takes back anyway; frozen
    # objects are skipped (atexit handlers and the flush of stdout/stderr still run).
    import gc

    gc.freeze()
    sys.exit(code if isinstance(code, int) else 0)


def _error(message: str, hint: str | None, code: int, as_json: bool, plain: bool = False) -> None:
    """stderr: one `error:` line and maybe a `hint:` line (`plain`: the message alone, as for `interrupted`)."""
    message = " ".join(message.split())
    print(message if plain else f"error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    _json_error(message, hint, code, as_json)
    sys.exit(code)


def _json_error(message: str, hint: str | None, code: int, as_json: bool) -> None:
    """With --json, the outcome as the one JSON object on stdout, unless the command already printed its report
    (inspect prints what it read of an invalid model, then exits 2)."""
    common = sys.modules.get("mdeploy.cli.common")
    if not as_json or (common is not None and common.json_printed):
        return
    command = next((a for a in _before_separator(sys.argv[1:]) if a in COMMANDS), None)
    sys.stdout.write(json.dumps({"command": command, "passed": False, "error": message, "hint": hint, "code": code},
                                indent=2) + "\n")
    sys.stdout.flush()


def _before_separator(args: list[str]) -> list[str]:
    return args[: args.index("--")] if "--" in args else args


def _usage_message(exc: Any, args: list[str]) -> str:
    """Click's message, with the value it refused when it does not say it (`Invalid value for '--epochs': Input
    should be a valid integer` names no value): the last one given to that flag on the command line."""
    message = exc.format_message()
    param = getattr(exc, "param", None)
    if not isinstance(exc, click_exceptions.BadParameter) or param is None:
        return message
    given = None
    for i, arg in enumerate(args):
        for opt in getattr(param, "opts", []):
            if arg == opt and i + 1 < len(args):
                given = args[i + 1]
            elif opt.startswith("--") and arg.startswith(opt + "="):
                given = arg[len(opt) + 1:]
    if given is None or repr(given) in message:
        return message
    return f"{message} (got {given[:60]!r}{'…' if len(given) > 60 else ''})"


def _usage_hint(exc: Exception) -> str | None:
    ctx = getattr(exc, "ctx", None)
    return f"see '{ctx.command_path} --help'" if ctx is not None else None
