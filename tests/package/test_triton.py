"""`mdeploy package --target triton`: the model repository, its config.pbtxt read back with Triton's official protobuf
and held against the model, the repository's own model file compared with the original, and every bad input through
the real CLI (exit 2, one error line, nothing written).

Models: tiny ONNX graphs built with onnx.helper (fixtures/onnx_graphs.py, fixtures/serving_graphs.py); a Keras model
from fixtures/tf_models.py for the format error; a TensorRT engine stood in for by dummy bytes plus the sidecar the
converter writes (the config is generated from the sidecar alone: nothing on that path loads TensorRT).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from fixtures import onnx_graphs, serving_graphs
from tests.checks import assert_clean_error
from tests.package.checks import files

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="the serving extra is not installed")


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("triton_models")
    mlp = onnx_graphs.mlp(d / "mlp.onnx")
    external = d / "external"
    external.mkdir()
    return {
        "mlp": mlp,
        "fixed": serving_graphs.fixed_batch_mlp(d / "fixed.onnx"),
        "tokens": serving_graphs.token_classifier(d / "tokens.onnx"),
        "float8": serving_graphs.float8_output(d / "float8.onnx"),
        "pooled": serving_graphs.pooled_over_batch(d / "pooled.onnx"),
        "external": onnx_graphs.restamped(mlp, external / "mlp_ext.onnx", external=True),
    }


def config(package: Path, name: str):
    """config.pbtxt parsed with tritonclient's ModelConfig (what Triton itself parses)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    return text_format.Parse((package / name / "config.pbtxt").read_text(), pb.ModelConfig()), pb


def test_dynamic_batch_repository(cli, models, tmp_path):
    out = tmp_path / "repo"
    result = cli("package", models["mlp"], "--target", "triton", "-o", out, "--instances", "2", "--json")
    assert result.code == 0, result.stderr
    report = result.json
    assert files(out) == ["README.md", "mlp/1/model.onnx", "mlp/config.pbtxt", "request.json"]
    assert (out / "mlp/1/model.onnx").read_bytes() == models["mlp"].read_bytes()
    c, pb = config(out, "mlp")
    assert (c.name, c.platform, c.max_batch_size) == ("mlp", "onnxruntime_onnx", 8)
    assert c.HasField("dynamic_batching")
    assert [(t.name, pb.DataType.Name(t.data_type), list(t.dims)) for t in c.input] == [("x", "TYPE_FP32", [16])]
    assert [(t.name, pb.DataType.Name(t.data_type), list(t.dims)) for t in c.output] == [("logits", "TYPE_FP32", [10])]
    assert [(g.count, pb.ModelInstanceGroup.Kind.Name(g.kind)) for g in c.instance_group] == [(2, "KIND_CPU")]
    assert list(c.version_policy.specific.versions) == [1]
    assert report["max_batch_size"] == 8 and report["passed"]
    assert report["checks"] and all(check["passed"] for check in report["checks"])
    [comparison] = report["comparisons"]
    assert comparison["passed"] and comparison["outputs"][0]["max_abs_error"] == 0
    body = json.loads((out / "request.json").read_text())
    [entry] = body["inputs"]
    assert entry["name"] == "x" and entry["datatype"] == "FP32" and entry["shape"][1:] == [16]
    assert len(entry["data"]) == int(np.prod(entry["shape"]))
    readme = (out / "README.md").read_text()
    assert "nvcr.io/nvidia/tritonserver" in readme and "/v2/models/mlp/infer" in readme and "-d @request.json" in readme


def test_fixed_batch_gets_max_batch_size_0_and_full_dims(cli, models, tmp_path):
    out = tmp_path / "repo"
    result = cli("package", models["fixed"], "--target", "triton", "-o", out, "--name", "digits", "--version", "3", "--json")
    assert result.code == 0, result.stderr
    assert "digits/3/model.onnx" in files(out)
    c, _ = config(out, "digits")
    assert c.max_batch_size == 0 and not c.HasField("dynamic_batching")
    assert [list(t.dims) for t in c.input] == [[1, 16]] and [list(t.dims) for t in c.output] == [[1, 10]]
    assert result.json["comparisons"][0]["passed"]


