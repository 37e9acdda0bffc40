"""The MLflow pyfunc model that serves an onnxruntime-genai folder (MLflow has no flavor for it).

Copied INTO the package and run by MLflow ("models from code": `mlflow.models.set_model` at the end), so the server
needs mlflow, numpy and onnxruntime-genai, never mdeploy, and no pickle is written. It answers as mdeploy's genai
runner does (runners/genai_runner.py): `input_ids` (int64, batch x prompt length) in, `generated_ids` out (int64,
batch x max_new_tokens from the package's model_config, greedy; after an end-of-sequence token the row is padded
with -1). One lock serialises generations (the scoring server may call predict from several threads).
"""

from __future__ import annotations

import threading
from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

ARTIFACT = "genai_model"
PAD = -1


class GenaiModel(PythonModel):
    def load_context(self, context: Any) -> None:
        import onnxruntime_genai as og

        og.disable_telemetry_events()
        self._og = og
        self._lock = threading.Lock()
        self._model = og.Model(context.artifacts[ARTIFACT])
        self._max_new = int((context.model_config or {}).get("max_new_tokens", 16))

    def _greedy(self, ids: np.ndarray) -> list[int]:
        params = self._og.GeneratorParams(self._model)
        params.set_search_options(max_length=len(ids) + self._max_new, do_sample=False)
        generator = self._og.Generator(self._model, params)
        generator.append_tokens(ids.astype(np.int32)[None, :])
        tokens: list[int] = []
        while len(tokens) < self._max_new and not generator.is_done():
            generator.generate_next_token()
            tokens.append(int(generator.get_next_tokens()[0]))
        return tokens

    # no type hints here: MLflow reads predict's hints as a schema; the package's signature is it
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        ids = model_input["input_ids"] if isinstance(model_input, dict) else model_input
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim == 1:
            ids = ids[None, :]
        out = np.full((ids.shape[0], self._max_new), PAD, dtype=np.int64)
        with self._lock:
            for i, row in enumerate(ids):
                tokens = self._greedy(row)
                out[i, : len(tokens)] = tokens
        return {"generated_ids": out}


mlflow.models.set_model(GenaiModel())
