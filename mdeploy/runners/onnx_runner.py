"""ONNX models on onnxruntime (CPU, or the CUDA provider with `--device cuda`).

The CUDA provider ships only in the `onnxruntime-gpu` package (the `onnxruntime` package is CPU-only), and it
needs CUDA and cuDNN libraries at run time: where torch's CUDA wheels brought them (nvidia-* packages), they are
preloaded from there. A session that silently fell back to the CPU is refused. TF32 is off (`use_tf32=0`, the
provider's default is on): a float32 model computes in float32, as on the CPU.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, ClassVar

import numpy as np

from mdeploy.core import Format, TensorSpec
from mdeploy.deps import require
from mdeploy.errors import InputError, first_line
from mdeploy.frameworks import onnx_models, onnx_skeleton, ort_sessions
from mdeploy.logs import is_verbose
from mdeploy.runners.base import Feed, Runner


class OnnxRuntimeRunner(Runner):
    formats: ClassVar[tuple[Format, ...]] = (Format.ONNX,)
    framework: ClassVar[str] = "onnxruntime"

    def _load(self) -> None:
        ort = require("onnxruntime", extra="onnx")
        if self.device not in ("cpu", "cuda"):
            raise InputError(f"--device {self.device}: onnxruntime runs here on cpu or cuda")
        # inputs, outputs and id ranges come from the graph: its weights' bytes are left for the runtime to read
        model = onnx_skeleton.load_without_weights(self.ref.path)
        self._specs = self.apply_overrides(onnx_models.graph_inputs(model))
        self._outputs = [o.name for o in model.graph.output]
        del model
        options = ort.SessionOptions()
        # errors come back as exceptions, reported as one line; the runtime's own log would print them again, raw
        options.log_severity_level = 0 if is_verbose() else 4
        if self.threads:
            options.intra_op_num_threads = self.threads
        self.session = self._session(ort, options, None)

    def _session(self, ort: Any, options: Any, model: Any) -> Any:
        providers: list[Any] = ["CPUExecutionProvider"]
        if self.device == "cuda":
            providers = [cuda_provider(ort), "CPUExecutionProvider"]
        opened = ort_sessions.open_session(self.ref.path, options, providers, proto=model)
        self.notes.extend(opened.notes)
        session = opened.session
        if self.device == "cuda":
            if "CUDAExecutionProvider" not in session.get_providers():
                raise InputError(
                    f"--device cuda: onnxruntime-gpu {ort.__version__} could not start its CUDA provider for {self.ref.name} "
                    "and fell back to the CPU",
                    hint="its CUDA 12 and cuDNN 9 libraries were not found: install torch's CUDA build or nvidia-cudnn-cu12 "
                    "and nvidia-cublas-cu12, or put them on LD_LIBRARY_PATH (--verbose shows onnxruntime's log)",
                )
            self.notes.append(f"onnxruntime {ort.__version__} on CUDAExecutionProvider (TF32 off), CPU provider for "
                              "the nodes CUDA lacks")
        return session
    def input_specs(self) -> list[TensorSpec]:
        return self._specs

    def output_names(self) -> list[str]:
        return self._outputs

    def _infer(self, feed: Feed) -> dict[str, np.ndarray]:
        try:
            values = self.session.run(self._outputs, feed)
        except Exception as exc:
            raise InputError(
                f"onnxruntime failed to run {self.ref.path}: {first_line(exc)}",
                hint="the inputs fit the shapes the model declares, but a node rejects them: give the shapes it really "
                "takes with --input NAME:SHAPE (`mdeploy inspect` shows the declared ones)",
            ) from None
        return dict(zip(self._outputs, values))

    @classmethod
    def describe(cls, ref: Any) -> dict[str, Any]:
        """onnx's view of the file, plus whether this runtime can run it.

        Inspect reads; it does not run: a model newer than this onnxruntime is shown whole, with a note saying
        which runtime would run it. Only what onnx itself finds wrong is a problem (inspect exits 2).
        """
        info = onnx_models.describe(ref.path)
        model = onnx_skeleton.load_without_weights(ref.path)
        fitted = ort_sessions.fit(model)
        if fitted.too_new:
            info["notes"].append(ort_sessions.cannot_run_note(model, fitted))
        elif fitted.ir_version:
            info["notes"].append(ort_sessions.lowered_note(model, fitted, ref.path))
        return info


def cuda_provider(ort: Any) -> tuple[str, dict[str, str]]:
    """The CUDA provider with its options, or one line naming onnxruntime-gpu when this onnxruntime has none."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise InputError(
            f"--device cuda: onnxruntime {ort.__version__} here has no CUDA provider; CUDA needs the onnxruntime-gpu package",
            hint="pip uninstall onnxruntime && pip install onnxruntime-gpu (on a machine with an NVIDIA GPU), "
            "or use --device cpu",
        )
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:  # onnxruntime-gpu >= 1.21: CUDA/cuDNN from the nvidia-* wheels torch installed
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(Exception):
            preload(cuda=True, cudnn=True, msvc=False)
    version = tuple(int(p) for p in ort.__version__.split(".")[:2] if p.isdigit())
    return "CUDAExecutionProvider", ({"use_tf32": "0"} if version >= (1, 18) else {})
