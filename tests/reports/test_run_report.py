"""The real thing end to end: `mdeploy run --job NAME --report DIR` per job of a matrix, then `mdeploy report merge`;
the reports the executor writes validate against the published schema and render in every format."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from tests.conftest import ROOT, run_cli


@pytest.fixture(scope="module")
def jobs(tmp_path_factory) -> dict[str, Path]:
    """Two job reports: examples/pipeline-fails.yaml (model `cnn`, its size gate fails) and job `cnn-b` of a two-model
    matrix made from examples/pipeline.yaml (its gates hold). Each job has its own step cache, as on separate CI runners."""
    root = tmp_path_factory.mktemp("checkout")
    shutil.copytree(ROOT / "examples", root / "examples", ignore=shutil.ignore_patterns("*.npz"))
    os.symlink(ROOT / "fixtures", root / "fixtures")
    subprocess.run([sys.executable, "fixtures/pipeline_data.py", "examples/data"], cwd=root, check=True, capture_output=True)
    text = (root / "examples" / "pipeline.yaml").read_text()
    model = "  - name: cnn\n"
    assert model in text
    dynamic = '    dynamic: ["image:0"]\n'
    second = "  - name: cnn-b\n    source: ../fixtures/models/tiny_cnn.py:build\n    inputs: {image: 1x3x32x32}\n" + dynamic
    matrix = text.replace(model, "  - name: cnn-a\n", 1).replace(dynamic, dynamic + second, 1)
    (root / "examples" / "matrix.yaml").write_text(matrix)
    env = {"CI": "true", "MDEPLOY_CACHE_DIR": str(root / "cache-fails")}
    listed = run_cli("run", "examples/matrix.yaml", "--list-jobs", cwd=root, env=env)
    assert listed.code == 0, listed.stderr
    assert [j["job"] for j in json.loads(listed.stdout)["include"]] == ["cnn-a", "cnn-b"]
    failing = run_cli("run", "examples/pipeline-fails.yaml", "--out", "runs/fails", "--report", "rep-fails", cwd=root, env=env)
    assert failing.code == 1, failing.stderr + failing.stdout
    env["MDEPLOY_CACHE_DIR"] = str(root / "cache-b")
    passing = run_cli("run", "examples/matrix.yaml", "--job", "cnn-b", "--out", "runs/b", "--report", "rep-b", cwd=root, env=env)
    assert passing.code == 0, passing.stderr + passing.stdout
    return {"root": root, "fails": root / "rep-fails" / "report.json", "b": root / "rep-b" / "report.json"}


def test_job_reports_follow_the_published_schema(jobs):
    import jsonschema

    from mdeploy.reports import schema

    validator = jsonschema.Draft202012Validator(schema())
    for key in ("fails", "b"):
        report = json.loads(jobs[key].read_text())
        validator.validate(report)
        (model,) = report["models"]
        assert model["name"] == {"fails": "cnn", "b": "cnn-b"}[key] and report["passed"] is (key == "b")
        assert all(len(row["latencies_ms"]) == 200 for row in model["benchmark"])
        hist = model["comparisons"][-1]["outputs"][0]["abs_error_histogram"]
        assert sum(hist["counts"]) == model["comparisons"][-1]["outputs"][0]["total"]


def test_merging_the_matrix_keeps_the_run_verdict(jobs):
    root = jobs["root"]
    alone = run_cli("report", "merge", jobs["b"], "-o", "merged-b", cwd=root)
    assert alone.code == 0, alone.stderr
    both = run_cli("report", "merge", jobs["fails"], jobs["b"], "-o", "merged", cwd=root)
    assert both.code == 1, both.stderr
    merged = root / "merged"
    report = json.loads((merged / "report.json").read_text())
    assert [m["name"] for m in report["models"]] == ["cnn", "cnn-b"] and [m["passed"] for m in report["models"]] == [False, True]
    suites = {s.get("name"): s for s in ET.fromstring((merged / "report.xml").read_text()).findall("testsuite")}
    assert suites["cnn-b"].get("failures") == "0"
    (failure,) = suites["cnn"].findall("testcase/failure")
    size_ratio = next(g["measured"] for g in report["models"][0]["gates"] if g["metric"] == "size-ratio")
    assert failure.get("message").startswith(f"size-ratio = {size_ratio:.6g}") and "bar: <= 0.3" in failure.get("message")
    markdown = (merged / "report.md").read_text()
    assert "| ❌ | cnn | `size-ratio <= 0.3` |" in markdown and "| ✅ | cnn-b | `size-ratio <= 0.7` |" in markdown
    page = (merged / "report.html").read_text()
    for name in ("cnn", "cnn-b"):
        assert f'aria-label="{name}: abs error of output"' in page and f'aria-label="{name}: latency per artifact"' in page
