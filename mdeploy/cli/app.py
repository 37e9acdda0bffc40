"""The `mdeploy` entry point: parse -> api -> render -> exit code.

Exit codes: 0 success; 1 a check failed; 2 bad usage or input (one `error:` line, maybe a `hint:` line);
3 a bug (traceback). `--debug` or MDEPLOY_DEBUG=1 shows tracebacks for exit 2 as well.
"""

from __future__ import annotations

import os
import sys
import traceback

import typer

try:  # typer >= 0.22 carries its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer depends on click itself
    from click import exceptions as click_exceptions

from mdeploy import __version__
from mdeploy.cli import benchmark, convert, distill, inspect, package, plugins, prune, quantize, validate
from mdeploy.cli import report as report_cmd
from mdeploy.cli import run as run_cmd
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
app.command("prune")(prune.command)
app.command("distill")(distill.command)
app.command("package")(package.command)
app.command("run")(run_cmd.command)
app.add_typer(report_cmd.app, name="report")

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
    try:
        code = app(prog_name="mdeploy", standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError as exc:
        print(exc.ctx.get_help(), file=sys.stderr)
        sys.exit(2)
    except click_exceptions.ClickException as exc:
        _error(exc.format_message(), _usage_hint(exc), exc.exit_code)
    except typer.Abort:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except MdeployError as exc:
        if _debug:
            traceback.print_exc()
        _error(exc.message, exc.hint, exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception:
        traceback.print_exc()
        print("error: this is a bug in mdeploy; please report it with the traceback above", file=sys.stderr)
        sys.exit(3)
    # The command is done. The interpreter's garbage collections at exit would walk every object a torch export
    # leaves alive (millions: 2-5 s after converting a BERT) only to free memory the OS takes back anyway; frozen
    # objects are skipped (atexit handlers and the flush of stdout/stderr still run).
    import gc

    gc.freeze()
    sys.exit(code if isinstance(code, int) else 0)


def _error(message: str, hint: str | None, code: int) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    sys.exit(code)


def _usage_hint(exc: Exception) -> str | None:
    ctx = getattr(exc, "ctx", None)
    return f"see '{ctx.command_path} --help'" if ctx is not None else None
