"""Benchmark fixtures: tiny hand-built ONNX models (no torch), built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def bench_models(tmp_path_factory) -> dict[str, Path]:
    from fixtures import onnx_graphs
    from mdeploy.core import ModelRef
    from mdeploy.quantization.onnx_quantize import OnnxQuantize, OnnxQuantizeOptions

    out = tmp_path_factory.mktemp("bench")
    fp32 = onnx_graphs.mlp(out / "mlp.onnx")
    int8 = out / "mlp_int8.onnx"
    OnnxQuantize().run(ModelRef.parse(str(fp32)), int8, OnnxQuantizeOptions(mode="dynamic"))
    return {"fp32": fp32, "int8": int8}
