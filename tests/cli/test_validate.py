"""`mdeploy validate`: any two models with runners, data or random inputs, reports CI can keep."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from tests.checks import assert_clean_error
from tests.conftest import EDGE, factory, run_cli


def test_pt2_and_its_onnx_export_agree_on_random_samples(artifacts, cnn_onnx):
    result = run_cli("validate", artifacts / "tiny_cnn.pt2", cnn_onnx, "--samples", "3", "--json")
    assert result.code == 0, result.stderr
    report = result.json
    assert report["passed"] and report["samples"] == 3
    out = report["comparisons"][0]["outputs"][0]
    assert out["total"] == 30  # 3 samples x 10 classes
    assert out["top1_agreement"] == 1.0
    assert out["ref_nonfinite"] == 0 and out["cand_nonfinite"] == 0
    assert len(report["inputs_sha256"]) == 64 and report["seed"] == 0


def test_same_seed_same_inputs_hash(cnn_onnx):
    a = run_cli("validate", cnn_onnx, cnn_onnx, "--json").json
    b = run_cli("validate", cnn_onnx, cnn_onnx, "--json", "--seed", "0").json
    c = run_cli("validate", cnn_onnx, cnn_onnx, "--json", "--seed", "7").json
    assert a["inputs_sha256"] == b["inputs_sha256"] != c["inputs_sha256"]


def test_a_different_model_exits_1_and_names_the_output(tmp_path, cnn_onnx):
    """Same architecture, other weights (a real bug: the wrong checkpoint): must fail, listing the output."""
    perturbed = tmp_path / "perturbed.py"
    perturbed.write_text(
        "import torch\n"
        f"import sys; sys.path.insert(0, {str(EDGE.parent)!r})\n"
        "import tiny_cnn\n"
        "def build():\n"
        "    m = tiny_cnn.build()\n"
        "    with torch.no_grad():\n"
        "        m.head.bias += 0.05\n"
        "    return m\n"
        "example_inputs = tiny_cnn.example_inputs\n"
    )
    result = run_cli("validate", f"{perturbed}:build", cnn_onnx, "--json")
    assert result.code == 1
    out = result.json["comparisons"][0]["outputs"][0]
    assert not out["passed"] and out["max_abs_error"] == pytest.approx(0.05, rel=1e-2)
    human = run_cli("validate", f"{perturbed}:build", cnn_onnx)
    assert human.code == 1 and "FAILED" in human.stdout and "output" in human.stdout


def test_validate_with_data_file_keyed_by_input_name(tmp_path, encoder_onnx, artifacts):
    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, input_ids=rng.integers(0, 1000, (4, 24)).astype(np.int64), attention_mask=np.ones((4, 24), np.int64))
    result = run_cli("validate", artifacts / "text_encoder.pt2", encoder_onnx, "--data", data, "--json")
    assert result.code == 0, result.stderr
    assert {o["name"] for o in result.json["comparisons"][0]["outputs"]} == {"logits", "last_hidden_state"}


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"input_ids": np.zeros((2, 8), np.int64)}, "missing attention_mask"),
        ({"input_ids": np.zeros((2, 8), np.int32), "attention_mask": np.ones((2, 8), np.int64)}, "dtype int32"),
        ({"input_ids": np.zeros((2, 8, 1), np.int64), "attention_mask": np.ones((2, 8), np.int64)}, "rank"),
        ({"input_ids": np.zeros((2, 8), np.int64), "attention_mask": np.ones((2, 8), np.int64), "extra": np.zeros(2)}, "unknown extra"),
    ],
)
def test_data_that_does_not_fit_is_an_error_never_cast(tmp_path, encoder_onnx, arrays, message):
    data = tmp_path / "bad.npz"
    np.savez(data, **arrays)
    result = run_cli("validate", encoder_onnx, encoder_onnx, "--data", data)
    assert_clean_error(result, message)


def test_random_token_ids_stay_below_the_vocabulary(encoder_onnx):
    """onnxruntime's Gather fails on out-of-range ids; 5 samples of random ids must all be valid."""
    result = run_cli("validate", encoder_onnx, encoder_onnx, "--samples", "5", "--json")
    assert result.code == 0, result.stderr
    assert result.json["comparisons"][0]["outputs"][0]["max_abs_error"] == 0.0


def test_reports_in_json_markdown_and_junit(tmp_path, artifacts, cnn_onnx):
    for suffix in ("json", "md", "xml"):
        path = tmp_path / f"report.{suffix}"
        reference = artifacts / "tiny_cnn.pt2" if suffix == "xml" else cnn_onnx  # torch once is enough
        result = run_cli("validate", reference, cnn_onnx, "--report", path, "-q")
        assert result.code == 0 and result.stdout == ""
        text = path.read_text()
        if suffix == "json":
            data = json.loads(text)
            assert data["environment"]["versions"]["onnxruntime"] and data["inputs_sha256"]
            assert "torch" not in data["environment"]["versions"]  # only frameworks actually used
        elif suffix == "md":
            assert "PASSED" in text and "| output |" in text and "onnxruntime" in text
        else:
            suite = ET.fromstring(text)
            assert suite.get("tests") == "1" and suite.get("failures") == "0"
            assert suite.find("testcase").get("name") == "output"
            assert any(p.get("name") == "torch" for p in suite.iter("property"))


def test_junit_report_marks_failed_outputs(tmp_path, cnn_onnx, encoder_onnx):
    other = tmp_path / "other.py"
    other.write_text(
        f"import sys; sys.path.insert(0, {str(EDGE.parent)!r})\n"
        "import tiny_cnn, torch\n"
        "def build():\n"
        "    torch.manual_seed(5)\n"
        "    return tiny_cnn.TinyCNN().eval()\n"
        "example_inputs = tiny_cnn.example_inputs\n"
    )
    path = tmp_path / "r.xml"
    result = run_cli("validate", f"{other}:build", cnn_onnx, "--report", path)
    assert result.code == 1
    suite = ET.fromstring(path.read_text())
    assert suite.get("failures") == "1" and suite.find("testcase/failure") is not None


def test_nan_in_reference_outputs_is_an_input_error(tmp_path):
    onnx_path = tmp_path / "log.onnx"
    assert run_cli("convert", f"{EDGE}:log_model", "-o", onnx_path, "--input", "x:2x4", "--no-validate").code == 0
    result = run_cli("validate", f"{EDGE}:log_model", onnx_path, "--input", "x:2x4")
    assert result.code == 2
    assert "NaN/Inf" in result.stderr and result.stderr.count("\n") <= 2


def test_outputs_matched_by_position_when_names_differ(tmp_path, artifacts):
    """A TorchScript archive's tuple outputs are output_0..2; an ONNX export named them the same way."""
    onnx_path = tmp_path / "mio.onnx"
    assert run_cli("convert", factory("multi_io"), "-o", onnx_path, "--json").code == 0
    result = run_cli("validate", artifacts / "multi_io.pt", onnx_path, "--input", "image:2x1x16x16", "--input", "features:2x6", "--json")
    assert result.code == 0, result.stderr
    assert [o["name"] for o in result.json["comparisons"][0]["outputs"]] == ["output_0", "output_1", "output_2"]


def test_cuda_without_a_gpu_is_a_clear_error(artifacts, cnn_onnx):
    result = run_cli("validate", artifacts / "tiny_cnn.pt2", cnn_onnx, "--device", "cuda")
    assert "cuda" in assert_clean_error(result).lower()
