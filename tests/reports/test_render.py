"""The renderings of one run report (JSON + schema, JUnit, Markdown, HTML), on a report built from real verb runs."""

from __future__ import annotations

import copy
import json
import re
from xml.etree import ElementTree as ET

import numpy as np
import pytest

from mdeploy.reports import render, schema
from mdeploy.reports.report import Report


def test_run_reports_validate_against_the_published_schema(passing_report, mixed_report):
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    for report in (passing_report, mixed_report):
        d = json.loads(render.to_json(report))
        assert d["schema_version"] == 1 and d["command"] == "run"
        validator.validate(d)
    broken = json.loads(render.to_json(mixed_report))
    del broken["models"][1]["gates"][0]["bar"]
    broken["models"][0]["steps"][0]["status"] = "fine"
    errors = sorted(e.json_path for e in validator.iter_errors(broken))
    assert errors == ["$.models[0].steps[0].status", "$.models[1].gates[0]"]


def test_the_verdict_of_a_run_needs_every_gate_and_step(passing_report, mixed_report):
    assert passing_report.passed and not mixed_report.passed
    d = copy.deepcopy(passing_report.data)
    d["models"][0]["gates"][0]["passed"] = False  # a gate that failed fails the run even if the model says passed
    assert not Report(command="run", data=d).passed
    d = copy.deepcopy(passing_report.data)
    d["models"][0]["steps"][1]["status"] = "error"
    assert not Report(command="run", data=d).passed


def test_abs_error_histogram_counts_every_finite_pair_across_batches():
    from mdeploy.core import Tolerance
    from mdeploy.validation.compare import HISTOGRAM_EDGES, OutputAccumulator

    acc = OutputAccumulator("y", "y")
    tol = Tolerance(atol=1e-3, rtol=None)
    ref = np.zeros((2, 4), np.float32)
    acc.update(ref, ref + np.array([[0, 1e-6, 1e-6, 0.5], [2e3, 0, 0, 0]], np.float32), tol)
    acc.update(ref, np.array([[np.nan, 0, 0, 0.05], [0, 0, 0, 0]], np.float32), tol)  # the NaN pair is not an error size
    hist = acc.result(tol).to_dict()["abs_error_histogram"]
    counts = hist["counts"]
    assert hist["edges"] == HISTOGRAM_EDGES and len(counts) == len(HISTOGRAM_EDGES) - 1
    assert sum(counts) == 15 and counts[0] == 10  # exact zeros
    assert counts[-1] == 1  # 2e3 is above the last edge: counted in the last bin

    def bin_of(value):  # the float32 difference, compared in float64 as the accumulator does
        return max(i for i, e in enumerate(HISTOGRAM_EDGES[:-1]) if e <= float(np.float32(value)))

    filled = {i: n for i, n in enumerate(counts) if n}
    assert filled == {0: 10, bin_of(1e-6): 2, bin_of(0.05): 1, bin_of(0.5): 1, len(counts) - 1: 1}


def test_benchmark_keeps_its_latency_samples(run_models):
    from mdeploy.measuring.latency import MAX_SAMPLES, latency_samples

    for row in run_models["passing"]["benchmark"]:
        samples = row["latencies_ms"]
        assert len(samples) == row["iterations"] == 60
        assert min(samples) == pytest.approx(row["latency_ms"]["min"], abs=1e-3)
        assert np.percentile(samples, 50) == pytest.approx(row["latency_ms"]["p50"], abs=1e-3)
    long = [i * 1e-6 for i in range(5 * MAX_SAMPLES)]
    kept = latency_samples(long)
    assert len(kept) == MAX_SAMPLES and kept[0] == 0.0 and kept[1] == pytest.approx(0.005) and kept == sorted(kept)


def test_junit_has_one_suite_per_model_and_a_case_per_gate_output_and_step(mixed_report, run_models):
    root = ET.fromstring(render.to_junit(mixed_report))
    assert root.tag == "testsuites"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert list(suites) == ["mlp", "mlp-wrong"]
    for name, suite in suites.items():
        model = run_models["passing" if name == "mlp" else "failing"]
        cases = suite.findall("testcase")
        assert {c.get("classname") for c in cases} == {f"mdeploy.{name}"}
        assert len(cases) == len(model["gates"]) + 1 + len(model["steps"]) == int(suite.get("tests"))
        props = {p.get("name"): p.get("value") for p in suite.iter("property")}
        assert props["version.onnxruntime"] and props["pipeline_sha256"] == mixed_report.data["pipeline"]["sha256"]
        assert sum(k.startswith("sha256.") for k in props) == 3
    assert suites["mlp"].get("failures") == "0" and suites["mlp"].find(".//failure") is None
    failed = {c.get("name"): c.find("failure") for c in suites["mlp-wrong"].findall("testcase") if c.find("failure") is not None}
    gate = failed["gate: accuracy-drop <= 0.05"]
    drop = run_models["failing"]["accuracy"]["drop"]
    assert gate.get("message") == f"accuracy-drop = {drop:.6g}; bar: <= 0.05" and drop > 0.5
    assert "never measured" in failed["gate: top1 >= 0.9"].get("message")
    assert "output: 03-validate logits" in failed
    assert int(suites["mlp-wrong"].get("failures")) == len(failed) == int(root.get("failures"))


