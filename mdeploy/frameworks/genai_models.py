"""onnxruntime-genai folders: reading what one holds, and greedy generation from it.

The candidate side of the proof by generation (validation/generation.py), and what benchmarks and serving call to
generate: `GenaiLM(path).greedy(ids, n)` feeds token ids (the source's tokenizer made them, so both sides see the
same prompt) and keeps the logits every new token was chosen from. onnxruntime-genai runs the KV cache itself
(past_present_share_buffer), which is exactly what the export must get right.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mdeploy.deps import require
from mdeploy.errors import InputError, ModelLoadError, first_line
from mdeploy.logs import framework_output


def onnxruntime_genai():
    module = require("onnxruntime_genai", extra="llm", purpose="run onnxruntime-genai language models")
    module.disable_telemetry_events()  # else every session is recorded under ~/.cache/Microsoft
    return module


def read_config(path: Path) -> dict[str, Any]:
    """genai_config.json of a folder (read without onnxruntime-genai)."""
    try:
        config = json.loads((Path(path) / "genai_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {Path(path) / 'genai_config.json'}: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ModelLoadError(f"{Path(path) / 'genai_config.json'} has no `model` section")
    return config


def model_file(path: Path) -> Path:
    """The decoder's ONNX file named in genai_config.json."""
    name = read_config(path)["model"].get("decoder", {}).get("filename", "model.onnx")
    return Path(path) / name


def precision(path: Path) -> str:
    """fp32 | fp16 | int8 | int4: what the decoder's weights are, read from its graph without its weights (MatMulNBits'
    `bits`; float16 initializers). It picks the default tolerances of a proof by generation."""
    from mdeploy.frameworks import onnx_skeleton

    graph = onnx_skeleton.load_without_weights(model_file(path)).graph
    bits = {attr.i for node in graph.node if node.op_type in ("MatMulNBits", "GatherBlockQuantized")
            for attr in node.attribute if attr.name == "bits"}
    if bits:
        return "int4" if min(bits) <= 4 else "int8"
    if any(node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul", "QLinearMatMul") for node in graph.node):
        return "int8"
    float16 = 10  # onnx.TensorProto.FLOAT16
    if any(init.data_type == float16 for init in graph.initializer):
        return "fp16"
    return "fp32"


def provider(path: Path) -> str:
    """The execution provider a folder is built for: cuda when its decoder's session options name CUDA, else cpu."""
    options = read_config(path)["model"].get("decoder", {}).get("session_options", {}).get("provider_options", [])
    return "cuda" if any("cuda" in entry for entry in options if isinstance(entry, dict)) else "cpu"


def runs_here(path: Path) -> str | None:
    """None when this onnxruntime-genai can run the folder, else why not (a CUDA folder without CUDA here)."""
    if provider(path) == "cuda" and not onnxruntime_genai().is_cuda_available():
        return (f"{Path(path).name} is built for CUDA and onnxruntime-genai here has no CUDA: run it where "
                "onnxruntime-genai-cuda and a GPU are")
    return None


def set_max_length(path: Path, max_length: int) -> None:
    """Write the longest sequence (prompt + generated tokens) a generator of this folder allows into its config: the
    search's max_length, which onnxruntime-genai sizes the shared KV-cache buffer by."""
    config = read_config(path)
    context = int(config["model"].get("context_length") or max_length)
    if max_length > context:
        raise InputError(f"--max-length {max_length} is longer than the model's context ({context} tokens)",
                         hint=f"give --max-length {context} or less")
    config.setdefault("search", {})["max_length"] = max_length
    (Path(path) / "genai_config.json").write_text(json.dumps(config, indent=4))


class GenaiLM:
    """An onnxruntime-genai model on the device it is built for, loaded once for every prompt of a comparison or a benchmark."""

    def __init__(self, path: Path) -> None:
        og = onnxruntime_genai()
        config = read_config(path)
        why_not = runs_here(path)
        if why_not:
            raise ModelLoadError(why_not, hint="mdeploy convert HF_DIR -o DIR --device cpu builds one that runs here")
        self.og = og
        self.path = Path(path)
        self.max_length = int(config.get("search", {}).get("max_length") or config["model"].get("context_length") or 0)
        try:
            with framework_output():
                self.model = og.Model(str(path))
        except Exception as exc:  # noqa: BLE001 - onnxruntime-genai's own error, one line of it
            raise ModelLoadError(f"onnxruntime-genai cannot load {path}: {first_line(exc)}") from None

    def _generator(self, length: int) -> Any:
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=length, do_sample=False)
        return self.og.Generator(self.model, params)

    def check_length(self, prompt: int, new: int) -> None:
        if self.max_length and prompt + new > self.max_length:
            raise InputError(f"a prompt of {prompt} tokens and {new} new tokens exceed the model's max_length "
                             f"({self.max_length})", hint="give fewer --max-new-tokens, a shorter prompt, or convert "
                             "with a larger --max-length")

    def greedy(self, ids: list[int], max_new_tokens: int, keep_logits: bool = True) -> tuple[list[int], np.ndarray]:
        """Greedy continuation of `ids`: the new tokens (up to and including an end-of-sequence token) and, with
        `keep_logits`, the logits each was chosen from (steps x vocab, float32): step 0 is the prefill's."""
        self.check_length(len(ids), max_new_tokens)
        tokens: list[int] = []
        logits: list[np.ndarray] = []
        try:
            generator = self._generator(len(ids) + max_new_tokens)
            generator.append_tokens(np.asarray([ids], dtype=np.int32))
            while len(tokens) < max_new_tokens and not generator.is_done():
                if keep_logits:
                    logits.append(np.asarray(generator.get_logits(), dtype=np.float32).reshape(-1))
                generator.generate_next_token()
                tokens.append(int(generator.get_next_tokens()[0]))
        except RuntimeError as exc:
            raise ModelLoadError(f"onnxruntime-genai cannot run {self.path}: {first_line(exc)}") from None
        return tokens, np.stack(logits) if logits else np.zeros((0, 0), np.float32)

    def nll(self, ids: list[int]) -> float:
        """Summed negative log-likelihood of ids[1:] given what precedes each: one prefill of the whole window, whose
        logits at every position onnxruntime-genai returns as the `logits` output."""
        self.check_length(len(ids), 0)
        try:
            generator = self._generator(len(ids))
            generator.append_tokens(np.asarray([ids], dtype=np.int32))
            logits = np.asarray(generator.get_output("logits"), dtype=np.float64)[0, :-1]
        except RuntimeError as exc:
            raise ModelLoadError(f"onnxruntime-genai cannot run {self.path}: {first_line(exc)}") from None
        return float(_cross_entropy(logits, np.asarray(ids[1:])))


    def release(self) -> None:
        del self.model


def _cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    top = logits.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(logits - top).sum(axis=-1)) + top[:, 0]
    return float((log_z - logits[np.arange(len(targets)), targets]).sum())


def generate(path: Path, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy continuations of token-id prompts (no logits kept): what a benchmark times and a server answers."""
    model = GenaiLM(path)
    return [model.greedy(ids, max_new_tokens, keep_logits=False)[0] for ids in prompts]
