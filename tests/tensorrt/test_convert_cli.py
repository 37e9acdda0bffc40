"""`mdeploy convert X.onnx -o X.engine` through the real CLI on a CPU machine: every input problem gets its own exit-2
message first; then the missing GPU/TensorRT; never a traceback, never a file left behind."""

from __future__ import annotations

import json
import os

import pytest

from tests.checks import assert_clean_error
from tests.tensorrt.conftest import HAS_TENSORRT

no_trt = pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here: the environment error does not happen")


@pytest.fixture
def out(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def test_a_corrupt_model_is_refused_before_anything(cli, out):
    bad = out.parent / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all" * 10)
    assert "not a valid ONNX model" in assert_clean_error(cli("convert", bad, "-o", out / "m.engine", "--shapes", "x:1x16:8x16:32x16"))
    assert os.listdir(out) == []


@pytest.mark.parametrize(("args", "says"), [
    (["--shapes", "x:1x16:8x16"], "--shapes 'x:1x16:8x16': not NAME:MIN:OPT:MAX"),
    (["--shapes", "x:1x15:8x16:32x16"], "MIN 1x15 has 15 on axis 1, where input x[batch, 16] fixes 16"),
    (["--shapes", "y:1x16:8x16:32x16"], "--shapes names y, which is not an input"),
    (["--shapes", "x:1x16:8x16:32x16", "--workspace", "lots"], "cannot read --workspace 'lots'"),
    (["--shapes", "x:1x16:8x16:32x16", "--builder-optimization-level", "6"], "TensorRT's levels are 0 to 5"),
])
def test_bad_shapes_and_options_are_input_errors(cli, models, out, args, says):
    assert says in assert_clean_error(cli("convert", models["mlp"], "-o", out / "m.engine", *args))
    assert os.listdir(out) == []


@pytest.mark.parametrize(("value", "says"), [
    ("x:1:4:8", "error: --shapes 'x:1:4:8': MIN 1 has 1 dim, but input x[batch, 16] has 2"),
    ("x:1x16:4x16:8", "error: --shapes 'x:1x16:4x16:8': MIN, OPT and MAX have different ranks (2, 2, 1)"),
    ("x:8x16:4x16:32x16", "error: --shapes 'x:8x16:4x16:32x16': MIN <= OPT <= MAX does not hold (axis 0: 8, 4, 32)"),
    ("x:0x16:4x16:8x16", "error: --shapes 'x:0x16:4x16:8x16': the shape '0x16' has a dim below 1"),
    ("1x16:4x16:8x16", "error: --shapes '1x16:4x16:8x16': not NAME:MIN:OPT:MAX"),
])
def test_a_spec_of_the_wrong_form_is_quoted_with_an_example_for_the_input(cli, models, out, value, says):
    """The spec as given, what is wrong with it, and a spec of the right form for this model's input: all before
    TensorRT is needed (it is not installed here)."""
    result = cli("convert", models["mlp"], "-o", out / "m.engine", "--shapes", value)
    assert says in assert_clean_error(result)
    lines = result.stderr.strip().splitlines()
    assert lines[0] == says and lines[1].startswith("hint: ") and lines[1].endswith("e.g. --shapes x:1x16:8x16:32x16")
    assert os.listdir(out) == []


def test_a_dynamic_input_without_a_range_is_named(cli, models, out):
    result = cli("convert", models["mlp"], "-o", out / "m.plan")
    assert "input x[batch, 16] has dynamic axis 0 and nothing sets its range" in assert_clean_error(result)
    assert "hint: give --shapes x:1x16:8x16:32x16" in result.stderr
    result = cli("convert", models["two_inputs"], "-o", out / "m.engine", "--shapes", "tokens:1x1:2x8:4x16",
                 "--dynamic", "bias:0")
    assert "input bias[4] has dynamic axis 0" in assert_clean_error(result)  # --dynamic on an axis the model fixes still needs a range
    assert os.listdir(out) == []


def test_a_float_model_with_int8_points_to_quantize_for_tensorrt(cli, models, out):
    result = cli("convert", models["mlp"], "-o", out / "m.engine", "--shapes", "x:1x16:8x16:32x16", "--precision", "int8")
    assert "mlp.onnx is a float model and --precision int8 builds from the model's Q/DQ nodes" in assert_clean_error(result)
    assert "--target tensorrt" in result.stderr.splitlines()[1]
    assert os.listdir(out) == []


def test_a_qdq_model_for_the_cpu_breaks_tensorrt_rules_before_the_environment(cli, models, out):
    result = cli("convert", models["qdq_cpu"], "-o", out / "m.engine", "--input", "x:4x16", "--precision", "int8")
    assert "breaks TensorRT's Q/DQ rules" in assert_clean_error(result)
    assert "DequantizeLinear" in result.stderr
    assert os.listdir(out) == []


def test_a_qdq_model_is_not_converted_to_float16(cli, models, out):
    result = cli("convert", models["qdq_tensorrt"], "-o", out / "m.engine", "--input", "x:4x16", "--precision", "fp16")
    assert "carries Q/DQ nodes and --precision fp16 would convert it to float16 first" in assert_clean_error(result)
    assert os.listdir(out) == []


@no_trt
@pytest.mark.parametrize("case", ["fp32", "fp16", "int8", "existing"])
def test_then_the_missing_gpu_is_the_error_and_nothing_is_written(cli, models, out, case):
    target = out / "m.engine"
    before = {p: p.read_bytes() for p in models.values()}
    if case == "int8":
        args = [models["qdq_tensorrt"], "-o", target, "--input", "x:4x16", "--precision", "int8"]
    else:
        args = [models["mlp"], "-o", target, "--shapes", "x:1x16:8x16:32x16", "--timing-cache", out / "trt.cache",
                "--version-compatible", "--hardware-compatibility", "ampere+", "--builder-optimization-level", "5",
                "--refittable", "--workspace", "1G", "--precision", "fp32" if case != "fp16" else "fp16"]
    if case == "existing":
        target.write_bytes(b"an older engine")
        args.append("--force")
    result = cli("convert", *args, "--json")
    assert "building a TensorRT engine needs an NVIDIA GPU and the tensorrt package" in assert_clean_error(result)
    assert result.stderr.splitlines()[1] == "hint: pip install 'mdeploy[tensorrt]'"
    assert json.loads(result.stdout)["hint"] == "pip install 'mdeploy[tensorrt]'"  # --json: the error as one object
    assert sorted(os.listdir(out)) == (["m.engine"] if case == "existing" else [])
    if case == "existing":
        assert target.read_bytes() == b"an older engine"  # replaced only by a build that succeeded
    assert {p: p.read_bytes() for p in models.values()} == before  # inputs never modified


@no_trt
def test_plugins_lists_the_tensorrt_converter_and_runner_as_unavailable(cli):
    result = cli("plugins", "--json")
    assert result.code == 0, result.stderr
    rows = {(r["group"], r["name"]): r for r in json.loads(result.stdout)["plugins"]}
    for key in (("converters", "onnx_to_tensorrt"), ("runners", "tensorrt")):
        assert rows[key]["status"] == "unavailable"
        assert "tensorrt package is not installed" in rows[key]["reason"]
    assert rows[("converters", "onnx_to_tensorrt")]["edge"] == "onnx -> tensorrt"
    assert rows[("runners", "onnxruntime")]["status"] == "ok" and rows[("runners", "onnxruntime")]["reason"] is None
    shown = cli("plugins")
    assert shown.code == 0 and "unavailable" in shown.stdout


@no_trt
def test_running_an_engine_without_a_gpu_is_one_clear_line(cli, tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 64)
    result = cli("benchmark", engine, "--iterations", "1")
    assert "running a TensorRT engine needs an NVIDIA GPU and the tensorrt package" in assert_clean_error(result)


@no_trt
def test_a_torch_model_goes_through_onnx_to_the_same_checks(cli, out):
    from tests.conftest import factory

    args = ["convert", factory("tiny_cnn"), "-o", out / "cnn.engine", "--dynamic", "image:0"]
    assert "input image[batch, 3, 32, 32] has dynamic axis 0 and nothing sets its range" in assert_clean_error(cli(*args))
    assert "building a TensorRT engine needs an NVIDIA GPU" in assert_clean_error(cli(*args, "--shapes", "image:1x3x32x32:4x3x32x32:8x3x32x32"))
    assert os.listdir(out) == []  # the intermediate ONNX lived in the staging folder only