def test_markdown_shows_gates_figures_and_changes(mixed_report, run_models):
    text = render.to_markdown(mixed_report)
    assert text.startswith("# mdeploy run: ❌ FAILED")
    gate_rows = [line for line in text.splitlines() if line.startswith(("| ✅ | mlp | `", "| ❌ | mlp-wrong | `"))]
    assert any("`cosine >= 0.99`" in r for r in gate_rows) and any("`accuracy-drop <= 0.05`" in r for r in gate_rows)
    failed = [r for r in gate_rows if r.startswith("| ❌")]
    assert len(failed) == 3 and text.index(failed[-1]) < min(text.index(r) for r in gate_rows if r.startswith("| ✅"))
    assert "## What changed since the baseline" in text and "## Figures per model" in text
    size_ratio = run_models["passing"]["benchmark"][1]["ratio_to_first"]["size"]
    assert f"| mlp | size |" in text and f"{size_ratio:.2f}x" in text
    assert "(baseline)" in text and len(text.encode()) < 64 * 1024


def test_markdown_of_a_huge_run_stays_under_the_summary_cap(mixed_report):
    from mdeploy.reports.markdown import MAX_BYTES

    d = copy.deepcopy(mixed_report.to_dict())
    d["models"] = [{**copy.deepcopy(m), "name": f"{m['name']}-{k}"} for k in range(400) for m in d["models"]]
    text = render.to_markdown(d)
    assert len(text.encode()) <= MAX_BYTES
    assert "more rows left out" in text
    failed_rows = [line for line in text.splitlines() if line.startswith("| ❌ | mlp-wrong-")]
    assert len({r.split("|")[2] for r in failed_rows}) == 400  # every failed gate kept: they come first


def test_html_is_self_contained_with_a_plot_per_artifact_and_output(mixed_report):
    page = render.to_html(mixed_report)
    assert "default-src 'none'" in page
    assert not re.search(r"https?://|//[a-z]", page, re.I)  # no URL at all, let alone a fetch
    assert "<script" not in page.lower() and "@import" not in page and "url(" not in page
    svgs = re.findall(r"<svg .*?</svg>", page, re.S)
    labels = [re.search(r'aria-label="([^"]*)"', s).group(1) for s in svgs]
    for model in ("mlp", "mlp-wrong"):
        assert f"{model}: size per artifact" in labels and f"{model}: latency per artifact" in labels
        assert f"{model}: latency of 01-convert.onnx" in labels and f"{model}: latency of 02-quantize.onnx" in labels
        assert f"{model}: abs error of logits" in labels
    assert len(svgs) == 10 and all('class="bar"' in s for s in svgs)


def test_html_escapes_everything_it_quotes(passing_report):
    d = copy.deepcopy(passing_report.to_dict())
    d["models"][0]["name"] = "<img src=x onerror=alert(1)>"
    d["models"][0]["comparisons"][0]["outputs"][0]["name"] = "</svg><script>bad()</script>"
    d["notes"] = ["<b>note</b>"]
    page = render.to_html(d)
    assert "<img" not in page and "<script" not in page and "<b>note" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_write_all_writes_four_renderings_atomically(tmp_path, passing_report):
    from mdeploy.errors import OutputExistsError

    folder = tmp_path / "reports" / "run"
    paths = render.write_all(passing_report, folder)
    names = {"json": "report.json", "xml": "report.xml", "md": "report.md", "html": "report.html"}
    assert {k: p.name for k, p in paths.items()} == names
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in paths.values())
    assert json.loads(paths["json"].read_text())["passed"] is True
    ET.fromstring(paths["xml"].read_text())
    before = {p: p.read_bytes() for p in paths.values()}
    paths["md"].unlink()
    with pytest.raises(OutputExistsError):
        render.write_all(passing_report, folder, force=False)
    assert not paths["md"].exists() and all(p.read_bytes() == b for p, b in before.items() if p.exists())
    render.write_all(passing_report, folder)  # the default replaces: a re-run of `mdeploy run --report DIR`
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in paths.values())
