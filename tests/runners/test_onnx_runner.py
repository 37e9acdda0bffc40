"""onnxruntime runs what it can: an ONNX file newer than the runtime (IR version 14 from onnx 1.23) runs with
its IR version lowered in memory and a note; an opset the runtime lacks is one line with the limits and the fix."""

from __future__ import annotations

import hashlib
import re

import onnx
import onnxruntime as ort
import pytest

from tests.checks import assert_clean_error
from tests.conftest import run_cli
from tests.runners.conftest import ort_refuses


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _lowered_notes(notes: list[str]) -> list[str]:
    return [n for n in notes if "IR version 14" in n and "in memory" in n and "file is unchanged" in n]


def test_validate_runs_a_model_whose_ir_is_newer_than_the_runtime_and_says_so(onnx_cases):
    assert ort_refuses(onnx_cases.ir14)  # the runtime on its own cannot load it
    before = _digest(onnx_cases.ir14)
    result = run_cli("validate", onnx_cases.ir14, onnx_cases.base, "--json")
    assert result.code == 0, result.stderr
    report = result.json
    assert report["passed"]
    assert len(_lowered_notes(report["comparisons"][0]["notes"])) == 1
    assert _digest(onnx_cases.ir14) == before
    assert onnx.load(str(onnx_cases.ir14)).ir_version == 14


def test_a_newer_ir_with_external_data_runs_from_another_folder(onnx_cases, tmp_path):
    model = onnx_cases.ir14_external
    assert (model.parent / (model.name + ".data")).is_file() and ort_refuses(model)
    result = run_cli("validate", model, onnx_cases.base, "--json", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert result.json["passed"] and _lowered_notes(result.json["comparisons"][0]["notes"])
    assert sorted(p.name for p in model.parent.iterdir()) == [model.name, model.name + ".data"]


def test_layerwise_validation_of_a_newer_ir(onnx_cases):
    result = run_cli("validate", onnx_cases.ir14_external, onnx_cases.base, "--layerwise", "--json")
    assert result.code == 0, result.stderr
    assert result.json["passed"]


def test_benchmark_notes_the_lowered_ir(onnx_cases):
    result = run_cli("benchmark", onnx_cases.ir14, "--iterations", "3", "--warmup", "1", "--json")
    assert result.code == 0, result.stderr
    assert _lowered_notes(result.json["models"][0]["notes"])
    human = run_cli("benchmark", onnx_cases.ir14, "--iterations", "3", "--warmup", "1")
    assert human.code == 0 and "note: mlp_ir14.onnx is IR version 14" in human.stdout


def test_quantizing_a_newer_ir_writes_a_model_the_runtime_reads(onnx_cases, tmp_path):
    out = tmp_path / "int8.onnx"
    result = run_cli("quantize", onnx_cases.ir14, "-o", out, "--mode", "dynamic", "--json")
    assert result.code == 0, result.stderr
    assert _lowered_notes(result.json["notes"])
    assert not ort_refuses(out)


def test_an_opset_newer_than_the_runtime_is_one_line_with_the_limits_and_the_fix(onnx_cases):
    newest = onnx_cases.newest_opset
    stamped = onnx.load(str(onnx_cases.too_new))
    stamped.ir_version = 8
    if not ort_refuses(stamped.SerializeToString()):
        pytest.skip(f"this onnxruntime reads onnx's newest opset {newest}")
    for verb in (["validate", onnx_cases.too_new, onnx_cases.too_new], ["benchmark", onnx_cases.too_new]):
        result = run_cli(*verb)
        assert result.code == 2
        error = assert_clean_error(result)
        assert f"IR version 14 with ai.onnx opset {newest}" in error and f"onnxruntime {ort.__version__}" in error
        limits = re.search(r"reads up to IR version (\d+), ai\.onnx opset (\d+)", error)
        assert limits, error
        max_ir, max_opset = map(int, limits.groups())
        assert f"--opset {max_opset}" in result.stderr and "install an onnxruntime release" in result.stderr
    # the limits named are the runtime's real ones
    for ir, opset, refused in ((max_ir, max_opset, False), (max_ir + 1, max_opset, True), (max_ir, max_opset + 1, True)):
        stamped.ir_version, stamped.opset_import[0].version = ir, opset
        assert ort_refuses(stamped.SerializeToString()) == refused, (ir, opset)


def test_quantizing_an_opset_newer_than_the_runtime_is_one_line(onnx_cases, tmp_path):
    out = tmp_path / "int8.onnx"
    result = run_cli("quantize", onnx_cases.too_new, "-o", out, "--mode", "dynamic")
    assert result.code == 2
    assert f"ai.onnx opset {onnx_cases.newest_opset}" in assert_clean_error(result)
    assert list(tmp_path.iterdir()) == []
