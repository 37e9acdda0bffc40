"""The GitHub Action (action.yml at the repository root) run locally, step by step, as a runner would: each shell
step gets its `env:` with the `${{ ... }}` expressions filled in, a temporary GITHUB_OUTPUT and GITHUB_STEP_SUMMARY,
and runs with bash. Inputs reach the scripts only through env, so a hostile input stays a string."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

ACTION = yaml.safe_load((ROOT / "action.yml").read_text())


def _fill(text: str, inputs: dict[str, str]) -> str:
    def value(match: re.Match) -> str:
        expr = match.group(1).strip()
        if expr == "github.action_path":
            return str(ROOT)
        if expr.startswith("inputs."):
            return inputs[expr.removeprefix("inputs.")]
        raise AssertionError(f"an expression the local runner does not know: {expr}")

    return re.sub(r"\$\{\{(.*?)\}\}", value, text)


def _run_step(step: dict, inputs: dict[str, str], cwd: Path, github: dict[str, Path]) -> subprocess.CompletedProcess:
    assert "${{" not in step["run"], "inputs must reach the script through env, never pasted into it"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GITHUB_OUTPUT": str(github["output"]), "GITHUB_STEP_SUMMARY": str(github["summary"]), "CI": "true"}
    env.update({k: _fill(str(v), inputs) for k, v in step.get("env", {}).items()})
    return subprocess.run(["bash", "-c", step["run"]], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("workspace")
    shutil.copytree(ROOT / "examples", root / "examples", ignore=shutil.ignore_patterns("*.npz"))
    os.symlink(ROOT / "fixtures", root / "fixtures")
    subprocess.run([sys.executable, "fixtures/pipeline_data.py", "examples/data"], cwd=root, check=True, capture_output=True)
    return root


def _inputs(**given: str) -> dict[str, str]:
    defaults = {name: str(spec.get("default", "")) for name, spec in ACTION["inputs"].items()}
    return {**defaults, **given}


def _outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_the_action_declares_its_inputs_and_outputs():
    assert ACTION["runs"]["using"] == "composite"
    assert {"pipeline", "python-version", "extras", "args"} <= set(ACTION["inputs"])
    assert ACTION["inputs"]["pipeline"]["required"] is True
    assert {"exit-code", "json", "junit", "markdown", "html"} <= set(ACTION["outputs"])
    shell_steps = [s for s in ACTION["runs"]["steps"] if "run" in s]
    assert shell_steps and all(s["shell"] == "bash" for s in shell_steps)


@pytest.mark.parametrize("pipeline, code", [("examples/pipeline.yaml", "0"), ("examples/pipeline-fails.yaml", "1")])
def test_the_action_steps_run_the_pipeline_and_publish_the_report(workspace, tmp_path, pipeline, code):
    github = {"output": tmp_path / "output", "summary": tmp_path / "summary.md"}
    github["output"].touch()
    github["summary"].write_text("# earlier steps\n")
    report_dir = tmp_path / "report"
    # `--dry-run` keeps pip from touching the environment the tests run in; the step's shell code runs for real
    inputs = _inputs(pipeline=pipeline, extras="torch", args=f"--out {tmp_path / 'runs'}", **{"report-dir": str(report_dir),
                     "pip-args": "--dry-run --no-deps"})
    install, run = [s for s in ACTION["runs"]["steps"] if "run" in s]
    installed = _run_step(install, inputs, workspace, github)
    assert installed.returncode == 0, installed.stderr
    ran = _run_step(run, inputs, workspace, github)
    assert str(ran.returncode) == code, ran.stderr + ran.stdout
    outputs = _outputs(github["output"])
    assert outputs["exit-code"] == code
    for key, name in (("json", "report.json"), ("junit", "report.xml"), ("markdown", "report.md"), ("html", "report.html")):
        assert Path(outputs[key]) == report_dir / name and (report_dir / name).is_file()
    summary = github["summary"].read_text()
    assert summary.startswith("# earlier steps\n")  # appended, never overwritten
    assert (report_dir / "report.md").read_text() in summary


def test_a_hostile_input_stays_a_string(workspace, tmp_path):
    github = {"output": tmp_path / "output", "summary": tmp_path / "summary.md"}
    github["output"].touch()
    marker = tmp_path / "pwned"
    inputs = _inputs(pipeline=f"x.yaml; touch {marker}", args=f"$(touch {marker})", **{"report-dir": str(tmp_path / "r")})
    run = [s for s in ACTION["runs"]["steps"] if "run" in s][1]
    ran = _run_step(run, inputs, workspace, github)
    assert ran.returncode == 2, ran.stderr  # no such pipeline file, and nothing was executed
    assert not marker.exists()
