"""Speed of generation, as a language model's users feel it: the prompt's time (prefill, up to the first new token)
and decode tokens per second after it, with the memory the model took.

What `mdeploy benchmark` measures for a language-model folder (an onnxruntime-genai folder, or a Hugging Face one
run by transformers: the baseline people compare with), what the pipeline's `decode-tokens-per-s` gate reads, and
what benchmarks/llm.py prints side by side. The prompt is `prompt_tokens` random token ids (seeded, below the
vocabulary size); exactly `new_tokens` are generated greedily (an end-of-sequence token does not stop it early: a
min_length says so), so every model does the same work. The first new token comes from the prefill; decode
tokens/s counts the `new_tokens - 1` steps after it, each one token through the KV cache, as onnxruntime-genai's
own benchmark (model-generate) and llama.cpp's `tg` count them.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from mdeploy.core import Format, ModelRef
from mdeploy.errors import InputError, ModelLoadError, first_line
from mdeploy.logs import framework_output
from mdeploy.measuring.memory import MemorySampler, release_freed_memory

LM_FORMATS = (Format.GENAI, Format.HF_MODEL)
PROMPT_TOKENS, NEW_TOKENS = 32, 64


def vocab_size(ref: ModelRef) -> int:
    """The vocabulary size random prompts are drawn below (read from the folder's config, without loading it)."""
    if ref.format == Format.GENAI:
        from mdeploy.frameworks import genai_models

        size = genai_models.read_config(ref.path)["model"].get("vocab_size")
    else:
        from mdeploy.frameworks import hf_models

        size = hf_models.read_config(ref.path).get("vocab_size")
    if not isinstance(size, int) or size < 1:
        raise ModelLoadError(f"{ref.name} does not say its vocabulary size", hint="its config names vocab_size")
    return size


def _max_length(ref: ModelRef) -> int | None:
    """The longest prompt + generated tokens the model allows (genai: its search max_length)."""
    if ref.format == Format.GENAI:
        from mdeploy.frameworks import genai_models

        config = genai_models.read_config(ref.path)
        value = config.get("search", {}).get("max_length") or config["model"].get("context_length")
    else:
        from mdeploy.frameworks import hf_models

        value = hf_models.read_config(ref.path).get("max_position_embeddings")
    return int(value) if isinstance(value, int) else None


class _Genai:
    """onnxruntime-genai: a generator per run, as a server makes one per request."""

    def __init__(self, path: Path, threads: int | None) -> None:
        from mdeploy.frameworks.genai_models import onnxruntime_genai

        og = self.og = onnxruntime_genai()
        try:
            with framework_output():
                config = og.Config(str(path))
                if threads:
                    config.overlay(json.dumps({"model": {"decoder": {"session_options": {
                        "intra_op_num_threads": threads, "inter_op_num_threads": 1}}}}))
                self.model = og.Model(config)
        except Exception as exc:  # noqa: BLE001 - onnxruntime-genai's own error, one line of it
            raise ModelLoadError(f"onnxruntime-genai cannot load {path}: {first_line(exc)}") from None

    def run(self, ids: np.ndarray, new_tokens: int) -> tuple[float, float]:
        total = len(ids) + new_tokens
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=total, min_length=total, do_sample=False)
        generator = self.og.Generator(self.model, params)
        start = time.perf_counter()
        generator.append_tokens(ids.astype(np.int32)[None, :])
        generator.generate_next_token()  # the first new token, from the prefill's logits
        prompt = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(new_tokens - 1):
            generator.generate_next_token()  # one step through the KV cache, then the token it picks
        return prompt, time.perf_counter() - start


class _Transformers:
    """transformers on the CPU, float32, its own KV cache (DynamicCache), greedy: the plain way."""

    def __init__(self, path: Path, threads: int | None) -> None:
        from mdeploy.frameworks.hf_models import CausalLM

        self.lm = CausalLM(path)
        self.torch = self.lm.torch
        if threads:
            self.torch.set_num_threads(threads)

    def run(self, ids: np.ndarray, new_tokens: int) -> tuple[float, float]:
        torch, model = self.torch, self.lm.model
        with torch.no_grad():
            start = time.perf_counter()
            out = model(input_ids=torch.tensor(ids[None, :], dtype=torch.long), use_cache=True)
            token = out.logits[:, -1:].argmax(-1)
            prompt = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(new_tokens - 1):
                out = model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
                token = out.logits[:, -1:].argmax(-1)
            return prompt, time.perf_counter() - start


def measure(ref: ModelRef, prompt_tokens: int = PROMPT_TOKENS, new_tokens: int = NEW_TOKENS, threads: int | None = None,
            runs: int = 3, warmup: int = 1, seed: int = 0) -> dict[str, Any]:
    """One language model's benchmark row: prompt ms and decode tokens/s (medians over `runs`, after `warmup`
    untimed runs), the per-token decode latency as `latency_ms` (so latency gates and ratios read as for any model),
    load seconds, and this process's memory growth and peak while the model was loaded and ran."""
    if ref.format not in LM_FORMATS:
        raise InputError(f"{ref.name} is a {ref.format.value} model; generation speed is measured on language models",
                         hint="give an onnxruntime-genai folder or a Hugging Face model folder")
    if new_tokens < 2:
        raise InputError(f"{new_tokens} new tokens leave no decode step to time", hint="generate 2 or more tokens")
    ids = np.random.default_rng(seed).integers(0, vocab_size(ref), size=prompt_tokens)
    room = _max_length(ref)
    if room and prompt_tokens + new_tokens > room:
        raise InputError(f"{prompt_tokens} prompt tokens and {new_tokens} new tokens exceed {ref.name}'s longest "
                         f"sequence ({room})", hint="give fewer tokens, or convert with a larger --max-length")
    release_freed_memory()
    with MemorySampler() as memory:
        start = time.perf_counter()
        lm = _Genai(ref.path, threads) if ref.format == Format.GENAI else _Transformers(ref.path, threads)
        load_s = time.perf_counter() - start
        for _ in range(warmup):
            lm.run(ids, new_tokens)
        timed = [lm.run(ids, new_tokens) for _ in range(runs)]
        del lm
    release_freed_memory()
    prompt_s = statistics.median(p for p, _ in timed)
    step_s = [d / (new_tokens - 1) for _, d in timed]
    per_token = statistics.median(step_s)
    from mdeploy.measuring.latency import percentiles

    return {
        "model": ref.name, "format": ref.format.value, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
        "threads": threads, "runs": runs, "load_seconds": load_s,
        "prompt_ms": 1000 * prompt_s, "decode_tokens_per_s": 1 / per_token if per_token > 0 else None,
        "latency_ms": percentiles(step_s), "throughput_items_per_s": 1 / per_token if per_token > 0 else None,
        "peak_memory_bytes": memory.growth, "peak_rss_bytes": memory.peak,
    }


__all__ = ["LM_FORMATS", "NEW_TOKENS", "PROMPT_TOKENS", "measure", "vocab_size"]
