"""`mdeploy benchmark` through the real entry point: the numbers are there and consistent (never timed)."""

from __future__ import annotations


def test_two_models_side_by_side_with_ratios_to_the_first(bench_models, cli):
    result = cli(
        "benchmark", bench_models["fp32"], bench_models["int8"], "--iterations", "7", "--warmup", "2", "--threads", "1", "--json"
    )
    assert result.code == 0, result.stderr
    report = result.json
    first, second = report["models"]
    assert first["iterations"] == second["iterations"] == 7
    for row in (first, second):
        lat = row["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert row["throughput_items_per_s"] > 0 and row["size_bytes"] > 0 and row["peak_memory_bytes"] >= 0
        assert row["batch"] == 1 and row["inputs"] == {"x": [1, 16]}
    assert first["ratio_to_first"]["latency_p50"] == 1.0
    assert second["ratio_to_first"]["size"] < 1.0  # a tiny model: graph overhead weighs more than its weights
    assert report["settings"]["threads"] == 1


def test_duration_batch_and_input_shapes(bench_models, cli):
    result = cli("benchmark", bench_models["fp32"], "--duration", "0.3", "--batch", "4", "--json")
    assert result.code == 0, result.stderr
    row = result.json["models"][0]
    assert row["batch"] == 4 and row["inputs"]["x"] == [4, 16] and row["iterations"] >= 1
    shaped = cli("benchmark", bench_models["fp32"], "--input", "x:3x16", "--iterations", "3", "--json")
    assert shaped.code == 0, shaped.stderr
    assert shaped.json["models"][0]["inputs"]["x"] == [3, 16]


def test_rich_table_without_json(bench_models, cli):
    result = cli("benchmark", bench_models["fp32"], bench_models["int8"], "--iterations", "3")
    assert result.code == 0, result.stderr
    assert "p50 vs first" in result.stdout and "1.00x" in result.stdout


def test_bad_usage_exits_2(bench_models, tmp_path, cli):
    both = cli("benchmark", bench_models["fp32"], "--iterations", "3", "--duration", "1")
    assert both.code == 2 and "not both" in both.stderr
    missing = cli("benchmark", bench_models["fp32"], tmp_path / "nope.onnx")
    assert missing.code == 2 and "not found" in missing.stderr
    wrong_input = cli("benchmark", bench_models["fp32"], "--input", "y:1x16")
    assert wrong_input.code == 2 and "error:" in wrong_input.stderr
