"""ONNX models that a runtime refuses in different ways, built once per session from the tiny MLP."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class OnnxCases:
    base: Path  # IR 8, ai.onnx opset 17: what every runtime reads
    ir14: Path  # the same graph as onnx 1.23 saves it: IR 14, opset 17
    ir14_external: Path  # IR 14 with its weights in an external data file
    too_new: Path  # IR 14 with onnx's newest opset (newer than the runtime's)
    newest_opset: int
    opset999: Path
    dangling: Path  # a node input nothing produces
    bad_reshape: Path  # loads, fails inside a kernel at run time


@pytest.fixture(scope="session")
def onnx_cases(tmp_path_factory) -> OnnxCases:
    import onnx

    from fixtures import onnx_graphs

    out = tmp_path_factory.mktemp("onnx_cases")
    base = onnx_graphs.mlp(out / "mlp.onnx")
    external = out / "external"
    external.mkdir()
    newest = onnx.defs.onnx_opset_version()
    return OnnxCases(
        base=base,
        ir14=onnx_graphs.restamped(base, out / "mlp_ir14.onnx", ir_version=14),
        ir14_external=onnx_graphs.restamped(base, external / "mlp_ir14.onnx", ir_version=14, external=True),
        too_new=onnx_graphs.restamped(base, out / "mlp_too_new.onnx", ir_version=14, opset=newest),
        newest_opset=newest,
        opset999=onnx_graphs.restamped(base, out / "mlp_opset999.onnx", opset=999),
        dangling=onnx_graphs.dangling_input(base, out / "mlp_dangling.onnx"),
        bad_reshape=onnx_graphs.bad_reshape(out / "bad_reshape.onnx"),
    )


def ort_refuses(model: Path | bytes) -> bool:
    """Does onnxruntime itself (no mdeploy in between) refuse to load this model?"""
    import onnxruntime as ort

    try:
        ort.InferenceSession(model if isinstance(model, bytes) else str(model), providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - any refusal counts
        return True
    return False