def test_int64_input_is_declared_int64_with_dynamic_dims(cli, models, tmp_path):
    out = tmp_path / "repo"
    result = cli("package", models["tokens"], "--target", "triton", "-o", out, "--max-batch-size", "4", "--json")
    assert result.code == 0, result.stderr
    c, pb = config(out, "tokens")
    assert c.max_batch_size == 4
    [ids] = c.input
    assert pb.DataType.Name(ids.data_type) == "TYPE_INT64" and list(ids.dims) == [-1]
    assert json.loads((out / "request.json").read_text())["inputs"][0]["datatype"] == "INT64"
    assert result.json["comparisons"][0]["passed"]


def test_input_overrides_shape_the_validation_not_the_config(cli, models, tmp_path):
    """--input fixes the validation shapes; the config still takes every shape the model takes."""
    out = tmp_path / "repo"
    result = cli("package", models["tokens"], "--target", "triton", "-o", out, "--input", "ids:3x5:int64", "--json")
    assert result.code == 0, result.stderr
    c, _ = config(out, "tokens")
    assert c.max_batch_size == 8 and [list(t.dims) for t in c.input] == [[-1]]
    assert json.loads((out / "request.json").read_text())["inputs"][0]["shape"] == [3, 5]
    assert result.json["comparisons"][0]["passed"]


def test_external_data_travels_with_the_model(cli, models, tmp_path):
    from mdeploy.core import Format, ModelRef
    from mdeploy.errors import MdeployError
    from mdeploy.packaging.triton_runner import TritonRepositoryRunner

    out = tmp_path / "repo"
    result = cli("package", models["external"], "--target", "triton", "-o", out, "--json")
    assert result.code == 0, result.stderr
    assert "mlp_ext/1/mlp_ext.onnx.data" in files(out)
    assert result.json["comparisons"][0]["passed"]
    # the package's runner is the real check that the file set is whole: without the data file it cannot load
    (out / "mlp_ext/1/mlp_ext.onnx.data").unlink()
    with pytest.raises(MdeployError):
        TritonRepositoryRunner(ModelRef(out / "mlp_ext/1/model.onnx", Format.ONNX), root=out / "mlp_ext")


def test_repository_runner_refuses_what_triton_refuses(cli, models, tmp_path):
    from mdeploy.core import Format, ModelRef
    from mdeploy.errors import InputError
    from mdeploy.packaging.triton_runner import TritonRepositoryRunner

    out = tmp_path / "repo"
    assert cli("package", models["mlp"], "--target", "triton", "-o", out, "--max-batch-size", "2").code == 0
    runner = TritonRepositoryRunner(ModelRef(out / "mlp/1/model.onnx", Format.ONNX), root=out / "mlp")
    x = np.ones((2, 16), np.float32)
    assert runner.infer({"x": x})["logits"].shape == (2, 10)
    with pytest.raises(InputError, match="max_batch_size 2"):
        runner.infer({"x": np.ones((3, 16), np.float32)})
    with pytest.raises(InputError, match="dtype"):
        runner.infer({"x": x.astype(np.float64)})


def test_config_check_finds_a_batch_dim_in_dims_and_a_wrong_type(models):
    """The static check is not a rubber stamp: the two classic config mistakes fail it."""
    from mdeploy.core import Format, ModelRef, TensorSpec
    from mdeploy.packaging import triton
    from mdeploy.packaging.base import Request

    request = Request(model=ModelRef(models["mlp"], Format.ONNX), inputs=[TensorSpec("x", ("batch", 16), "float32")],
                      outputs=[TensorSpec("logits", ("batch", 10), "float32")], name="mlp", version=1, max_batch_size=None,
                      instances=1, feeds=[])
    from google.protobuf import text_format

    good = text_format.MessageToString(triton.model_config(request))
    assert all(c["passed"] for c in triton.config_checks(good, request))
    batch_in_dims = good.replace("dims: 16", "dims: -1\n  dims: 16", 1)
    failed = [c for c in triton.config_checks(batch_in_dims, request) if not c["passed"]]
    assert [c["check"] for c in failed] == ["inputs: names, data types and dims match the model"]
    assert "dims [-1, 16]" in failed[0]["detail"]
    wrong_type = good.replace("TYPE_FP32", "TYPE_INT64", 1)
    details = " ".join(c.get("detail", "") for c in triton.config_checks(wrong_type, request))
    assert "x: TYPE_INT64 for a float32 tensor" in details
    assert not triton.config_checks("max_batch_size: eight", request)[0]["passed"]


