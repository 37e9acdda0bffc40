"""`mdeploy run` as a user and a CI job drive it: the examples run as written (exit 0, and exit 1 for the failing
gate), --dry-run writes nothing, --list-jobs is a CI matrix, a bad file is one `error:` line with file:line:col."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

STEPS = ["01-convert", "02-quantize", "03-validate", "04-benchmark"]


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A checkout as a user has it: examples/ (copied) and fixtures/, with the example data written by the script the
    README names, run from the checkout's root."""
    root = tmp_path_factory.mktemp("checkout")
    shutil.copytree(ROOT / "examples", root / "examples", ignore=shutil.ignore_patterns("*.npz"))
    os.symlink(ROOT / "fixtures", root / "fixtures")
    import subprocess
    import sys

    subprocess.run([sys.executable, "fixtures/pipeline_data.py", "examples/data"], cwd=root, check=True, capture_output=True)
    assert {"calib.npz", "eval.npz"} <= {p.name for p in (root / "examples" / "data").iterdir()}
    return root


def test_the_examples_run_as_written(workspace):
    result = run_cli("run", "examples/pipeline.yaml", "--out", "runs/ok", "--report", "report", cwd=workspace, env={"CI": "true"})
    assert result.code == 0, result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    for step in STEPS:  # one plain line per step in CI
        assert f"{step}: passed" in result.stderr or f"{step}: cached" in result.stderr, result.stderr
    assert "PASSED every step ran and every gate holds" in result.stdout
    report = json.loads((workspace / "report" / "report.json").read_text())
    assert report["passed"] is True and report["command"] == "run"
    (model,) = report["models"]
    assert [s["name"] for s in model["steps"]] == STEPS
    assert [g["gate"] for g in model["gates"]] == ["accuracy-drop <= 0.05", "cosine >= 0.99", "size-ratio <= 0.7",
                                                   "p99-ms <= 200"]
    assert all(g["passed"] and g["measured"] is not None for g in model["gates"])
    assert {p.name for p in (workspace / "report").iterdir()} >= {"report.json", "report.xml", "report.md", "report.html"}
    assert (workspace / "runs" / "ok" / "cnn" / "02-quantize.onnx").is_file()

    failing = run_cli("run", "examples/pipeline-fails.yaml", "--out", "runs/fails", "--json", cwd=workspace)
    assert failing.code == 1, failing.stderr
    assert failing.stderr == ""  # --json: the report is the only output
    report = failing.json  # exactly one JSON object on stdout
    (model,) = report["models"]
    verdicts = {g["gate"]: g["passed"] for g in model["gates"]}
    assert verdicts == {"accuracy-drop <= 0.05": True, "cosine >= 0.99": True, "size-ratio <= 0.3": False, "p99-ms <= 200": True}
    size = next(g for g in model["gates"] if g["metric"] == "size-ratio")
    assert size["measured"] > 0.3 and size["bar"] == 0.3
    assert all(s["status"] in ("passed", "cached") for s in model["steps"])  # every step ran; only the gate failed


def test_dry_run_prints_every_option_and_where_it_came_from_and_writes_nothing(workspace):
    before = tree(workspace)
    result = run_cli("run", "examples/pipeline.yaml", "--dry-run", cwd=workspace)
    assert result.code == 0, result.stderr
    assert tree(workspace) == before
    out = result.stdout
    assert "dry run: nothing is written" in out
    for step in STEPS:
        assert step in out
    # a value from the file, from a data name, from the model entry, from the plan, and a default (columns aligned to
    # the longest option name, so compare with the white space folded)
    folded = " ".join(out.split())
    assert "mode = static" in folded and "examples/pipeline.yaml:16:22 steps[1].quantize.mode" in folded
    assert "calib-data = examples/data/calib.npz data.calib (examples/pipeline.yaml:12:10 data.calib;" in folded
    assert "input = [image:1x3x32x32] model cnn (examples/pipeline.yaml:9:13 models[0].inputs)" in folded
    assert "candidate" in out and "plan (the output of 02-quantize)" in out
    assert "calib-method = - default" in folded
    assert "writes mdeploy-runs/pipeline-" in out and "/cnn/02-quantize.onnx" in out
    assert "size-ratio <= 0.7" in out

    as_json = run_cli("run", "examples/pipeline.yaml", "--dry-run", "--json", "--out", "somewhere", cwd=workspace)
    assert as_json.code == 0, as_json.stderr
    plan = as_json.json
    assert plan["run_dir"] == "somewhere" and [s["verb"] for s in plan["models"][0]["steps"]] == [s[3:] for s in STEPS]
    assert plan["models"][0]["steps"][1]["options"]["calib_data"] == "examples/data/calib.npz"
    assert tree(workspace) == before


