"""`mdeploy quantize` on an ONNX model reports what onnxruntime runs (the census) and, unless --no-speed, its speed
against the int8 bound; `--max-error speedup>=X` makes a too-slow model exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.checks import assert_clean_error


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> tuple[Path, Path]:
    from fixtures import census_graphs

    out = tmp_path_factory.mktemp("speed")
    return census_graphs.cnn(out / "cnn.onnx"), census_graphs.calibration(out / "calib.npz", (1, 3, 32, 32))


def test_an_impossible_speedup_bar_exits_1_with_the_measured_speed(cnn, tmp_path, cli):
    model, calib = cnn
    out = tmp_path / "q.onnx"
    r = cli("quantize", model, "-o", out, "--calib-data", calib, "--max-error", "cosine>=0.9,speedup>=100", "--json")
    assert r.code == 1, r.stderr[-2000:]
    d = r.json
    speed = d["runtime"]["speed"]
    assert speed["speedup"] < 100 and speed["float_ms"] > 0 and speed["int8_ms"] > 0 and speed["bound_speedup"] > 0
    step = next(s for s in d["steps"] if s["name"] == "speed speedup>=100")
    assert step["status"] == "failed" and d["max_error"]["met"] is False
    assert any(m.startswith("speedup") for m in d["max_error"]["missed"])
    assert d["runtime"]["census"]["integer_time_share"] > 0
    assert out.exists()  # the model is written; the report fails, as for an accuracy bar
    from mdeploy.reports import markdown

    text = markdown.verb(d)  # the reports carry the census and the speed too
    assert "## What onnxruntime runs (static" in text and "| QLinearConv | integer |" in text and "Speed-up over float" in text


def test_no_speed_keeps_the_census_and_a_second_run_needs_force(cnn, tmp_path, cli):
    model, calib = cnn
    out = tmp_path / "q.onnx"
    args = ("quantize", model, "-o", out, "--calib-data", calib, "--no-speed", "--json")
    r = cli(*args)
    assert r.code == 0, r.stderr[-2000:]
    assert "speed" not in r.json["runtime"] and r.json["runtime"]["census"]["mode"] == "static"
    assert_clean_error(cli(*args), "exists", hint=True)
    shown = cli(*args[:-1], "--force")  # and the terminal's short table
    assert shown.code == 0, shown.stderr[-2000:]
    assert "what onnxruntime runs (static" in shown.stdout and "QLinearConv" in shown.stdout
    assert "int8 on this CPU:" in shown.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx"]


def test_a_speedup_bar_without_timing_is_refused(cnn, tmp_path, cli):
    model, calib = cnn
    out = tmp_path / "q.onnx"
    r = cli("quantize", model, "-o", out, "--calib-data", calib, "--max-error", "speedup>=1.2", "--no-speed")
    assert_clean_error(r, "--no-speed", hint=True, out=out)

