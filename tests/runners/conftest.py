"""ONNX models that a runtime refuses in different ways, built once per session from the tiny MLP."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

CXX_SIGNATURE = re.compile(r"\w::\w")
SOURCE_PATH = re.compile(r"\.(?:cc|cpp|cxx|h|hpp|cu)(?::\d+|\b)")


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


def assert_one_clean_error(stderr: str) -> str:
    """stderr is one `error:` line and at most one `hint:` line, with no C++ signature, framework source path,
    onnxruntime status prefix or traceback. Returns the error line."""
    lines = stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, stderr
    assert lines[0].startswith("error: "), stderr
    if len(lines) == 2:
        assert lines[1].startswith("hint: "), stderr
    assert not CXX_SIGNATURE.search(stderr), stderr
    assert not SOURCE_PATH.search(stderr), stderr
    assert "[ONNXRuntimeError]" not in stderr and "Traceback" not in stderr, stderr
    return lines[0]
