"""`mdeploy convert HF_DIR -o llm/`: a Hugging Face language model to an onnxruntime-genai folder, proven by
generation; int4/int8 builds; the refusals (an architecture the builder does not convert, the llm extra missing)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from mdeploy import api
from tests.checks import assert_clean_error, without_module
from tests.conftest import run_cli

GENAI_FILES = {"genai_config.json", "model.onnx", "model.onnx.data", "tokenizer.json", "tokenizer_config.json"}


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_fp32_build_generates_every_token_the_source_does(genai_fp32, tiny_lm_dir):
    out, report = genai_fp32
    assert report["passed"] and report["format"] == "genai"
    gen = report["generation"]
    assert gen["precision"] == "fp32" and gen["token_match"] == 1.0
    assert all(d is None for d in gen["first_divergence"])
    assert gen["prefill"]["max_abs"] < 1e-3 and gen["decode"]["max_abs"] < 1e-3
    assert gen["decode"]["cosine"] > 0.99999
    assert [s["name"] for s in report["steps"]] == ["convert hf-model -> genai", "generate"]
    assert {p.name for p in out.iterdir()} == GENAI_FILES
    assert [p.name for p in out.parent.iterdir()] == ["llm"]  # no staging folder, no builder cache left
    config = json.loads((out / "genai_config.json").read_text())
    assert config["model"]["decoder"]["filename"] == "model.onnx"
    assert {p.name for p in tiny_lm_dir.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}


def test_the_trained_model_says_something(genai_fp32):
    """A random init repeats one token; the trained LM's continuations are varied (else the proof proves nothing)."""
    for prompt in genai_fp32[1]["generation"]["prompts"]:
        assert len(prompt["source_tokens"]) >= 8
        assert len(set(prompt["source_tokens"])) >= 4, prompt


def test_int4_and_int8_builds_replace_only_with_force(tiny_lm_dir, genai_fp32, eval_text, tmp_path):
    source = _digest(tiny_lm_dir)
    out = tmp_path / "llm"
    int4 = run_cli("convert", tiny_lm_dir, "-o", out, "--precision", "int4", "--max-length", "96", "--json")
    assert int4.code == 0, int4.stderr[-3000:]
    gen = int4.json["generation"]
    assert gen["precision"] == "int4" and gen["max_error"]["met"]
    assert 0.9 < gen["prefill"]["cosine"] < 1.0  # quantized: close, not equal
    assert json.loads((out / "genai_config.json").read_text())["search"]["max_length"] == 96
    fp32_bytes = (genai_fp32[0] / "model.onnx.data").stat().st_size
    assert (out / "model.onnx.data").stat().st_size < 0.5 * fp32_bytes

    again = run_cli("convert", tiny_lm_dir, "-o", out, "--precision", "int4")
    assert_clean_error(again, "output exists", hint=True)
    int8 = run_cli("convert", tiny_lm_dir, "-o", out, "--precision", "int8", "--force", "--no-validate", "--json")
    assert int8.code == 0, int8.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == GENAI_FILES and [p.name for p in tmp_path.iterdir()] == ["llm"]

    validated = api.validate(str(tiny_lm_dir), str(out), generate=True, text=str(eval_text), max_new_tokens=12)
    assert validated.passed
    gen = validated.to_dict()["generation"]
    assert gen["precision"] == "int8"  # read from the weights: MatMulNBits with 8 bits
    ppl = gen["perplexity"]
    assert ppl["tokens"] > 500 and 1.0 < ppl["source"] < 3.0
    assert abs(ppl["ratio"] - ppl["candidate"] / ppl["source"]) < 1e-12 and ppl["ratio"] < 1.05
    assert _digest(tiny_lm_dir) == source  # the input is never modified


