"""A language model through `mdeploy run`: convert (an onnxruntime-genai folder, the default target for a Hugging Face
folder), validate by generation with a text, benchmark by generation, and the three language-model gates."""

from __future__ import annotations

import textwrap

import pytest

from mdeploy.pipeline import gates
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def lm_run(tiny_lm_dir, eval_text, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm_pipeline")
    (folder / "eval.txt").write_text(eval_text.read_text())
    (folder / "pipeline.yaml").write_text(textwrap.dedent(f"""\
        version: 1
        models: [{{name: lm, source: {tiny_lm_dir}}}]
        data: {{eval: eval.txt}}
        steps:
          - convert: {{}}
          - validate: {{generate: true, text: eval, max-new-tokens: 8}}
          - benchmark: {{prompt-tokens: 8, new-tokens: 8, iterations: 1}}
        gates:
          - token-match >= 1
          - perplexity-ratio <= 1.001
          - decode-tokens-per-s >= 1
        """))
    result = run_cli("run", "pipeline.yaml", "--out", "runs", "--json", cwd=folder)
    return folder, result


def test_a_language_model_pipeline_converts_proves_by_generation_and_gates(lm_run):
    folder, result = lm_run
    assert result.code == 0, result.stderr[-3000:]
    (model,) = result.json["models"]
    convert = next(s for s in model["steps"] if s["verb"] == "convert")
    assert convert["status"] == "passed"
    written = folder / "runs" / "lm" / "01-convert"
    assert (written / "genai_config.json").is_file() and (written / "model.onnx").is_file()  # a genai folder
    assert model["artifacts"][0]["format"] == "genai"
    by_metric = {g["metric"]: g for g in model["gates"]}
    assert by_metric["token-match"]["measured"] == 1.0 and by_metric["token-match"]["step"] == "02-validate"
    assert 0.999 < by_metric["perplexity-ratio"]["measured"] <= 1.001
    assert by_metric["decode-tokens-per-s"]["measured"] > 1 and by_metric["decode-tokens-per-s"]["step"] == "03-benchmark"
    (row,) = model["benchmark"]
    assert row["new_tokens"] == 8 and row["prompt_ms"] > 0
    # the validate step compared the genai folder with the Hugging Face source, on the text the file named
    (proof,) = [g for g in model["generation"] if g["step"] == "02-validate"]
    assert proof["perplexity"]["tokens"] > 100


def test_language_model_gates_fail_with_the_measured_figure_or_the_step_that_would_measure_it(lm_run):
    _, result = lm_run
    (model,) = result.json["models"]
    strict = [gates.parse("decode-tokens-per-s >= 1e9"), gates.parse("token-match >= 1.5")]
    verdicts = gates.evaluate(strict, model)
    assert [v["passed"] for v in verdicts] == [False, False]
    assert verdicts[0]["measured"] == model["benchmark"][0]["decode_tokens_per_s"]
    assert "does not meet >= 1e+09" in verdicts[0]["reason"]
    # a run whose validate had no text measured no perplexity: the gate fails and says what would measure it
    bare = {**model, "generation": [{**g, "perplexity": None} for g in model["generation"]]}
    (ppl,) = gates.evaluate([gates.parse("perplexity-ratio <= 1.05")], bare)
    assert not ppl["passed"] and ppl["measured"] is None and "text:" in ppl["reason"]
    # no proof by generation of the current artifact at all
    (tokens,) = gates.evaluate([gates.parse("token-match >= 0.5")], {**model, "generation": []})
    assert not tokens["passed"] and "generate: true" in tokens["reason"]
