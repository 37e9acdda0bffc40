"""`quantize GENAI_FOLDER -o OUT_FOLDER --weights int4|int8`: weight-only quantization of a language model folder.

The folder's decoder (model.onnx + data, as genai_config.json names it) goes through the same weight-only pass as any
ONNX model (weight_only.py: onnxruntime's MatMulNBits quantizer, GatherBlockQuantized embeddings), the rest of the
folder (genai_config.json, tokenizer files) is copied as it is: the result is the folder onnxruntime-genai's builder
writes with `-p int4`, made from a float folder the user already has (a pipeline's `convert` then
`quantize: {weights: int4}`). Quantized weights change the logits, so the proof is by generation against the float
folder (validation/generation.py): greedy tokens on the prompts of `--prompts` (or token ids in `--eval-data`, else a
few built-in ones), judged by the int4/int8 default bar or
`--max-error` (token-match, cosine, max-abs). The verb calls `prove` after the pass, in place of a tensor proof.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, ClassVar

from mdeploy.core import Format, ModelRef
from mdeploy.errors import InputError
from mdeploy.quantization.base import Pass, PassResult
from mdeploy.quantization.weight_only import VERB, OnnxWeightOnly, WeightOnlyOptions

PROOF_NEW_TOKENS = 16  # tokens per default prompt in the proof (convert's proof of a language model generates as many)


class GenaiWeightOnly(Pass):
    verb: ClassVar[str] = VERB
    sources: ClassVar[tuple[Format, ...]] = (Format.GENAI,)
    target: ClassVar[Format] = Format.GENAI
    Options: ClassVar[type] = WeightOnlyOptions
    name: ClassVar[str] = "onnxruntime.quantization.matmul_nbits_quantizer (onnxruntime-genai folder)"
    progress: Any = None

    def __init__(self) -> None:
        self.producers: dict[str, tuple[str, str, list[str]]] = {}

    def run(self, src: ModelRef, out: Path, options: WeightOnlyOptions) -> PassResult:
        from mdeploy.frameworks import genai_models, onnx_models

        decoder = genai_models.model_file(src.path)
        data = set(onnx_models.external_data_files(onnx_models.load_proto(decoder)))
        out.mkdir(parents=True)
        for item in src.path.iterdir():  # everything but the decoder and its weights, as it is
            if item.name != decoder.name and item.name not in data:
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, out / item.name)
        inner = OnnxWeightOnly()
        result = inner.run(ModelRef(decoder, Format.ONNX), out / decoder.name, options)
        self.producers = inner.producers
        return PassResult(ModelRef(out, Format.GENAI), notes=result.notes,
                          details={**result.details, "decoder": decoder.name})


def proof_prompts(ref: ModelRef, prompts: str | None, data: str | None) -> list[Any]:
    """The prompts of the proof: lines of `prompts` (--prompts), rows of input_ids in `data` (--eval-data), or the
    built-in ones; read before the quantization, so that a bad file is exit 2 before minutes of work."""
    from mdeploy.validation import generation

    if prompts is not None and data is not None:
        raise InputError("give --prompts or --eval-data (token ids), not both")
    return generation.read_prompts(ref.path, prompts, data, generation._vocab(ref))


def prove(ref: ModelRef, tmp: Path, weights: str, bar: Any, report: Any, prompts: list[Any]) -> None:
    """The quantized folder against the float one by generation on `prompts` (proof_prompts); recorded in `report`
    (data `generation`, step `generate`, failed when the bar is missed: exit 1)."""
    from mdeploy.validation import generation

    start = time.perf_counter()
    result = generation.compare(ref, ModelRef(tmp, Format.GENAI), prompts, PROOF_NEW_TOKENS, bar=bar, precision=weights)
    report.data["generation"] = result.to_dict()
    report.steps.append(generation.step(result, time.perf_counter() - start))
    report.notes.extend(n.replace(str(tmp), report.data.get("output", str(tmp))) for n in result.notes)
