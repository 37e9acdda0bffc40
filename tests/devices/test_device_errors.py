"""Every `--device cuda` a machine cannot honour is one `error:` line (+ `hint:`) and exit 2, through the real CLI:
torch without CUDA, onnxruntime without its CUDA provider (naming onnxruntime-gpu), TFLite (CPU only), TensorFlow
without a GPU build. A bad model is still reported as a bad model first. Each test is skipped where the machine can
honour the device (there the gpu-marked tests run instead)."""

from __future__ import annotations

import json

import pytest

from tests.checks import assert_clean_error
from tests.conftest import run_cli
from tests.devices.conftest import ort_cuda_reason, torch_cuda_reason


@pytest.fixture(scope="module")
def no_torch_cuda():
    if torch_cuda_reason() is None:
        pytest.skip("torch sees a CUDA device here: the gpu-marked tests cover it")


@pytest.fixture(scope="module")
def no_ort_cuda():
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime has its CUDA provider here")


@pytest.mark.parametrize("verb", ["validate", "benchmark"])
def test_torch_without_cuda_is_one_line_exit_2(no_torch_cuda, models, verb):
    import torch

    args = (models["pt2"], models["pt"]) if verb == "validate" else (models["pt2"], "--iterations", "1")
    result = run_cli(verb, *args, "--device", "cuda", "--json")
    assert result.code == 2, result.stderr
    assert json.loads(result.stdout)["code"] == 2  # --json: the error as one object
    line = assert_clean_error(result)
    assert line.startswith("error: --device cuda: torch ") and torch.__version__ in line
    if not torch.version.cuda:
        assert "CPU-only build" in line and "CUDA build of torch" in result.stderr


@pytest.mark.parametrize("verb", ["validate", "benchmark"])
def test_onnxruntime_without_its_cuda_provider_names_onnxruntime_gpu(no_ort_cuda, models, verb):
    import onnxruntime

    args = (models["onnx"], models["onnx"]) if verb == "validate" else (models["onnx"], "--iterations", "1")
    result = run_cli(verb, *args, "--device", "cuda")
    assert result.code == 2, result.stderr
    line = assert_clean_error(result)
    assert "onnxruntime-gpu" in line and f"onnxruntime {onnxruntime.__version__}" in line and "no CUDA provider" in line
    assert "pip install onnxruntime-gpu" in result.stderr


def test_the_flag_that_chose_the_device_is_named(no_ort_cuda, models):
    """--ref-device cuda puts the reference on CUDA: the error names that flag, not --device."""
    result = run_cli("validate", models["onnx"], models["onnx"], "--ref-device", "cuda", "--cand-device", "cpu")
    assert result.code == 2
    assert assert_clean_error(result).startswith("error: --ref-device cuda: onnxruntime")


def test_a_corrupt_model_is_reported_before_the_missing_gpu(no_torch_cuda, models, tmp_path):
    bad = tmp_path / "broken.pt2"
    bad.write_bytes(b"not a zip archive")
    result = run_cli("validate", models["pt2"], bad, "--device", "cuda")
    assert result.code == 2
    line = assert_clean_error(result)
    assert "not a torch.export archive" in line and "cuda" not in line.lower()


def test_tflite_runs_on_the_cpu_only(tf_models):
    result = run_cli("benchmark", tf_models["tflite"], "--iterations", "1", "--device", "cuda")
    assert result.code == 2
    line = assert_clean_error(result)
    assert line.startswith("error: --device cuda: TFLite models run on the CPU only")
    # the reference (Keras) on the CPU, the TFLite candidate asked on CUDA: refused the same way
    result = run_cli("validate", tf_models["keras"], tf_models["tflite"], "--cand-device", "cuda")
    assert result.code == 2
    assert assert_clean_error(result).startswith("error: --cand-device cuda: TFLite models run on the CPU only")


def test_a_corrupt_tflite_is_reported_as_corrupt_even_on_cuda(tmp_path):
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"\x00" * 64)
    result = run_cli("benchmark", bad, "--device", "cuda")
    assert result.code == 2
    assert "CPU only" not in assert_clean_error(result)


def test_tensorflow_without_a_gpu(tf_models):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("TensorFlow sees a GPU here")
    result = run_cli("validate", tf_models["keras"], tf_models["keras"], "--device", "cuda")
    assert result.code == 2
    line = assert_clean_error(result)
    assert line.startswith(f"error: --device cuda: TensorFlow {tf.__version__}")
    assert ("CPU-only build" in line) == (not tf.test.is_built_with_cuda())


def test_layerwise_refuses_a_cuda_side(models):
    result = run_cli("validate", models["onnx"], models["onnx"], "--layerwise", "--cand-device", "cuda")
    assert result.code == 2
    assert assert_clean_error(result) == "error: --layerwise runs on the CPU"


def test_an_unknown_device_is_refused_by_name(models):
    result = run_cli("validate", models["onnx"], models["onnx"], "--ref-device", "gpu", "--json")
    assert result.code == 2 and "--ref-device" in json.loads(result.stdout)["error"]
    assert "--ref-device" in assert_clean_error(result) and "cpu|cuda" in result.stderr


def test_cpu_benchmark_rows_keep_their_fields(models):
    """The CPU path is unchanged: no GPU fields, no timing note, host memory as before."""
    result = run_cli("benchmark", models["onnx"], "--iterations", "3", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    row = report["models"][0]
    assert not [k for k in row if k.startswith("gpu_")] and "timing" not in report["settings"]
    assert row["peak_rss_bytes"] > 0 and row["peak_memory_bytes"] >= 0 and report["settings"]["device"] == "cpu"
