"""SavedModels (through a signature) and Keras models, run eagerly by TensorFlow."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from mdeploy.core import Format, TensorSpec
from mdeploy.errors import InputError, first_line
from mdeploy.frameworks import tf_models
from mdeploy.logs import framework_output
from mdeploy.runners.base import Feed, Runner


class TensorFlowRunner(Runner):
    formats: ClassVar[tuple[Format, ...]] = (Format.SAVEDMODEL, Format.KERAS)
    framework: ClassVar[str] = "tensorflow"

    def _load(self) -> None:
        t = tf_models.tf()
        if self.device == "cuda" and not t.config.list_physical_devices("GPU"):
            raise InputError("--device cuda: TensorFlow sees no GPU here", hint="use --device cpu, or a GPU build of TensorFlow")
        if self.threads:
            try:
                t.config.threading.set_intra_op_parallelism_threads(self.threads)
            except RuntimeError:
                pass  # TensorFlow already started its thread pools in this process
        self._keras_io: tf_models.KerasIO | None = None
        if self.ref.format == Format.KERAS:
            self.model = tf_models.load_keras(self.ref.path, self.ref.allow_unsafe)
            self._keras_io = tf_models.keras_io(self.model)
            specs, self._outputs = self._keras_io.specs, self._keras_io.outputs
        else:
            self._loaded = tf_models.load_savedmodel(self.ref.path)
            self.signature_name, self._fn = tf_models.signature(self._loaded, self.ref.path, self.ref.signature)
            specs, self._outputs = tf_models.signature_io(self._fn)
        self._specs = self.apply_overrides(specs)

    def input_specs(self) -> list[TensorSpec]:
        return self._specs

    def output_names(self) -> list[str]:
        return self._outputs

    def _infer(self, feed: Feed) -> dict[str, np.ndarray]:
        t = tf_models.tf()
        tensors = {k: t.constant(v) for k, v in feed.items()}
        try:
            with framework_output():
                if self._keras_io is not None:
                    result = tf_models.keras_call(self.model, self._keras_io, tensors)
                else:
                    result = self._fn(**tensors)
        except Exception as exc:
            raise InputError(
                f"{self.ref.name} fails on these inputs: {first_line(exc)}",
                hint="compare the inputs with what `mdeploy inspect` shows; give real shapes with --input NAME:SHAPE",
            ) from None
        return {name: np.asarray(result[name]) for name in self._outputs}

    @classmethod
    def describe(cls, ref: Any) -> dict[str, Any]:
        if ref.format == Format.KERAS:
            return tf_models.describe_keras(ref)
        return tf_models.describe_savedmodel(ref)
