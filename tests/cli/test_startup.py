"""Heavy frameworks stay out of commands that do not need them; every verb's --json is one JSON object."""

import json
import os
import subprocess
import sys

from tests.conftest import factory, run_cli

PROBE = """
import json, os, sys
from mdeploy.cli.app import main
sys.argv = ["mdeploy", *sys.argv[1:]]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code
heavy = [m for m in ("torch", "tensorflow", "keras", "tf2onnx", "tensorrt", "mlflow", "tritonclient") if m in sys.modules]
with open(os.environ["PROBE_OUT"], "w") as f:
    json.dump({"code": code, "heavy": heavy}, f)
"""


def _probe(tmp_path, *args):
    """Run the CLI in a fresh interpreter and report which heavy frameworks ended up imported."""
    out = tmp_path / "probe.json"
    env = {**os.environ, "PROBE_OUT": str(out)}
    subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True, timeout=120, env=env)
    return json.loads(out.read_text())


def test_help_imports_no_heavy_framework(tmp_path):
    assert _probe(tmp_path, "--help") == {"code": 0, "heavy": []}


def test_package_help_imports_no_serving_framework(tmp_path):
    assert _probe(tmp_path, "package", "--help") == {"code": 0, "heavy": []}


def test_inspect_onnx_imports_no_heavy_framework(tmp_path, cnn_onnx):
    assert _probe(tmp_path, "inspect", cnn_onnx, "--json") == {"code": 0, "heavy": []}


def test_validate_onnx_pair_imports_no_heavy_framework(tmp_path, cnn_onnx):
    result = _probe(tmp_path, "validate", cnn_onnx, cnn_onnx, "-q")
    assert result == {"code": 0, "heavy": []}


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
