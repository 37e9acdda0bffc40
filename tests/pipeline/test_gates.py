"""Gates: parsed with a clear error, every one evaluated, and a metric no step measured is a failure that says which
step would measure it. The figures come from a real run of the ONNX MLP (quantize, validate, benchmark)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fixtures import onnx_graphs
from mdeploy.errors import InputError
from mdeploy.pipeline import execute, gates, schema, spec


def test_parse_reads_metric_operator_and_bar():
    gate = gates.parse("accuracy-drop <= 0.01", "pipeline.yaml:18:5 gates[0]")
    assert (gate.metric, gate.op, gate.bar, gate.where) == ("accuracy-drop", "<=", 0.01, "pipeline.yaml:18:5 gates[0]")
    assert gates.parse("cosine>=0.99").bar == 0.99
    assert gates.parse("size-ratio <= 30%").bar == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cosin >= 0.99", "did you mean 'cosine'"),
        ("latency_ratio < 0.6", "<= or >="),
        ("p99-ms <= fast", "not a number"),
        ("cosine 0.99", "METRIC <= BAR"),
        ("cosine >= nan", "finite"),
    ],
)
def test_parse_errors_say_what_is_wrong(text, message):
    with pytest.raises(InputError, match=message) as info:
        gates.parse(text, "pipeline.yaml:20:5 gates[2]")
    assert info.value.message.startswith("pipeline.yaml:20:5 gates[2]: ")


def test_metrics_are_the_ones_the_pipeline_file_accepts():
    assert set(gates.METRICS) == set(schema.GATE_METRICS)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """A real run: MLP -> static INT8 (proved on labelled data) -> validate -> benchmark; plus a run of convert-free
    quantize only (nothing validated or benchmarked after it)."""
    import onnxruntime as ort

    folder = tmp_path_factory.mktemp("gates")
    onnx_graphs.mlp(folder / "mlp.onnx")
    x = np.random.default_rng(1).standard_normal((64, onnx_graphs.SIZES[0])).astype(np.float32)
    logits = ort.InferenceSession(str(folder / "mlp.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.savez(folder / "data.npz", x=x, labels=logits.argmax(1).astype(np.int64))
    all_gates = ["accuracy-drop <= 0.5", "accuracy >= 0.5", "cosine >= 0.9", "top1 >= 0.5", "max-abs <= 10",
                 "latency-ratio <= 100", "size-ratio <= 1", "p50-ms <= 1000", "p99-ms <= 1000"]
    steps = {"full": "  - quantize: {mode: static, calib-data: data}\n  - validate: {data: data}\n"
                     "  - benchmark: {threads: 1, iterations: 10, warmup: 1}\n",
             "bare": "  - quantize: {mode: dynamic, no-validate: true}\n"}
    reports = {}
    for name, text in steps.items():
        pipeline = folder / f"{name}.yaml"
        pipeline.write_text(textwrap.dedent(f"""\
            version: 1
            models: [{{name: mlp, source: mlp.onnx}}]
            data: {{data: data.npz}}
            steps:
            """) + text + "gates:\n" + "".join(f"  - {g}\n" for g in all_gates))
        reports[name] = execute.run(spec.load(pipeline, out=folder / "runs" / name))
    return reports


def test_every_gate_is_measured_by_a_real_run(measured):
    (entry,) = measured["full"].data["models"]
    results = {g["metric"]: g for g in entry["gates"]}
    assert all(g["measured"] is not None for g in results.values()), results
    assert all(g["passed"] and g["reason"] is None for g in results.values()), results
    assert results["accuracy"]["measured"] == pytest.approx(entry["accuracy"]["candidate"])
    assert results["top1"]["step"] == "02-validate" and results["accuracy"]["step"] == "02-validate"
    assert 0 < results["size-ratio"]["measured"] < 1
    assert measured["full"].passed


def test_a_metric_never_measured_fails_and_names_the_step_that_would(measured):
    (entry,) = measured["bare"].data["models"]
    results = {g["metric"]: g for g in entry["gates"]}
    assert results["size-ratio"]["passed"]  # the sizes of the artifacts are always known
    for metric in ("accuracy-drop", "accuracy"):
        assert not results[metric]["passed"] and results[metric]["measured"] is None
        assert "labels" in results[metric]["reason"]
    for metric in ("cosine", "top1", "max-abs"):
        assert not results[metric]["passed"] and "validate step" in results[metric]["reason"]
    for metric in ("latency-ratio", "p50-ms", "p99-ms"):
        assert not results[metric]["passed"] and "benchmark step" in results[metric]["reason"]
    assert entry["passed"] is False and measured["bare"].passed is False


def test_figures_of_an_older_artifact_do_not_count(measured):
    """A validate or benchmark that ran before the last model-writing step measured another model than the current one."""
    entry = json.loads(json.dumps(measured["full"].data["models"][0]))
    later = dict(entry["artifacts"][-1], step="04-quantize", path=str(Path(entry["artifacts"][-1]["path"]).with_name("x.onnx")))
    entry["artifacts"].append(later)
    evaluated = gates.evaluate([gates.parse("cosine >= 0.9"), gates.parse("p50-ms <= 1000")], entry)
    assert [g["passed"] for g in evaluated] == [False, False]
    assert "x.onnx" in evaluated[0]["reason"] and "x.onnx" in evaluated[1]["reason"]


def test_every_gate_is_evaluated_when_one_fails(measured):
    entry = measured["full"].data["models"][0]
    checks = [gates.parse("cosine >= 1.5"), gates.parse("size-ratio >= 2"), gates.parse("p50-ms <= 1000")]
    evaluated = gates.evaluate(checks, entry)
    assert [g["passed"] for g in evaluated] == [False, False, True]
    assert "does not meet >= 1.5" in evaluated[0]["reason"] and evaluated[0]["measured"] <= 1.0
