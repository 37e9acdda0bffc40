"""Heavy frameworks stay out of commands that do not need them; every verb's --json is one JSON object.

Start-up: `mdeploy --help` and every `mdeploy VERB --help` load neither numpy nor any framework (their figures, side
by side with optimum-cli's, are benchmarks/startup.py's; no test here times anything).
"""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import factory, run_cli

HEAVY = ("torch", "tensorflow", "keras", "tf2onnx", "tensorrt", "mlflow", "tritonclient")
# what --help never needs: the frameworks, and the base dependencies a verb needs only when it runs
NOT_FOR_HELP = (*HEAVY, "numpy", "onnx", "onnxruntime", "yaml", "pydantic")

PROBE = """
import json, os, sys
from mdeploy.cli.app import main
sys.argv = ["mdeploy", *sys.argv[1:]]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code
watched = json.loads(os.environ["PROBE_WATCH"])
with open(os.environ["PROBE_OUT"], "w") as f:
    json.dump({"code": code, "loaded": [m for m in watched if m in sys.modules]}, f)
"""


def _probe(tmp_path, *args, watch=HEAVY):
    """Run the CLI in a fresh interpreter; its exit code and which of `watch` ended up imported."""
    out = tmp_path / "probe.json"
    env = {**os.environ, "PROBE_OUT": str(out), "PROBE_WATCH": json.dumps(watch)}
    subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True, timeout=120, env=env)
    return json.loads(out.read_text())


def _commands():
    from mdeploy.cli.app import COMMANDS

    return [(), *((name,) for name in COMMANDS), ("report", "merge")]


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c) or "mdeploy")
def test_help_imports_neither_numpy_nor_any_framework(tmp_path, command):
    assert _probe(tmp_path, *command, "--help", watch=NOT_FOR_HELP) == {"code": 0, "loaded": []}


def test_options_are_importable_without_numpy(tmp_path):
    code = ("import importlib, sys\nfrom mdeploy.verbs import VERBS\nfrom mdeploy.verbs.options import describe\n"
            "n = sum(len(describe(importlib.import_module('mdeploy.verbs.' + v).Options)) for v in VERBS)\n"
            "print(n, [m for m in ('numpy', 'onnx', 'onnxruntime', 'yaml') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    count, loaded = out.split(" ", 1)
    assert int(count) > 100 and loaded.strip() == "[]"


def test_the_listing_shows_each_commands_own_help_line():
    """`mdeploy --help` lists the commands without importing them: each line is kept in COMMANDS, and must stay the
    first line of the command's own help (its verb's `run` docstring)."""
    from mdeploy.cli.app import COMMANDS, load

    for name, line in COMMANDS.items():
        assert load(name).help.strip().splitlines()[0] == line, name
    listing = run_cli("--help", env={"COLUMNS": "250"}).stdout
    for name, line in COMMANDS.items():
        assert any(row.split() and row.split()[1:2] == [name] and line in row for row in listing.splitlines()), name


FORMATTER = """
import json, sys
from mdeploy.cli import help_formatter
help_formatter._DEFERRED.update(json.loads(sys.argv[1]))
help_formatter.load()
before = {m: m in sys.modules for m in ("typer.rich_utils", "rich.markdown", "rich.traceback")}
from typer.rich_utils import Markdown
import rich.markdown
print(json.dumps({"before": before, "real": isinstance(Markdown("# x"), rich.markdown.Markdown),
                  "module": hasattr(rich.markdown, "MarkdownContext")}))
"""


@pytest.mark.parametrize("deferred, ordinary", [({}, False), ({"rich.markdown": "NotInRich"}, True)],
                         ids=["stand-ins", "a name typer does not take: the ordinary import"])
def test_the_help_formatter_loads_without_markdown_and_still_works(deferred, ordinary):
    out = subprocess.run([sys.executable, "-c", FORMATTER, json.dumps(deferred)], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    result = json.loads(out)
    assert result["before"] == {"typer.rich_utils": True, "rich.markdown": ordinary, "rich.traceback": ordinary}
    assert result["real"] and result["module"]  # the stand-in makes real instances; later imports get the module


def test_a_lazy_module_imports_on_first_attribute_read():
    code = ("import sys\nfrom mdeploy.lazy import LazyModule\nw = LazyModule('wave')\nbefore = 'wave' in sys.modules\n"
            "print(before, w.Error is sys.modules['wave'].Error, 'Error' in vars(w))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.split() == ["False", "True", "True"]


def test_help_imports_no_heavy_framework(tmp_path):
    assert _probe(tmp_path, "--help") == {"code": 0, "loaded": []}


def test_package_help_imports_no_serving_framework(tmp_path):
    assert _probe(tmp_path, "package", "--help") == {"code": 0, "loaded": []}


def test_inspect_onnx_imports_no_heavy_framework(tmp_path, cnn_onnx):
    assert _probe(tmp_path, "inspect", cnn_onnx, "--json") == {"code": 0, "loaded": []}


def test_validate_onnx_pair_imports_no_heavy_framework(tmp_path, cnn_onnx):
    result = _probe(tmp_path, "validate", cnn_onnx, cnn_onnx, "-q")
    assert result == {"code": 0, "loaded": []}


def test_json_is_exactly_one_object_even_with_verbose_framework_logs(tmp_path):
    result = run_cli("convert", factory("multi_io"), "-o", tmp_path / "m.onnx", "--json", "--verbose")
    assert result.code == 0, result.stderr
    decoder = json.JSONDecoder()
    obj, end = decoder.raw_decode(result.stdout)
    assert result.stdout[end:].strip() == "" and obj["command"] == "convert"
    assert "torch.onnx" in result.stderr  # the exporter's own progress lines went to stderr


def test_frameworks_are_silent_without_verbose(tmp_path):
    result = run_cli("convert", factory("multi_io"), "-o", tmp_path / "m.onnx")
    assert result.code == 0
    assert result.stderr == ""
    assert "PASSED" in result.stdout


def test_plugins_lists_builtins_with_their_edges():
    result = run_cli("plugins", "--json")
    assert result.code == 0
    rows = {(r["group"], r["name"]): r for r in result.json["plugins"]}
    assert rows[("converters", "torch_to_onnx")]["status"] == "ok"
    assert rows[("runners", "onnxruntime")]["formats"] == "onnx"


def test_version():
    result = run_cli("--version")
    assert result.code == 0 and result.stdout.startswith("mdeploy ")
