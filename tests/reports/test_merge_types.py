"""`mdeploy report merge` of a report.json whose fields have the wrong type: exit 2 naming the file and the field,
never a traceback; every field of a real run report is tried, and every rendering of what is accepted."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from mdeploy.errors import InputError
from mdeploy.reports import merge, render
from tests.checks import assert_clean_error
from tests.reports.conftest import run_report


@pytest.fixture(scope="module")
def job(tmp_path_factory, run_models) -> dict[str, Any]:
    """A real job's report.json (one passing and one failing model), as `mdeploy run --report DIR` writes it."""
    root = tmp_path_factory.mktemp("job")
    models = [run_models["passing"], run_models["failing"]]
    report = run_report(models, run_models["dir"], run_models["pipeline"], run_models["inputs"])
    return json.loads(render.write_all(report, root / "job")["json"].read_text())


def _set(report: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    bad = copy.deepcopy(report)
    target = bad
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return bad


def _write(folder: Path, report: dict[str, Any]) -> Path:
    path = folder / "job.json"
    path.write_text(json.dumps(report))
    return path


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("steps",), "oops", "field steps: expected a list, got 'oops'"),
        (("notes",), 5, "field notes: expected a list, got 5"),
        (("notes",), ["fine", 5], "field notes[1]: expected a string, got 5"),
        (("models", 0, "gates"), 7, "field models[0].gates: expected a list, got 7"),
        (("models", 1, "gates", 0, "bar"), "high", "field models[1].gates[0].bar: expected a number, got 'high'"),
        (("models", 0, "steps", 1, "status"), "fine", "field models[0].steps[1].status: expected one of"),
        (("models", 0, "comparisons", 0, "outputs", 0, "cosine"), [1], "field models[0].comparisons[0].outputs[0].cosine"),
        (("models", 0, "benchmark", 1, "latency_ms"), [], "field models[0].benchmark[1].latency_ms: expected an object"),
        (("models", 0, "accuracy", "drop"), None, "field models[0].accuracy"),
        (("models", 0, "name"), 3, "field models[0].name: expected a string, got 3"),
        (("inputs_sha256",), ["a"], "field inputs_sha256: expected an object"),
        (("pipeline",), "p.yaml", "field pipeline: expected an object, got 'p.yaml'"),
        (("environment",), 3, "field environment: expected an object, got 3"),
        (("comparisons",), {"a": 1}, "field comparisons: expected a list, got an object"),
        (("passed",), "yes", "field passed: expected true or false, got 'yes'"),
    ],
)
def test_merge_of_a_field_of_the_wrong_type_is_exit_2_naming_the_file_and_field(cli, job, tmp_path, path, value, field):
    report = _write(tmp_path, _set(job, path, value))
    out = tmp_path / "merged"
    result = cli("report", "merge", report, "-o", out)
    error = assert_clean_error(result, hint=True, out=out, no_stdout=True)
    assert error.startswith(f"error: {report} is not a report this mdeploy wrote: {field}"), error


def _paths(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every field of a report (the first two items of each list), deepest last."""
    found = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value[:2]):
            found += _paths(item, (*path, i))
    return found


def _wrong(value: Any) -> Any:
    """A value of another JSON type than `value`."""
    if isinstance(value, bool) or value is None:
        return "yes"
    if isinstance(value, (int, float)):
        return "seven"
    if isinstance(value, str):
        return 7
    return 7 if isinstance(value, list) else ["oops"]


def test_no_field_of_the_wrong_type_gets_past_merge_to_a_traceback(job, tmp_path):
    """Each field of a real report, set to a value of another type: refused naming that field, or (a field the schema
    leaves open) merged and rendered in every format. Anything else would be exit 3 for the user."""
    refused = accepted = 0
    for i, path in enumerate(_paths(job)):
        if path[0] in ("schema_version", "command"):
            continue  # their own checks: not a run report / a newer schema (tests/reports/test_merge.py)
        bad = _set(job, path, _wrong(_get(job, path)))
        try:
            merge._check(bad, "job.json")
        except InputError as exc:
            refused += 1
            assert "field " in exc.message, (path, exc.message)
            continue
        accepted += 1
        merged = merge.merge([bad], ["job.json"])
        render.write_all(merged, tmp_path / f"out{i}")
    assert refused > 100 and accepted < refused


def _get(report: Any, path: tuple[str | int, ...]) -> Any:
    for key in path:
        report = report[key]
    return report
