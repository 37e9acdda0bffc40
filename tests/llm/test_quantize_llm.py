"""`mdeploy quantize LLM_FOLDER --weights int8|int4` proves the result by generation on the user's prompts (`--prompts`
or token ids in `--eval-data`), and the reports show that proof per prompt."""

from __future__ import annotations

import numpy as np

from fixtures.models import tiny_lm
from mdeploy.reports import html, markdown
from tests.checks import assert_clean_error
from tests.conftest import run_cli


def test_the_proof_by_generation_runs_on_the_given_prompts_and_the_reports_show_each(genai_fp32, prompts_file, tmp_path):
    folder, _ = genai_fp32
    out = tmp_path / "llm_int8"
    result = run_cli("quantize", folder, "-o", out, "--weights", "int8", "--prompts", prompts_file, "--json")
    assert result.code == 0, result.stderr[-3000:]
    gen = result.json["generation"]
    assert [p["prompt"] for p in gen["prompts"]] == list(tiny_lm.PROMPTS)  # not the built-in prompts
    md = markdown.verb(result.json)
    assert "## Generation: generate (int8)" in md and "| prompt | token match | first divergence |" in md
    for prompt in tiny_lm.PROMPTS:
        assert f"| {prompt} |" in md
    page = html.page(result.json)
    assert "<h3>Generation: generate (int8)</h3>" in page and all(f"<td>{p}</td>" in page for p in tiny_lm.PROMPTS)

    ids = np.array([p["prompt_ids"][:2] for p in gen["prompts"][:2]], dtype=np.int64)
    np.savez(tmp_path / "ids.npz", input_ids=ids)
    from_ids = run_cli("quantize", folder, "-o", tmp_path / "from_ids", "--weights", "int8", "--eval-data",
                       tmp_path / "ids.npz", "--json")
    assert from_ids.code == 0, from_ids.stderr[-3000:]
    assert [p["prompt_ids"] for p in from_ids.json["generation"]["prompts"]] == ids.tolist()


def test_bad_prompts_are_refused_before_any_work(genai_fp32, cnn, tmp_path):
    folder, _ = genai_fp32
    assert_clean_error(run_cli("quantize", folder, "-o", tmp_path / "a", "--weights", "int8", "--prompts",
                               tmp_path / "missing.txt"), "prompts file not found")
    assert not (tmp_path / "a").exists()
    (tmp_path / "empty.txt").write_text("\n\n")
    assert_clean_error(run_cli("quantize", folder, "-o", tmp_path / "b", "--weights", "int8", "--prompts",
                               tmp_path / "empty.txt"), "has no prompts")
    assert_clean_error(run_cli("quantize", cnn.path, "-o", tmp_path / "c.onnx", "--prompts", tmp_path / "empty.txt"),
                       "--prompts is for the proof by generation of a language model folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt"]
