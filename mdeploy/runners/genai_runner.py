"""onnxruntime-genai folders as a Runner: token ids in, greedily generated token ids out.

A language model's answer to a prompt is the tokens it generates, so that is what the tensor machinery (package's
comparison with the package and the served model, a smoke test over HTTP) compares: input `input_ids` (int64,
batch x prompt length), output `generated_ids` (int64, batch x MAX_NEW_TOKENS; after an end-of-sequence token the row
is padded with -1). Greedy generation is deterministic, so two correct copies of one model answer the same ids.
The KV cache is onnxruntime-genai's own (frameworks/genai_models.py).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from mdeploy.core import Format, ModelRef, TensorSpec
from mdeploy.runners.base import Feed, Runner

MAX_NEW_TOKENS = 16  # tokens generated per prompt (a package's server generates as many)
PAD = -1  # after an end-of-sequence token


def io_specs(ref: ModelRef) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The runner's inputs and outputs, read from genai_config.json alone (token ids below the vocabulary size)."""
    from mdeploy.frameworks import genai_models

    vocab = genai_models.read_config(ref.path)["model"].get("vocab_size")
    value_range = (0, int(vocab)) if isinstance(vocab, int) else None
    return ([TensorSpec("input_ids", ("batch", "sequence"), "int64", value_range)],
            [TensorSpec("generated_ids", ("batch", MAX_NEW_TOKENS), "int64")])


class GenaiRunner(Runner):
    formats: ClassVar[tuple[Format, ...]] = (Format.GENAI,)
    framework: ClassVar[str] = "onnxruntime-genai"

    def _load(self) -> None:
        from mdeploy.frameworks.genai_models import GenaiLM

        if self.device != "cpu":
            from mdeploy.errors import InputError

            raise InputError("onnxruntime-genai folders run on the CPU here", hint="give --device cpu")
        self.lm = GenaiLM(self.ref.path)
        inputs, self._outputs = io_specs(self.ref)
        self._inputs = self.apply_overrides(inputs)

    def input_specs(self) -> list[TensorSpec]:
        return self._inputs

    def output_names(self) -> list[str]:
        return [o.name for o in self._outputs]

    def _infer(self, feed: Feed) -> dict[str, np.ndarray]:
        rows = np.asarray(feed["input_ids"])
        out = np.full((rows.shape[0], MAX_NEW_TOKENS), PAD, dtype=np.int64)
        for i, ids in enumerate(rows):
            tokens = self.lm.greedy([int(t) for t in ids], MAX_NEW_TOKENS, keep_logits=False)[0]
            out[i, : len(tokens)] = tokens
        return {"generated_ids": out}

    @classmethod
    def describe(cls, ref: ModelRef) -> dict[str, Any]:
        from mdeploy.frameworks import genai_models

        inputs, outputs = io_specs(ref)
        config = genai_models.read_config(ref.path)["model"]
        return {"inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in inputs],
                "outputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in outputs],
                "architecture": config.get("type"), "context_length": config.get("context_length"),
                "precision": genai_models.precision(ref.path)}
