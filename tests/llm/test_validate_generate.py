"""`mdeploy validate SRC CAND --generate`: greedy generation from both language models on the same prompts, token by
token, logits step by step, perplexity on a text; exit 1 when the bar is missed, 2 for bad prompts or options."""

from __future__ import annotations

import numpy as np
import pytest

from mdeploy import api
from mdeploy.errors import InputError
from tests.checks import assert_clean_error
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def genai_dir(tiny_lm_dir, tmp_path_factory):
    """The tiny LM at fp32 in an onnxruntime-genai folder, built in this process (the proof is what is tested here)."""
    out = tmp_path_factory.mktemp("genai") / "llm"
    api.convert(str(tiny_lm_dir), str(out), no_validate=True)
    return out


def test_a_differently_trained_model_fails_with_exit_1(tiny_lm_dir, other_lm_dir, prompts_file):
    result = run_cli("validate", tiny_lm_dir, other_lm_dir, "--generate", "--prompts", prompts_file, "--max-new-tokens", "12")
    assert result.code == 1, result.stderr[-3000:]
    assert "the cat sees" in result.stdout and "diverges at" in result.stdout
    assert "missed: token-match" in result.stdout and "FAILED" in result.stdout


def test_the_fp32_build_matches_on_prompts_from_a_file_and_from_token_ids(tiny_lm_dir, genai_dir, prompts_file, eval_text,
                                                                           tmp_path):
    report = api.validate(str(tiny_lm_dir), str(genai_dir), generate=True, prompts=str(prompts_file), text=str(eval_text),
                          max_new_tokens=20, max_error="token-match>=1,max-abs<=1e-3,perplexity-ratio<=1.0001")
    gen = report.to_dict()["generation"]
    assert report.passed and gen["precision"] == "fp32" and gen["token_match"] == 1.0
    assert gen["prompts"][0]["prompt"] == "the cat sees"
    assert all(len(p["steps"]) == len(p["source_tokens"]) for p in gen["prompts"])  # every step compared: no divergence
    assert abs(gen["perplexity"]["ratio"] - 1) < 1e-4 and gen["max_error"]["met"]

    ids = np.array([p["prompt_ids"][:3] for p in gen["prompts"]], dtype=np.int64)
    np.savez(tmp_path / "ids.npz", input_ids=ids)
    from_ids = api.validate(str(tiny_lm_dir), str(genai_dir), generate=True, data=str(tmp_path / "ids.npz"), max_new_tokens=8)
    prompts = from_ids.to_dict()["generation"]["prompts"]
    assert from_ids.passed and [p["prompt_ids"] for p in prompts] == ids.tolist()

    strict = api.validate(str(tiny_lm_dir), str(genai_dir), generate=True, data=str(tmp_path / "ids.npz"), max_new_tokens=4,
                          max_error="max-abs<=1e-9")
    assert not strict.passed and "max-abs" in strict.to_dict()["generation"]["max_error"]["missed"][0]


def test_perplexity_ratio_in_the_bar_needs_a_text(tiny_lm_dir, genai_dir):
    with pytest.raises(InputError, match="perplexity-ratio cannot be measured"):
        api.validate(str(tiny_lm_dir), str(genai_dir), generate=True, max_new_tokens=2, max_error="perplexity-ratio<=1.1")


def test_bad_prompts_and_options_exit_2(tiny_lm_dir, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    assert_clean_error(run_cli("validate", tiny_lm_dir, tiny_lm_dir, "--generate", "--prompts", empty),
                       "has no prompts", hint=True)
    assert_clean_error(run_cli("validate", tiny_lm_dir, tiny_lm_dir, "--generate", "--prompts", tmp_path / "nope.txt"),
                       "prompts file not found")
    assert_clean_error(run_cli("validate", tiny_lm_dir, tiny_lm_dir, "--prompts", empty), "--prompts does not apply without "
                       "--generate", hint=True)
    np.savez(tmp_path / "ids.npz", input_ids=np.array([[1, 2, 10**6]]))
    assert_clean_error(run_cli("validate", tiny_lm_dir, tiny_lm_dir, "--generate", "--data", tmp_path / "ids.npz"),
                       "outside the vocabulary")