def test_v2_encode_decode_round_trip():
    from mdeploy.packaging import v2_protocol

    feed = {"ids": np.arange(6, dtype=np.int64).reshape(2, 3), "x": np.linspace(0, 1, 4, dtype=np.float32).reshape(2, 2)}
    body = json.loads(v2_protocol.v2_encode(feed))
    answer = json.dumps({"outputs": [{**entry, "name": entry["name"]} for entry in body["inputs"]]}).encode()
    decoded = v2_protocol.v2_decode(answer)
    for name, array in feed.items():
        assert decoded[name].dtype == array.dtype and np.array_equal(decoded[name], array)


def test_fixed_batch_with_max_batch_size_is_refused(cli, models, tmp_path):
    out = tmp_path / "repo"
    result = cli("package", models["fixed"], "--target", "triton", "-o", out, "--max-batch-size", "4")
    assert_clean_error(result, "batch dimension", "fixed", "--dynamic x:0", out=out)


def test_a_dtype_triton_cannot_express_is_refused(cli, models, tmp_path):
    out = tmp_path / "repo"
    assert_clean_error(cli("package", models["float8"], "--target", "triton", "-o", out), "FLOAT8E4M3FN", "'y'", out=out)


def test_an_output_that_does_not_batch_is_refused(cli, models, tmp_path):
    out = tmp_path / "repo"
    result = cli("package", models["pooled"], "--target", "triton", "-o", out)
    assert_clean_error(result, "output 'y'", "fixed first dimension", "--max-batch-size 0", out=out)
    assert cli("package", models["pooled"], "--target", "triton", "-o", out, "--max-batch-size", "0").code == 0
    c, _ = config(out, "pooled")
    assert c.max_batch_size == 0 and [list(t.dims) for t in c.output] == [[1, 4]] and [list(t.dims) for t in c.input] == [[-1, 4]]


def test_data_types_agree_with_tritonclient():
    """The v2 datatype and config DataType of every numpy type, held against tritonclient's own mapping."""
    from tritonclient.grpc import model_config_pb2 as pb
    from tritonclient.utils import np_to_triton_dtype, triton_to_np_dtype

    from mdeploy.packaging import v2_protocol

    for name, (config_type, v2) in v2_protocol.DTYPES.items():
        assert config_type in pb.DataType.keys()
        if name in ("bfloat16", "str"):
            continue  # numpy has no bfloat16; str and object are both BYTES
        assert np_to_triton_dtype(np.dtype(name)) == v2, name
        assert np.dtype(triton_to_np_dtype(v2)) == np.dtype(name), name
        assert config_type == ("TYPE_STRING" if v2 == "BYTES" else f"TYPE_{v2}")


@pytest.fixture(scope="session")
def keras_model(tmp_path_factory) -> Path:
    pytest.importorskip("tensorflow", reason="the tensorflow extra is not installed")
    from fixtures import tf_models

    path = tmp_path_factory.mktemp("keras") / "classifier.keras"
    tf_models.image_classifier().save(path)
    return path


def test_keras_model_is_refused_with_the_conversion(cli, keras_model, tmp_path):
    out = tmp_path / "repo"
    result = cli("package", keras_model, "--target", "triton", "-o", out)
    assert_clean_error(result, "triton cannot serve a keras model", "mdeploy convert", ".onnx", out=out)


