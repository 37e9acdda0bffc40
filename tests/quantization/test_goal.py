"""`quantize --goal latency` (mdeploy/quantization/goal.py) on the session's tiny CNN: every candidate in the table
with its latency and accuracy, the fastest passing one kept and written, the budget honoured, a bar no candidate meets
repaired from the closest one, a bar no model meets failing with the table, and the pipeline step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.checks import assert_clean_error


@pytest.fixture(scope="session")
def cnn_data(cnn, tmp_path_factory) -> dict[str, Path]:
    """The session's tiny CNN (fixtures/models/tiny_cnn.py, exported once by tests/conftest.py) and image-like data
    with labels (the float model's own top-1, so that accuracy-drop is measured on every candidate)."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 3, 32, 32)).astype(np.float32)
    labels = ort.InferenceSession(str(cnn.path)).run(None, {"image": x})[0].argmax(1)
    data = tmp_path_factory.mktemp("goal_data") / "data.npz"
    np.savez(data, image=x, labels=labels)
    return {"model": cnn.path, "calib": data, "eval": data}


def _tried(report: dict) -> list[dict]:
    return [c for c in report["goal"]["candidates"] if c["status"] != "not tried"]


def test_goal_latency_tables_every_candidate_and_keeps_the_fastest_passing_one(cnn_data, cli, tmp_path):
    out = tmp_path / "out" / "cnn_int8.onnx"
    out.parent.mkdir()
    args = ["quantize", cnn_data["model"], "-o", out, "--calib-data", cnn_data["calib"], "--eval-data", cnn_data["eval"],
            "--goal", "latency", "--budget", "60", "--max-error", "accuracy-drop<=0.02", "--no-speed"]
    result = cli(*args, "--json")
    assert result.code == 0, result.stderr[-3000:]
    report = result.json
    g = report["goal"]
    names = [c["name"] for c in g["candidates"]]
    assert len(names) == len(set(names)) >= 5  # static and dynamic forms, QDQ and QOperator, per-channel and per-tensor
    assert {"static qdq u8 per-channel", "static qoperator u8 per-channel", "static qdq u8 per-tensor",
            "dynamic per-tensor", "dynamic per-channel"} <= set(names)
    tried = _tried(report)
    assert len(tried) == len(names) and not g["stopped_early"]
    # every candidate tried has a latency measured against float and its accuracy on the proof data, or is a row that
    # says why onnxruntime could not make it (this CNN's raw graph fails its shape inference without pre-processing)
    failed = [c for c in tried if c["status"] == "failed"]
    assert all(c["reason"] and c["latency_ms"] is None for c in failed)
    measured = [c for c in tried if c["status"] != "failed"]
    assert len(measured) >= 5
    for c in measured:
        assert c["latency_ms"] > 0 and c["speedup"] > 0, c
        assert {"cosine", "accuracy-drop"} <= set(c["accuracy"]), c
    kept = [c for c in tried if c["status"] == "kept"]
    assert len(kept) == 1 and kept[0]["name"] == g["kept"]
    passing = [c for c in measured if c["accuracy"]["accuracy-drop"] <= 0.02]
    assert kept[0]["speedup"] == max(c["speedup"] for c in passing)
    assert all(c["status"] == "passed" and "slower" in c["reason"] for c in passing if c is not kept[0])
    # the model written is the kept one, proven by the same proof as every quantize
    assert report["mode"] == kept[0]["mode"] and report["max_error"]["met"] is True
    assert report["accuracy"]["drop"] == pytest.approx(kept[0]["accuracy"]["accuracy-drop"], abs=1e-4)
    assert [p.name for p in out.parent.iterdir()] == [out.name]
    if g["recommendation"] == "float":  # a tiny model is faster in float: it says so and recommends float
        assert any("no INT8 form beats the float model" in n for n in report["notes"])
        assert kept[0]["speedup"] < 1.0

    again = cli(*args)
    assert_clean_error(again, "exists", hint=True)
    assert out.exists()
    # a tight budget: the defaults are tried (the verb's own quantization), the search stops and says so
    tight = cli(*args[:-5], "--budget", "1", "--force", "--json")
    assert tight.code == 0, tight.stderr[-3000:]
    g = tight.json["goal"]
    assert g["stopped_early"] and g["candidates"][0]["latency_ms"] > 0  # the defaults, always tried
    untried = [c for c in g["candidates"] if c["status"] == "not tried"]
    assert untried and all(c["reason"] == "budget reached" and c["latency_ms"] is None for c in untried)
    assert any("stopped early" in n and "budget" in n for n in tight.json["notes"])
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def test_when_no_candidate_meets_the_bar_the_accuracy_repair_starts_from_the_closest(cnn_data, cli, tmp_path):
    out = tmp_path / "cnn_int8.onnx"
    result = cli("quantize", cnn_data["model"], "-o", out, "--calib-data", cnn_data["calib"], "--goal", "latency",
                 "--budget", "10", "--max-error", "max-abs<=0.000001", "--no-speed", "--json")
    assert result.code == 0, result.stderr[-3000:]
    report = result.json
    tried = _tried(report)
    # the whole table, whatever the budget allowed on a busy machine: every tried candidate missed the bar
    assert len(report["goal"]["candidates"]) >= 5 and tried
    assert all(c["status"] in ("missed bar", "kept", "failed") for c in tried)
    assert all("max-abs" in c["reason"] for c in tried if c["status"] == "missed bar")
    kept = next(c for c in tried if c["status"] == "kept")
    assert "no candidate clears the bar" in kept["reason"]
    # ...so the repair took over from that one, keeping its costliest nodes in float until the bar held
    assert report["goal"]["repaired"] is True and report["goal"]["recommendation"] == "int8"
    assert any("accuracy repair" in n and kept["name"] in n for n in report["notes"])
    assert report["max_error"]["met"] is True and report["max_error"]["kept_in_float"]
    assert [s["status"] for s in report["steps"] if s["name"] == "goal latency"] == ["done"]
    assert [s["status"] for s in report["steps"] if s["name"].startswith("max-error")] == ["passed"]  # one verdict


def test_goal_latency_exits_1_with_the_table_when_no_model_can_meet_the_bar(cnn_data, cli, tmp_path):
    out = tmp_path / "cnn_int8.onnx"
    # the labels are the float model's own top-1: no model can be 10 points more accurate than it
    result = cli("quantize", cnn_data["model"], "-o", out, "--calib-data", cnn_data["calib"], "--eval-data",
                 cnn_data["eval"], "--goal", "latency", "--budget", "10", "--max-error", "accuracy-drop<=-0.1",
                 "--no-speed", "--json")
    assert result.code == 1, result.stderr[-3000:]
    report = result.json
    assert report["goal"]["repaired"] is True and report["goal"]["recommendation"] == "float"
    assert report["max_error"]["met"] is False and report["max_error"]["rounds"]
    assert out.exists()  # the closest form the repair found is written, and the report fails


def test_goal_latency_as_a_pipeline_step(cnn_data, cli, tmp_path):
    (tmp_path / "p.yaml").write_text(
        "version: 1\n"
        f"models:\n  - name: cnn\n    source: {cnn_data['model']}\n"
        f"data:\n  calib: {cnn_data['calib']}\n"
        "steps:\n  - quantize: {goal: latency, budget: 1, calib: calib, no-speed: true}\n"
    )
    result = cli("run", tmp_path / "p.yaml", "--json", cwd=tmp_path)
    assert result.code == 0, result.stderr[-3000:]
    step = result.json["models"][0]["steps"][0]
    assert step["verb"] == "quantize" and step["status"] == "passed"
    g = json.loads((tmp_path / step["report"]).read_text())["goal"]
    assert g["goal"] == "latency" and g["budget_s"] == 1 and g["stopped_early"]
    assert any(c["status"] == "kept" for c in g["candidates"])


def test_goal_latency_refuses_what_it_cannot_search_before_any_work(cnn_data, cli, tmp_path):
    out = tmp_path / "q.onnx"
    base = ["quantize", cnn_data["model"], "-o", out, "--calib-data", cnn_data["calib"], "--goal", "latency"]
    assert_clean_error(cli(*base, "--no-validate"), "--goal latency needs", hint=True, out=out)
    assert_clean_error(cli(*base, "--target", "tensorrt"), "--target tensorrt", hint=True, out=out)
