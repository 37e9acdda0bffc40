"""Hugging Face language model folder -> onnxruntime-genai folder, with onnxruntime-genai's model builder.

Why the builder: it writes the decoder the way onnxruntime's CPU kernels run fastest (GroupQueryAttention with a
shared KV-cache buffer, MatMulNBits for int4/int8 weights), with the genai_config.json that onnxruntime-genai's
generator reads, and the onnxruntime team keeps it current for each architecture. It is called through its Python API
(parse_extra_options + create_model, as its command line does), offline: the source is a local `save_pretrained`
folder, the builder's cache folder lies in convert's staging folder, and nothing is left in /tmp or ~/.cache.

Architectures the builder does not cover are refused before any work (exit 2) with the list of those it does.
GPT-2 is one; what was tried for it is in docs/llm.md. The result is proven by generation (validation/generation.py),
not on random tensors: greedy tokens, logits and, on request, perplexity against the source.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mdeploy.converters.base import ConversionResult, Converter
from mdeploy.core import Format, ModelRef
from mdeploy.deps import require
from mdeploy.errors import ConversionError, InputError, first_line
from mdeploy.frameworks import genai_models, hf_models
from mdeploy.logs import framework_output

# The decoder-only text models onnxruntime-genai 0.18's builder converts for the CPU (its create_model dispatch)
ARCHITECTURES = (
    "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "PhiForCausalLM",
    "Phi3ForCausalLM", "Phi3SmallForCausalLM", "GemmaForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM",
    "GraniteForCausalLM", "OlmoForCausalLM", "NemotronForCausalLM", "InternLM2ForCausalLM", "SmolLM3ForCausalLM",
    "Ernie4_5ForCausalLM", "HunYuanDenseV1ForCausalLM", "Lfm2ForCausalLM", "ChatGLMModel",
)
PRECISIONS = ("fp32", "fp16", "int8", "int4")
# what a CPU build may be: the builder's float16 decoder is a GPU model (no GroupQueryAttention on the CPU path, and
# onnxruntime's CPU kernels fail on its decode step: "Shape mismatch attempting to re-use buffer", seen with 0.18);
# `--device cuda` builds for onnxruntime-genai's CUDA provider, which runs every precision
CPU_PRECISIONS = ("fp32", "int8", "int4")


@dataclass
class HfToGenaiOptions:
    precision: str | None = field(default=None, metadata={"help": "fp32 (default) | fp16 | int8 | int4 (weights of the "
                                                                  "MatMuls as MatMulNBits blocks)"})
    max_length: int | None = field(default=None, metadata={"help": "longest prompt + generated tokens a generator "
                                                                    "allows (default: the model's context length)"})
    device: str | None = field(default=None, metadata={"help": "cpu (default) | cuda: the execution provider the folder "
                                                                "is built for"})


def check_architecture(path: Path) -> str:
    """The source's architecture, or exit 2 naming those the builder converts (read from config.json alone)."""
    arch = hf_models.architecture(path)
    if arch not in ARCHITECTURES:
        raise ConversionError(
            f"{arch} is not an architecture onnxruntime-genai's model builder converts",
            hint="supported: " + ", ".join(ARCHITECTURES),
        )
    return arch


def check_tokenizer(path: Path) -> None:
    """Exit 2 before any work when the folder has no tokenizer: the builder loads one with transformers to write the
    generator's token ids and the tokenizer files onnxruntime-genai reads, and fails deep inside without it."""
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise InputError(f"{path} has no tokenizer (tokenizer.json, tokenizer.model or vocab.json): onnxruntime-genai's "
                         "model builder writes the tokenizer into the folder it builds",
                         hint="save the model's tokenizer beside it: tokenizer.save_pretrained(FOLDER)")


