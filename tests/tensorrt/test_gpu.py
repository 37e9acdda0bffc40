"""Builds and runs real engines: only where TensorRT and a CUDA device exist (extra to the CPU coverage, which never
counts on these). Skipped with the reason elsewhere."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.tensorrt.conftest import cuda_reason

pytestmark = [pytest.mark.gpu]


@pytest.fixture(scope="session")
def gpu_ready():  # session scope: checked before the session-scoped models are built
    reason = cuda_reason()
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize(("precision", "model"), [("fp32", "mlp"), ("fp16", "mlp"), ("int8", "qdq_tensorrt")])
def test_convert_builds_an_engine_that_validates_against_onnx(gpu_ready, cli, models, tmp_path, precision, model):
    engine = tmp_path / f"m.{precision}.engine"
    cache = tmp_path / "timing.cache"
    result = cli("convert", models[model], "-o", engine, "--shapes", "x:1x16:4x16:8x16", "--precision", precision,
                 "--timing-cache", cache, "--json")
    assert result.code == 0, result.stderr
    assert engine.is_file() and cache.is_file()
    record = json.loads((tmp_path / f"m.{precision}.engine.json").read_text())
    assert record["profiles"][0]["max"] == [8, 16] and record["flags"]["precision"] == precision
    assert result.json["comparisons"] and all(c["passed"] for c in result.json["comparisons"])


def test_the_runner_runs_inside_the_profile_and_refuses_outside(gpu_ready, cli, models, tmp_path):
    import onnxruntime as ort

    from mdeploy import registry
    from mdeploy.core import Format, ModelRef
    from mdeploy.errors import InputError

    engine = tmp_path / "m.plan"
    assert cli("convert", models["mlp"], "-o", engine, "--shapes", "x:1x16:4x16:8x16", "--no-validate").code == 0
    runner = registry.open_runner(ModelRef(engine, Format.TENSORRT), device="cuda")
    x = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    expected = ort.InferenceSession(str(models["mlp"]), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(runner.infer({"x": x})["logits"], expected, atol=1e-3, rtol=1e-3)
    with pytest.raises(InputError, match="outside the engine's profile"):
        runner.infer({"x": np.zeros((9, 16), np.float32)})
