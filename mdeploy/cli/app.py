"""The `mdeploy` entry point: parse -> api -> render -> exit code.

Exit codes: 0 success; 1 a check failed; 2 bad usage or input (one `error:` line, maybe a `hint:` line);
3 a bug (traceback). `--debug` or MDEPLOY_DEBUG=1 shows tracebacks for exit 2 as well.
"""

from __future__ import annotations

import os
import sys
import traceback

import typer

from mdeploy import __version__
from mdeploy.cli import benchmark, convert, inspect, plugins, quantize, validate
from mdeploy.errors import MdeployError

app = typer.Typer(
    name="mdeploy",
    help="Convert, optimize, validate and benchmark trained models for deployment.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("convert")(convert.command)
app.command("validate")(validate.command)
app.command("inspect")(inspect.command)
app.command("plugins")(plugins.command)
app.command("quantize")(quantize.command)
app.command("benchmark")(benchmark.command)

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
    """Typer handles usage errors itself (exit 2); everything else is mapped to mdeploy's exit codes here."""
    try:
        app(prog_name="mdeploy")
    except MdeployError as exc:
        if _debug:
            traceback.print_exc()
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception:
        traceback.print_exc()
        print("error: this is a bug in mdeploy; please report it with the traceback above", file=sys.stderr)
        sys.exit(3)
