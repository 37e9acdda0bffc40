"""Runs on CUDA for real: only where torch sees a CUDA device (and, for the onnxruntime tests, onnxruntime-gpu is
installed). Skipped with the reason elsewhere; the CPU coverage never counts on these. benchmarks/gpu_check.sh runs
them on a GPU machine."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.devices.conftest import ort_cuda_reason, torch_cuda_reason

pytestmark = [pytest.mark.gpu]


@pytest.fixture(scope="session")
def torch_cuda():  # session scope: checked before the session-scoped models are built
    reason = torch_cuda_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def ort_cuda():
    reason = ort_cuda_reason()
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize(("ref", "cand"), [("pt2", "pt2"), ("pt", "pt2")])
def test_torch_cpu_against_torch_cuda(torch_cuda, models, ref, cand):
    """--device cuda: the reference on the CPU, the candidate (a torch.export program, moved whole) on CUDA, within the
    float32 tolerance (TF32 is off). --input gives the TorchScript reference its shapes."""
    result = run_cli("validate", models[ref], models[cand], "--device", "cuda", "--input", "image:4x3x32x32",
                     "--samples", "3", "--json")
    assert result.code == 0, result.stderr
    report = result.json
    assert (report["reference_device"], report["candidate_device"]) == ("cpu", "cuda")
    assert report["passed"], json.dumps(report["comparisons"], indent=1)[:2000]
    assert "TF32 off" in result.stdout  # the candidate runner's note, carried into the comparison


@pytest.mark.parametrize("kind", ["pt2", "pt"])
def test_the_torch_runner_moves_the_model_and_returns_numpy(torch_cuda, models, kind):
    """A torch.export program (move_to_device_pass) and a traced TorchScript archive (.to) run on CUDA and give the
    CPU's numbers back as numpy arrays."""
    import torch

    from mdeploy import registry
    from mdeploy.core import ModelRef, TensorSpec

    image = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    specs = [TensorSpec.parse("image:4x3x32x32")]
    cpu = registry.open_runner(ModelRef.parse(str(models[kind])), "cpu", specs)
    gpu = registry.open_runner(ModelRef.parse(str(models[kind])), "cuda", specs)
    assert all(p.device.type == "cuda" for p in gpu.model.module.parameters())
    assert all(b.device.type == "cuda" for b in gpu.model.module.buffers())
    want, got = cpu.infer({"image": image}), gpu.infer({"image": image})
    assert set(got) == set(want) and all(isinstance(v, np.ndarray) for v in got.values())
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5)
    assert gpu.last_latency_s > 0 and torch.cuda.memory_allocated() > 0


def test_benchmark_on_cuda_reports_gpu_and_host_memory(torch_cuda, models):
    result = run_cli("benchmark", models["pt2"], "--device", "cuda", "--batch", "8", "--iterations", "20", "--json")
    assert result.code == 0, result.stderr
    report = result.json
    (row,) = report["models"]
    assert report["settings"]["device"] == "cuda" and "synchronized" in report["settings"]["timing"]
    assert row["gpu_memory_source"] == "torch.cuda.max_memory_allocated"
    weights = sum(p.nbytes for p in _cnn_arrays())
    assert row["gpu_memory_bytes"] >= weights  # at least its weights, on the GPU
    assert row["peak_rss_bytes"] > 0 and row["latency_ms"]["p50"] > 0 and row["iterations"] == 20


def _cnn_arrays() -> list[np.ndarray]:
    from fixtures.models import tiny_cnn

    return [t.detach().numpy() for t in tiny_cnn.build().state_dict().values() if t.is_floating_point()]


def test_onnx_cpu_against_onnxruntime_cuda(ort_cuda, models):
    result = run_cli("validate", models["onnx"], models["onnx"], "--device", "cuda", "--samples", "3", "--json")
    assert result.code == 0, result.stderr
    assert (result.json["reference_device"], result.json["candidate_device"]) == ("cpu", "cuda")
    assert result.json["passed"] and "CUDAExecutionProvider" in result.stdout


def test_benchmark_onnxruntime_on_cuda(ort_cuda, models):
    result = run_cli("benchmark", models["onnx"], "--device", "cuda", "--iterations", "20", "--json")
    assert result.code == 0, result.stderr
    (row,) = result.json["models"]
    if row["gpu_memory_source"] is None:  # no pynvml, or NVML does not list this process: said in a note
        assert row["gpu_memory_bytes"] is None and any("GPU memory of onnxruntime not measured" in n for n in row["notes"])
    else:
        assert row["gpu_memory_source"] == "nvml" and row["gpu_memory_bytes"] >= 0
