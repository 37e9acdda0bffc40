"""Framework failures reach the user as one `error:` line plus a hint: never onnxruntime's C++ signature,
a source path of the framework's own code, or its status prefix."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mdeploy.errors import first_line
from tests.checks import CXX_SIGNATURE, SOURCE_PATH, assert_clean_error
from tests.conftest import run_cli


def _raised(call) -> Exception:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the framework's own exception is what is tested
        return exc
    raise AssertionError("the framework did not fail")


def _session(model):
    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])


def test_first_line_drops_signatures_and_source_paths_from_real_onnxruntime_errors(onnx_cases):
    stamped = onnx.load(str(onnx_cases.base))
    stamped.opset_import[0].version = 999
    cases = [
        (_raised(lambda: _session(onnx_cases.ir14)), "Unsupported model IR version: 14, max supported IR version: 13"),
        (_raised(lambda: _session(onnx_cases.opset999)), "Opset 999 is under development"),
        (
            _raised(lambda: _session(onnx_cases.bad_reshape).run(None, {"x": np.ones(3, np.float32)})),
            "The input tensor cannot be reshaped to the requested shape. Input shape:{3}, requested shape:{5}",
        ),
    ]
    for exc, kept in cases:
        raw = str(exc)
        assert CXX_SIGNATURE.search(raw) and SOURCE_PATH.search(raw)  # what the raw text carries
        line = first_line(exc)
        assert kept in line, line
        assert not CXX_SIGNATURE.search(line) and not SOURCE_PATH.search(line), line
        assert "[ONNXRuntimeError]" not in line and "\n" not in line


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("validate", "{dangling}", "{dangling}"), ["Node input 'ghost'"]),
        (("validate", "{opset999}", "{base}"), ["ai.onnx opset 999", "reads up to"]),
        (("validate", "{bad_reshape}", "{bad_reshape}"), ["Reshape", "requested shape:{5}"]),
        (("benchmark", "{bad_reshape}", "--iterations", "2"), ["Reshape", "requested shape:{5}"]),
        (("validate", "{base}", "{dangling}", "--layerwise"), ["Node input 'ghost'"]),
    ],
    ids=["dangling-input", "opset-999", "kernel-failure", "benchmark-kernel-failure", "layerwise-dangling"],
)
def test_cli_reports_framework_failures_as_one_clean_line(onnx_cases, args, words):
    paths = {name: str(getattr(onnx_cases, name)) for name in ("base", "dangling", "opset999", "bad_reshape")}
    result = run_cli(*(a.format(**paths) for a in args))
    assert result.code == 2, result.stderr
    error = assert_clean_error(result)
    assert all(w in error for w in words), error
    assert "hint: " in result.stderr