def check_head_size(config: dict) -> None:
    """Exit 2 before any work when the attention heads are a size onnxruntime's CPU GroupQueryAttention kernel (what
    the builder writes) refuses at the first token: it needs a multiple of 16 (real models use 64 or 128; a small
    test model easily has 24), and the failure otherwise comes only from the proof, after the whole build."""
    heads = config.get("num_attention_heads")
    size = config.get("head_dim") or (config.get("hidden_size", 0) // heads if heads else None)
    if isinstance(size, int) and size % 16:
        raise ConversionError(f"the attention head size is {size} (hidden_size / num_attention_heads): onnxruntime's "
                              "GroupQueryAttention CPU kernel, which the builder's graph uses, needs a multiple of 16",
                              hint="give the model a head size of 16, 32, 64 or 128")


class HfToGenai(Converter):
    sources: ClassVar[tuple[Format, ...]] = (Format.HF_MODEL,)
    target: ClassVar[Format] = Format.GENAI
    Options: ClassVar[type] = HfToGenaiOptions
    name: ClassVar[str] = "onnxruntime-genai model builder"

    def convert(self, src: ModelRef, out: Path, options: HfToGenaiOptions) -> ConversionResult:
        precision = options.precision or "fp32"
        if precision not in PRECISIONS:
            raise InputError(f"--precision {precision} does not apply to a language model", hint="give " + " | ".join(CPU_PRECISIONS))
        device = options.device or "cpu"
        if device not in ("cpu", "cuda"):
            raise InputError(f"--device {device}: a language model is built for cpu or cuda", hint="give --device cuda")
        if device == "cpu" and precision not in CPU_PRECISIONS:
            raise ConversionError(f"--precision {precision}: onnxruntime-genai's float16 language models run on GPUs, and "
                                  "this build is for the CPU", hint="give --device cuda, or --precision " + " | ".join(CPU_PRECISIONS))
        if options.max_length is not None and options.max_length < 2:
            raise InputError(f"--max-length {options.max_length} leaves no room to generate", hint="e.g. --max-length 2048")
        arch = check_architecture(src.path)
        check_tokenizer(src.path)
        config = hf_models.read_config(src.path)
        check_head_size(config)
        context = config.get("max_position_embeddings")
        if options.max_length is not None and isinstance(context, int) and options.max_length > context:
            raise InputError(f"--max-length {options.max_length} is longer than the model's context ({context} tokens)",
                             hint=f"give --max-length {context} or less")
        build(src.path, out, precision, device)
        if options.max_length is not None:
            genai_models.set_max_length(out, options.max_length)
        copied = copy_tokenizer(src.path, out)
        og = genai_models.onnxruntime_genai()
        notes = [f"{arch} built by onnxruntime-genai {og.__version__}'s model builder at {precision}"
                 + (" for CUDA" if device == "cuda" else "")]
        return ConversionResult(
            output=ModelRef(out, Format.GENAI), notes=notes,
            details={"architecture": arch, "precision": precision, "device": device, "onnxruntime_genai": og.__version__,
                     "tokenizer_files": copied, "max_length": genai_models.read_config(out)["search"].get("max_length")},
        )


def build(source: Path, out: Path, precision: str, device: str = "cpu") -> None:
    """Run the builder on `source` into the new folder `out` for `device`'s execution provider (cpu | cuda: the builder
    writes a CUDA folder on any machine); its cache folder sits beside `out` (convert's staging folder) and is deleted
    after the build."""
    builder = _builder()
    cache = out.parent / f".{out.name}.builder_cache"
    try:
        with _offline(), framework_output():
            extra = builder.parse_extra_options("", str(source), str(out), precision, device, str(cache), [])
            builder.create_model("", str(source), str(out), precision, device, str(cache), **extra)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - the builder's own failure, as one line
        raise ConversionError(f"onnxruntime-genai's model builder failed on {source}: {first_line(exc)}",
                              hint="mdeploy --verbose convert ... shows the builder's own output") from None
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    if not (out / "genai_config.json").is_file():
        raise ConversionError(f"onnxruntime-genai's model builder wrote no genai_config.json for {source}")


def _builder() -> Any:
    genai_models.onnxruntime_genai()  # the extra's own package first: a missing extra is said before seconds of imports
    require("onnx_ir", extra="llm", purpose="build onnxruntime-genai models")
    require("transformers", extra="llm", purpose="build onnxruntime-genai models")
    hf_models.transformers()  # its loggers quiet
    return require("onnxruntime_genai.models.builder", extra="llm", purpose="build onnxruntime-genai models")


@contextmanager
def _offline():
    """Nothing is downloaded: Hugging Face's libraries read only the local folder while the builder runs."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({k: "1" for k in saved})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def copy_tokenizer(source: Path, out: Path) -> list[str]:
    """The source's tokenizer files the builder did not write (it saves the tokenizer transformers loads), so that
    onnxruntime-genai's Tokenizer and the user's own code find what they found beside the source."""
    copied = []
    for name in hf_models.TOKENIZER_FILES:
        if name == "generation_config.json":
            continue
        if (source / name).is_file() and not (out / name).exists():
            shutil.copy2(source / name, out / name)
        if (out / name).is_file():
            copied.append(name)
    return copied
