"""A language model through `mdeploy run`: convert (an onnxruntime-genai folder, the default target for a Hugging Face
folder), quantize {weights: int4} (the folder's weights as MatMulNBits, proved by generation), validate by generation
with a text, benchmark by generation, and the three language-model gates."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fixtures.models import tiny_lm
from mdeploy.pipeline import gates
from mdeploy.reports import html, markdown
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def lm_run(tiny_lm_dir, eval_text, prompts_file, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm_pipeline")
    (folder / "eval.txt").write_text(eval_text.read_text())
    (folder / "prompts.txt").write_text(prompts_file.read_text())
    (folder / "pipeline.yaml").write_text(textwrap.dedent(f"""\
        version: 1
        models: [{{name: lm, source: {tiny_lm_dir}}}]
        data: {{eval: eval.txt, prompts: prompts.txt}}
        steps:
          - convert: {{}}
          - quantize: {{weights: int4, prompts: prompts}}
          - validate: {{generate: true, text: eval, max-new-tokens: 8}}
          - benchmark: {{prompt-tokens: 8, new-tokens: 8, iterations: 1}}
        gates:
          - token-match >= 0.5
          - perplexity-ratio <= 1.05
          - decode-tokens-per-s >= 1
          - size-ratio <= 0.5
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
    quantized = folder / "runs" / "lm" / "02-quantize"
    assert [(Path(a["path"]).name, a["format"]) for a in model["artifacts"]] == [("01-convert", "genai"),
                                                                               ("02-quantize", "genai")]
    assert (quantized / "genai_config.json").is_file() and (quantized / "tokenizer.json").is_file()
    by_metric = {g["metric"]: g for g in model["gates"]}
    assert all(g["passed"] for g in model["gates"]), model["gates"]
    assert 0.5 <= by_metric["token-match"]["measured"] <= 1 and by_metric["token-match"]["step"] == "03-validate"
    assert 0.9 < by_metric["perplexity-ratio"]["measured"] <= 1.05
    assert by_metric["decode-tokens-per-s"]["measured"] > 1 and by_metric["decode-tokens-per-s"]["step"] == "04-benchmark"
    assert by_metric["size-ratio"]["measured"] < 0.5  # int4 weights
    assert {Path(row["model"]).name for row in model["benchmark"]} == {"01-convert", "02-quantize"}  # side by side
    assert all(row["new_tokens"] == 8 and row["prompt_ms"] > 0 for row in model["benchmark"])
    # quantize proved the int4 folder by generation against the float one; validate compared it with the baseline
    steps = {g["step"]: g for g in model["generation"]}
    assert Path(steps["02-quantize"]["reference"]).name == "01-convert" and steps["02-quantize"]["precision"] == "int4"
    assert Path(steps["03-validate"]["reference"]).name == "01-convert"
    assert Path(steps["03-validate"]["candidate"]).name == "02-quantize"
    assert steps["03-validate"]["perplexity"]["tokens"] > 100
    # the pipeline's prompts reached quantize's own proof; the run's reports show each prompt's continuation
    assert [p["prompt"] for p in steps["02-quantize"]["prompts"]] == list(tiny_lm.PROMPTS)
    assert all(p["source_text"] and p["prefill_cosine"] > 0.9 for p in steps["02-quantize"]["prompts"])
    md = markdown.run(result.json)
    assert "## Generation per prompt" in md and f"| lm | 02-quantize | {tiny_lm.PROMPTS[0]} |" in md
    assert "<h3>Generation: 02-quantize (int4)</h3>" in html.page(result.json)


def test_language_model_gates_fail_with_the_measured_figure_or_the_step_that_would_measure_it(lm_run):
    _, result = lm_run
    (model,) = result.json["models"]
    strict = [gates.parse("decode-tokens-per-s >= 1e9"), gates.parse("token-match >= 1.5")]
    verdicts = gates.evaluate(strict, model)
    assert [v["passed"] for v in verdicts] == [False, False]
    (current,) = [r for r in model["benchmark"] if Path(r["model"]).name == "02-quantize"]
    assert verdicts[0]["measured"] == current["decode_tokens_per_s"]  # the current artifact's, not the baseline's
    assert "does not meet >= 1e+09" in verdicts[0]["reason"]
    # a run whose validate had no text measured no perplexity: the gate fails and says what would measure it
    bare = {**model, "generation": [{**g, "perplexity": None} for g in model["generation"]]}
    (ppl,) = gates.evaluate([gates.parse("perplexity-ratio <= 1.05")], bare)
    assert not ppl["passed"] and ppl["measured"] is None and "text:" in ppl["reason"]
    # no proof by generation of the current artifact at all
    (tokens,) = gates.evaluate([gates.parse("token-match >= 0.5")], {**model, "generation": []})
    assert not tokens["passed"] and "generate: true" in tokens["reason"]