def test_list_jobs_is_one_line_of_json_for_a_ci_matrix_and_job_picks_one(workspace):
    text = (workspace / "examples" / "pipeline.yaml").read_text()
    two = workspace / "examples" / "two.yaml"
    small = "  - name: small\n    source: ../fixtures/models/tiny_cnn.py:build\n"
    two.write_text(text.replace("  - name: cnn\n", small + "  - name: cnn\n"))
    result = run_cli("run", "examples/two.yaml", "--list-jobs", cwd=workspace)
    assert result.code == 0, result.stderr
    assert result.stdout.count("\n") == 1  # `echo "matrix=$(mdeploy run ... --list-jobs)" >> $GITHUB_OUTPUT`
    assert json.loads(result.stdout) == {"include": [{"job": "small"}, {"job": "cnn"}]}
    one = run_cli("run", "examples/two.yaml", "--dry-run", "--json", "--job", "cnn", cwd=workspace)
    assert [m["name"] for m in one.json["models"]] == ["cnn"]
    wrong = run_cli("run", "examples/two.yaml", "--job", "cnm", cwd=workspace)
    assert wrong.code == 2 and wrong.stderr.splitlines() == [
        "error: --job cnm: no such model in examples/two.yaml; did you mean 'cnn'?", "hint: jobs: small, cnn"]
    both = run_cli("run", "examples/two.yaml", "--list-jobs", "--job", "cnn", cwd=workspace)
    assert both.code == 2 and both.stderr.startswith("error: --list-jobs and --job do not go together")


def test_a_bad_file_is_one_error_line_with_file_line_column_and_exit_2(workspace):
    bad = workspace / "examples" / "bad.yaml"
    bad.write_text((workspace / "examples" / "pipeline.yaml").read_text().replace("mode: static", "mode: fast"))
    result = run_cli("run", "examples/bad.yaml", cwd=workspace)
    assert result.code == 2
    assert result.stderr.splitlines() == [
        "error: examples/bad.yaml:16:22: steps[1].quantize.mode: expected auto|dynamic|static, got 'fast'"]
    assert result.stdout == "" and not (workspace / "mdeploy-runs").exists()
    bad.write_text((workspace / "examples" / "pipeline.yaml").read_text().replace("calib: calib", "calib-dta: calib"))
    result = run_cli("run", "examples/bad.yaml", "--dry-run", cwd=workspace)
    assert result.code == 2
    first, hint = result.stderr.splitlines()
    assert first == "error: examples/bad.yaml:16:30: steps[1].quantize.calib-dta: unknown option; did you mean 'calib-data'?"
    assert hint.startswith("hint: quantize options: ")
    missing = run_cli("run", "examples/absent.yaml", cwd=workspace)
    assert missing.code == 2 and missing.stderr.startswith("error: pipeline file not found: examples/absent.yaml")
    nothing = run_cli("run", cwd=workspace)
    assert nothing.code == 2 and nothing.stderr.startswith("error: missing the pipeline file")


def test_schema_is_printed_without_a_pipeline_file(tmp_path):
    result = run_cli("run", "--schema", cwd=tmp_path)
    assert result.code == 0, result.stderr
    schema = result.json
    assert schema["required"] == ["version", "models", "steps"]
    assert list(tmp_path.iterdir()) == []