def test_an_architecture_the_builder_does_not_convert_is_refused(tmp_path):
    src = tmp_path / "gpt2"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    (src / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    out = tmp_path / "llm"
    result = run_cli("convert", src, "-o", out)
    assert_clean_error(result, "GPT2LMHeadModel", "supported: LlamaForCausalLM", hint=True, out=out)


def test_a_folder_without_a_tokenizer_is_refused_before_the_builder_runs(tiny_lm_dir, tmp_path):
    src = tmp_path / "no_tokenizer"
    src.mkdir()
    for name in ("config.json", "model.safetensors"):
        (src / name).symlink_to(tiny_lm_dir / name)
    out = tmp_path / "llm"
    result = run_cli("convert", src, "-o", out)
    assert_clean_error(result, "has no tokenizer", "tokenizer.save_pretrained", hint=True, out=out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no_tokenizer"]


def test_a_head_size_onnxruntimes_attention_kernel_refuses_is_refused_before_the_builder_runs(tiny_lm_dir, tmp_path):
    src = tmp_path / "head24"
    src.mkdir()
    config = json.loads((tiny_lm_dir / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "hidden_size": 96, "num_attention_heads": 4, "head_dim": None}))
    shutil.copy(tiny_lm_dir / "tokenizer.json", src)
    (src / "model.safetensors").symlink_to(tiny_lm_dir / "model.safetensors")  # never read: refused from config.json
    out = tmp_path / "llm"
    result = run_cli("convert", src, "-o", out)
    assert_clean_error(result, "attention head size is 24", "multiple of 16", hint=True, out=out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head24"]


def test_a_missing_llm_extra_names_it(tiny_lm_dir, tmp_path):
    """onnxruntime-genai hidden behind an import hook that refuses it, as if it were not installed."""
    out = tmp_path / "llm"
    result = run_cli("convert", tiny_lm_dir, "-o", out, env=without_module(tmp_path, "onnxruntime_genai"))
    assert_clean_error(result, "pip install 'mdeploy[llm]'", hint=True, out=out)


def test_float16_is_built_for_cuda_and_said_to_be_unproven_where_there_is_none(tiny_lm_dir, genai_fp32, tmp_path):
    """onnxruntime-genai's builder writes a CUDA folder on any machine; its proof by generation needs CUDA, so on this
    CPU machine it is written and reported as not validated, and running it says why (exit 2)."""
    from mdeploy.frameworks import genai_models

    out = tmp_path / "llm16"
    result = run_cli("convert", tiny_lm_dir, "-o", out, "--precision", "fp16", "--device", "cuda", "--json")
    assert result.code == 0, result.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == GENAI_FILES
    assert genai_models.provider(out) == "cuda" and genai_models.precision(out) == "fp16"
    assert genai_models.provider(genai_fp32[0]) == "cpu"
    fp32_bytes = (genai_fp32[0] / "model.onnx.data").stat().st_size
    assert 0.45 < (out / "model.onnx.data").stat().st_size / fp32_bytes < 0.55  # float16 weights
    (convert,) = [s for s in result.json["steps"] if s["name"].startswith("convert")]
    assert convert["details"]["device"] == "cuda" and convert["details"]["precision"] == "fp16"
    assert [s["status"] for s in result.json["steps"] if s["name"] == "generate"] == ["skipped"]
    assert any(n.startswith("not validated: llm16 is built for CUDA") for n in result.json["notes"]), result.json["notes"]
    run = run_cli("validate", tiny_lm_dir, out, "--generate")
    assert_clean_error(run, "llm16 is built for CUDA and onnxruntime-genai here has no CUDA", "--device cpu", hint=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llm16"]


def test_float16_and_a_length_past_the_context_are_refused(tiny_lm_dir, tmp_path):
    out = tmp_path / "llm"
    result = run_cli("convert", tiny_lm_dir, "-o", out, "--precision", "fp16")
    assert_clean_error(result, "run on GPUs", "--device cuda", "fp32 | int8 | int4", hint=True, out=out)
    result = run_cli("convert", tiny_lm_dir, "-o", out, "--max-length", "4096")
    assert_clean_error(result, "longer than the model's context (128 tokens)", hint=True, out=out)
    result = run_cli("convert", tiny_lm_dir, "-o", out, "--atol", "0.1")  # proven by generation, not tensors
    assert_clean_error(result, "--atol does not apply to a language model", "--generate --max-error", hint=True, out=out)