@pytest.mark.skipif(shutil.which("tritonserver") is not None, reason="tritonserver is installed here")
def test_smoke_test_without_tritonserver_is_refused_before_writing(cli, models, tmp_path):
    out = tmp_path / "repo"
    result = cli("package", models["mlp"], "--target", "triton", "-o", out, "--smoke-test")
    assert_clean_error(result, "tritonserver is not on PATH", "nvcr.io/nvidia/tritonserver", out=out)


def test_force_rerun_leaves_the_same_file_set(cli, models, tmp_path):
    out = tmp_path / "repo"
    assert cli("package", models["external"], "--target", "triton", "-o", out).code == 0
    first = files(out)
    again = cli("package", models["external"], "--target", "triton", "-o", out)
    assert again.code == 2 and "--force" in again.stderr and files(out) == first
    assert cli("package", models["external"], "--target", "triton", "-o", out, "--force").code == 0
    assert files(out) == first
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # not the staging folder's private 0700: servers read it


def test_tensorrt_engine_config_from_its_sidecar(cli, tmp_path):
    """Config generation only: the engine's I/O and profile come from the sidecar the converter writes; the engine
    bytes are a stand-in (nothing on this path deserializes them, and TensorRT cannot run here)."""
    from mdeploy.frameworks import tensorrt_env

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not a real engine: config generation reads only the sidecar")
    tensorrt_env.write_sidecar(engine, {
        "tensorrt_version": "10.13.0.35", "gpu": {"name": "NVIDIA H200", "compute_capability": "9.0"}, "flags": {},
        "profiles": [{"name": "image", "min": [1, 3, 32, 32], "opt": [4, 3, 32, 32], "max": [16, 3, 32, 32], "source": "test"}],
        "inputs": [{"name": "image", "shape": [-1, 3, 32, 32], "dtype": "float"}],
        "outputs": [{"name": "logits", "shape": [-1, 10], "dtype": "float"}],
    })
    out = tmp_path / "repo"
    result = cli("package", engine, "--target", "triton", "-o", out, "--json")
    assert result.code == 0, result.stderr
    assert files(out) == ["README.md", "m/1/model.plan", "m/config.pbtxt", "request.json"]
    c, pb = config(out, "m")
    assert (c.platform, c.max_batch_size) == ("tensorrt_plan", 8)
    assert [list(t.dims) for t in c.input] == [[3, 32, 32]] and [list(t.dims) for t in c.output] == [[10]]
    assert pb.ModelInstanceGroup.Kind.Name(c.instance_group[0].kind) == "KIND_GPU"
    assert any(s["name"] == "package vs model" and s["status"] == "skipped" for s in result.json["steps"])
    assert "docker run --rm --gpus all" in (out / "README.md").read_text()
    too_big = cli("package", engine, "--target", "triton", "-o", tmp_path / "big", "--max-batch-size", "32")
    assert_clean_error(too_big, "profile", "stops at batch 16", out=tmp_path / "big")


def test_a_model_newer_than_the_images_onnxruntime_fails_its_check(cli, models, tmp_path):
    """Opset 23 loads in this onnxruntime but not in the one inside the README's Triton image: exit 1, and the check
    names the fix (the package is still written, as every failed check leaves it, for the user to look at)."""
    newer = onnx_graphs.restamped(models["mlp"], tmp_path / "newer.onnx", opset=23)
    out = tmp_path / "repo"
    result = cli("package", newer, "--target", "triton", "-o", out, "--json")
    assert result.code == 1, result.stderr
    [check] = [c for c in result.json["checks"] if "inside" in c["check"]]
    assert not check["passed"] and "opset 23 > 21" in check["detail"] and "--opset 21" in check["detail"]
    assert "FAILED" in (out / "README.md").read_text()
    ok = cli("package", models["mlp"], "--target", "triton", "-o", tmp_path / "ok", "--json")
    [check] = [c for c in ok.json["checks"] if "inside" in c["check"]]
    assert check["passed"] and "opset" in check["detail"]
