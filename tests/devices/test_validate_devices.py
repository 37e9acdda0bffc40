"""`validate` chooses a device per side: the reference on the CPU and the candidate on --device, unless
--ref-device / --cand-device say otherwise; the report records which device ran which side. On a CPU machine the
choices that resolve to the CPU run for real; the pipeline file accepts the same fields."""

from __future__ import annotations

import json

import pytest

from mdeploy.verbs import validate
from tests.conftest import run_cli


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ((), ("cpu", "cpu")),
        (("--device", "cuda"), ("cpu", "cuda")),
        (("--ref-device", "cuda"), ("cuda", "cpu")),
        (("--device", "cuda", "--ref-device", "cuda"), ("cuda", "cuda")),
        (("--device", "cuda", "--cand-device", "cpu"), ("cpu", "cpu")),
        (("--ref-device", "cuda", "--cand-device", "cpu", "--device", "cuda"), ("cuda", "cpu")),
    ],
)
def test_which_device_runs_which_side(flags, expected):
    values = dict(zip([f.lstrip("-").replace("-", "_") for f in flags[::2]], flags[1::2]))
    options = validate.Options(reference="r.onnx", candidate="c.onnx", **values)
    assert validate.devices(options) == expected


def test_explicit_cpu_devices_run_and_are_reported(models):
    """The torch.export program against the TorchScript trace of the same CNN (--input: the trace records no
    shapes), both sides named on the CPU."""
    result = run_cli("validate", models["pt"], models["pt2"], "--ref-device", "cpu", "--cand-device", "cpu",
                     "--input", "image:2x3x32x32", "--json")
    assert result.code == 0, result.stderr
    report = result.json
    assert (report["reference_device"], report["candidate_device"], report["device"]) == ("cpu", "cpu", "cpu")
    assert report["passed"] and report["comparisons"][0]["outputs"][0]["max_abs_error"] < 1e-4


def test_device_cuda_with_the_candidate_sent_back_to_the_cpu_runs_both_on_the_cpu(models):
    """--cand-device overrides --device: nothing runs on CUDA, so this runs on any machine."""
    result = run_cli("validate", models["onnx"], models["onnx"], "--device", "cuda", "--cand-device", "cpu", "--json")
    assert result.code == 0, result.stderr
    assert (result.json["reference_device"], result.json["candidate_device"]) == ("cpu", "cpu")


def test_the_verdict_line_names_devices_only_when_one_is_not_the_cpu(models):
    result = run_cli("validate", models["onnx"], models["onnx"], "--ref-device", "cpu")
    assert result.code == 0, result.stderr
    assert "PASSED" in result.stdout and "(cpu)" not in result.stdout


def test_a_pipeline_validate_step_takes_the_device_fields(models, tmp_path):
    pipeline = tmp_path / "devices.yaml"
    pipeline.write_text(
        "version: 1\n"
        "models:\n"
        f"  - name: mlp\n    source: {models['onnx']}\n"
        "steps:\n"
        "  - quantize: {mode: dynamic}\n"
        "  - validate: {ref-device: cpu, cand_device: cpu, samples: 2, precision: int8}\n"
    )
    result = run_cli("run", pipeline, "--out", tmp_path / "runs", "--json")
    assert result.code == 0, result.stderr + result.stdout
    (model,) = result.json["models"]
    step = json.loads((tmp_path / "runs" / "mlp" / "02-validate.json").read_text())
    assert model["steps"][1]["status"] == "passed"
    assert (step["reference_device"], step["candidate_device"]) == ("cpu", "cpu")
    pipeline.write_text(pipeline.read_text().replace("cand_device: cpu", "cand_device: gpu"))
    bad = run_cli("run", pipeline, "--dry-run")
    assert bad.code == 2 and "steps[1].validate.cand_device: expected cpu|cuda, got 'gpu'" in bad.stderr


def test_the_pipeline_schema_lists_the_device_fields():
    result = run_cli("run", "--schema")
    assert result.code == 0, result.stderr
    text = result.stdout
    for key in ("ref-device", "cand-device"):
        assert f'"{key}"' in text
