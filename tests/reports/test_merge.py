"""`mdeploy report merge`: the reports of a CI matrix's jobs joined into one, with the run's exit-code rule."""

from __future__ import annotations

import json
from xml.etree import ElementTree as ET

import pytest

from mdeploy.reports import render
from tests.checks import assert_clean_error
from tests.reports.conftest import run_report


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, run_models):
    """Two jobs' report folders, as `mdeploy run pipeline.yaml --job NAME --report DIR` leaves them."""
    root = tmp_path_factory.mktemp("jobs")
    paths = {}
    for key in ("passing", "failing"):
        model = run_models[key]
        report = run_report([model], run_models["dir"] / model["name"], run_models["pipeline"], run_models["inputs"])
        paths[key] = render.write_all(report, root / model["name"])["json"]
    return paths


def test_merge_joins_every_model_and_fails_when_one_failed(cli, jobs, tmp_path):
    out = tmp_path / "all"
    result = cli("report", "merge", jobs["passing"], jobs["failing"], "-o", out)
    assert result.code == 1, result.stderr
    assert "FAILED mlp-wrong" in result.stdout and "wrote html" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md", "report.xml"]
    merged = json.loads((out / "report.json").read_text())
    assert [m["name"] for m in merged["models"]] == ["mlp", "mlp-wrong"] and merged["passed"] is False
    assert [m["models"] for m in merged["merged_from"]] == [["mlp"], ["mlp-wrong"]]
    assert len(merged["steps"]) == 8 and merged["models"][0]["environment"]["versions"]["onnxruntime"]
    import jsonschema

    from mdeploy.reports import schema

    jsonschema.validate(merged, schema())
    suites = ET.fromstring((out / "report.xml").read_text()).findall("testsuite")
    assert [s.get("name") for s in suites] == ["mlp", "mlp-wrong"] and [s.get("failures") for s in suites][0] == "0"
    assert "mlp-wrong" in (out / "report.md").read_text()
    assert "mlp-wrong: abs error of logits" in (out / "report.html").read_text()


def test_merge_of_passing_jobs_exits_0_and_json_is_one_object(cli, jobs, tmp_path):
    result = cli("report", "merge", jobs["passing"], "-o", tmp_path / "one", "--json")
    assert result.code == 0, result.stderr
    assert result.json["passed"] is True and [m["name"] for m in result.json["models"]] == ["mlp"]


def test_merge_refuses_what_it_cannot_join(cli, jobs, tmp_path, run_models):
    def error(*args):
        result = cli("report", "merge", *args)
        assert_clean_error(result, no_stdout=True)
        return result.stderr

    out = tmp_path / "o"
    assert "model 'mlp' is in both" in error(jobs["passing"], jobs["passing"], "-o", out)
    assert "report not found" in error(tmp_path / "missing.json", "-o", out)
    (tmp_path / "bad.json").write_text("{not json")
    assert "is not a JSON report" in error(tmp_path / "bad.json", "-o", out)
    single = tmp_path / "validate.json"
    mlp = run_models["passing"]["baseline"]
    assert cli("validate", mlp, mlp, "--report", single, "-q").code == 0
    assert "is not a run report" in error(single, "-o", out)
    newer = json.loads(jobs["passing"].read_text())
    newer["schema_version"] = 99
    (tmp_path / "newer.json").write_text(json.dumps(newer))
    assert "schema_version 99" in error(tmp_path / "newer.json", "-o", out)
    assert not out.exists()  # nothing written by a refused merge
    out.mkdir()
    (out / "report.md").write_text("mine")
    assert "output exists" in error(jobs["passing"], "-o", out)
    assert sorted(p.name for p in out.iterdir()) == ["report.md"] and (out / "report.md").read_text() == "mine"
    assert cli("report", "merge", jobs["passing"], "-o", out, "--force", "-q").code == 0
    assert len(list(out.iterdir())) == 4
