"""`mdeploy benchmark` of language-model folders: timed by generation (measuring/generation_speed.py)."""

from __future__ import annotations

from fixtures import onnx_graphs
from tests.checks import assert_clean_error
from tests.conftest import run_cli


def test_genai_and_transformers_are_timed_by_generation_side_by_side(genai_fp32, tiny_lm_dir):
    folder, _ = genai_fp32
    result = run_cli("benchmark", tiny_lm_dir, folder, "--prompt-tokens", "8", "--new-tokens", "5", "--iterations", "2",
                     "--threads", "1", "--json")
    assert result.code == 0, result.stderr[-3000:]
    settings, (hf, genai) = result.json["settings"], result.json["models"]
    assert (settings["prompt_tokens"], settings["new_tokens"]) == (8, 5)
    assert (hf["format"], genai["format"]) == ("hf-model", "genai")
    for row in (hf, genai):
        assert row["runs"] == 2 and row["prompt_ms"] > 0 and row["decode_tokens_per_s"] > 0
        # latency_ms is the time per decoded token: tokens/s and it say the same thing
        assert abs(row["decode_tokens_per_s"] * row["latency_ms"]["p50"] / 1000 - 1) < 0.5
        assert row["peak_rss_bytes"] > 0 and row["size_bytes"] > 0
    assert genai["ratio_to_first"]["throughput"] == genai["decode_tokens_per_s"] / hf["decode_tokens_per_s"]


def test_language_models_and_other_models_are_benchmarked_apart(genai_fp32, tmp_path):
    folder, _ = genai_fp32
    onnx_graphs.mlp(tmp_path / "mlp.onnx")
    assert_clean_error(run_cli("benchmark", folder, tmp_path / "mlp.onnx"), "benchmark them apart", hint=True)
    assert_clean_error(run_cli("benchmark", folder, "--batch", "4"), "--batch does not apply to language models", hint=True)
