"""A `package` step in a pipeline: the current artifact handed to a model server inside the run folder, its checks and
comparison in the run report; a second run into the same folder leaves the same files; the plan's own options
(`model`, `output`) and a missing `target` are refused at their line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="the serving extra is not installed")

PIPELINE = f"""version: 1
models:
  - name: cnn
    source: {ROOT / "fixtures" / "models" / "tiny_cnn.py"}:build
    inputs: {{image: 1x3x32x32}}
    dynamic: ["image:0"]
steps:
  - convert: {{to: onnx}}
  - quantize: {{mode: dynamic}}
  - package: {{target: triton, max-batch-size: 4, name: tiny}}
gates:
  - cosine >= 0.9
"""


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_package_step_packages_the_current_artifact(tmp_path):
    (tmp_path / "p.yaml").write_text(PIPELINE)
    result = run_cli("run", tmp_path / "p.yaml", "--out", tmp_path / "run", "--json")
    assert result.code == 0, result.stderr + result.stdout
    (model,) = result.json["models"]
    assert [s["name"] for s in model["steps"]] == ["01-convert", "02-quantize", "03-package"]
    package = tmp_path / "run" / "cnn" / "03-package"
    assert {"README.md", "request.json", "tiny/config.pbtxt", "tiny/1/model.onnx"} <= set(files(package))
    # the INT8 model of the quantize step, not the float baseline, is what the server gets
    assert (package / "tiny" / "1" / "model.onnx").read_bytes() == (tmp_path / "run" / "cnn" / "02-quantize.onnx").read_bytes()
    step_report = json.loads((tmp_path / "run" / "cnn" / "03-package.json").read_text())
    assert step_report["command"] == "package" and step_report["max_batch_size"] == 4
    assert all(c["passed"] for c in step_report["checks"])
    assert any(c["step"] == "03-package" and c["passed"] for c in model["comparisons"])

    before = files(tmp_path / "run")
    again = run_cli("run", tmp_path / "p.yaml", "--out", tmp_path / "run", "--json")
    assert again.code == 0, again.stderr
    steps = {s["name"]: s for s in again.json["models"][0]["steps"]}
    assert steps["01-convert"]["status"] == "cached" and steps["03-package"]["status"] == "passed"  # always runs
    assert files(tmp_path / "run") == before


@pytest.mark.parametrize("step, words", [
    ("package: {target: triton, output: elsewhere}", ["steps[2].package", "output"]),
    ("package: {max-batch-size: 4}", ["steps[2].package", "target: missing"]),
    ("package: {target: tritn}", ["steps[2].package.target", "expected kserve|mlflow|tfserving|triton"]),
])
def test_plan_options_and_a_missing_target_are_refused_at_their_line(tmp_path, step, words):
    (tmp_path / "p.yaml").write_text(PIPELINE.replace("package: {target: triton, max-batch-size: 4, name: tiny}", step))
    result = run_cli("run", tmp_path / "p.yaml", "--out", tmp_path / "run")
    assert result.code == 2, result.stderr
    assert result.stderr.startswith("error: ") and "p.yaml:" in result.stderr
    assert all(w in result.stderr for w in words), result.stderr
    assert not (tmp_path / "run").exists()
