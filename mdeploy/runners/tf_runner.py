"""SavedModels (through a signature) and Keras models, run eagerly by TensorFlow.

`--device cuda` needs a GPU build of TensorFlow that sees a GPU (tensorflow-cpu, which the tensorflow extra installs
on these machines, never does): each run is then placed on /GPU:0 with TF32 off, so a float32 model computes in
float32 as on the CPU. `--device cpu` places runs on /CPU:0 even where a GPU build would pick the GPU by itself.
"""

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
        if self.device not in ("cpu", "cuda"):
            raise InputError(f"--device {self.device}: the TensorFlow runner runs on cpu or cuda")
        self._placement = "/GPU:0" if self.device == "cuda" else "/CPU:0"
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
        if self.device == "cuda":  # after the model loaded: a bad model is reported before a missing GPU
            check_gpu(t)
            t.config.experimental.enable_tensor_float_32_execution(False)
            self.notes.append("TensorFlow on /GPU:0: TF32 off (float32 matmuls and convolutions in full float32)")

    def input_specs(self) -> list[TensorSpec]:
        return self._specs

    def output_names(self) -> list[str]:
        return self._outputs

    def _infer(self, feed: Feed) -> dict[str, np.ndarray]:
        t = tf_models.tf()
        tensors = {k: t.constant(v) for k, v in feed.items()}
        try:
            with framework_output(), t.device(self._placement):
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

    def synchronize(self) -> None:
        """Nothing to wait for: the outputs are copied to host numpy arrays inside the run."""

    @classmethod
    def describe(cls, ref: Any) -> dict[str, Any]:
        if ref.format == Format.KERAS:
            return tf_models.describe_keras(ref)
        return tf_models.describe_savedmodel(ref)


def check_gpu(t: Any) -> None:
    """One line that says why TensorFlow cannot run on CUDA here: a CPU-only build, or no GPU it can see."""
    if t.config.list_physical_devices("GPU"):
        return
    if not t.test.is_built_with_cuda():
        raise InputError(f"--device cuda: TensorFlow {t.__version__} here is a CPU-only build, it cannot run on CUDA",
                         hint="install tensorflow[and-cuda] on a Linux machine with an NVIDIA GPU, or use --device cpu")
    raise InputError(f"--device cuda: TensorFlow {t.__version__} sees no GPU here",
                     hint="check nvidia-smi, CUDA_VISIBLE_DEVICES and TensorFlow's CUDA libraries (--verbose), "
                     "or use --device cpu")
