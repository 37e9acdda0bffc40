"""TensorRT engines (`.engine` / `.plan`) on an NVIDIA GPU, through the 10.x/11.x tensor API.

Why it is built this way: TensorRT 10 removed bindings; inputs and outputs are named tensors (`num_io_tensors`,
`get_tensor_name`, `set_input_shape`, `set_tensor_address`, `execute_async_v3`). Device memory comes from torch CUDA
tensors (no pycuda: torch is already what mdeploy uses for CUDA), and the engine runs on torch's current stream. The
sidecar the converter wrote is checked before the engine is deserialized, so an engine built for another GPU or
TensorRT version fails with one line that says so, not with TensorRT's log.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from mdeploy.core import Format, ModelRef, TensorSpec
from mdeploy.errors import InputError, ModelLoadError
from mdeploy.frameworks import tensorrt_env
from mdeploy.runners.base import Feed, Runner


class TensorRTRunner(Runner):
    formats: ClassVar[tuple[Format, ...]] = (Format.TENSORRT,)
    framework: ClassVar[str] = "tensorrt"

    @classmethod
    def available(cls) -> str | None:
        """None when tensorrt can be imported; else why engines cannot run here (for `mdeploy plugins`)."""
        return tensorrt_env.unavailable_reason()

    def _load(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise InputError(f"--device {self.device}: a TensorRT engine runs on cuda")
        trt, torch = tensorrt_env.require_gpu(tensorrt_env.RUN_NEEDS)
        self._trt, self._torch = trt, torch
        sidecar = tensorrt_env.read_sidecar(self.ref.path)
        if sidecar is None:
            self.notes.append(f"{self.ref.name} has no mdeploy sidecar: where it was built is not checked")
        else:
            self.notes.extend(tensorrt_env.check_sidecar(self.ref.name, sidecar, trt.__version__, tensorrt_env.gpu(torch)))
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(logger)
        if sidecar and sidecar.get("flags", {}).get("version_compatible"):
            self._runtime.engine_host_code_allowed = True  # a version-compatible engine carries its lean runtime
        self.engine = self._runtime.deserialize_cuda_engine(self.ref.path.read_bytes())
        if self.engine is None:
            raise ModelLoadError(f"TensorRT {trt.__version__} cannot deserialize {self.ref.path}",
                                 hint="rebuild the engine here with mdeploy convert MODEL.onnx -o " + self.ref.name)
        self.context = self.engine.create_execution_context()
        self._inputs, self._outputs = [], []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))).name
            shape = tuple(d if d >= 0 else f"{name}:{axis}" for axis, d in enumerate(self.engine.get_tensor_shape(name)))
            spec = TensorSpec(name, shape, dtype)
            (self._inputs if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else self._outputs).append(spec)
        self._inputs = self.apply_overrides(self._inputs)

    def input_specs(self) -> list[TensorSpec]:
        return self._inputs

    def output_names(self) -> list[str]:
        return [s.name for s in self._outputs]

    def _infer(self, feed: Feed) -> dict[str, np.ndarray]:
        torch = self._torch
        keep = []
        for spec in self._inputs:
            tensor = torch.from_numpy(np.ascontiguousarray(feed[spec.name])).cuda()
            keep.append(tensor)
            if not self.context.set_input_shape(spec.name, tuple(tensor.shape)):
                raise InputError(f"{self.ref.name}: input {spec.name} shape {list(tensor.shape)} is outside the engine's "
                                 f"profile {self._profile(spec.name)}")
            self.context.set_tensor_address(spec.name, tensor.data_ptr())
        outputs = {}
        for spec in self._outputs:
            shape = tuple(self.context.get_tensor_shape(spec.name))
            tensor = torch.empty(shape, dtype=getattr(torch, spec.dtype), device="cuda")
            outputs[spec.name] = tensor
            self.context.set_tensor_address(spec.name, tensor.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise InputError(f"TensorRT failed to run {self.ref.name}", hint="run again with --verbose for TensorRT's log")
        stream.synchronize()
        return {name: t.cpu().numpy() for name, t in outputs.items()}

    def _profile(self, name: str) -> str:
        low, opt, high = self.engine.get_tensor_profile_shape(name, 0)
        return f"min {list(low)} opt {list(opt)} max {list(high)}"

    @classmethod
    def describe(cls, ref: ModelRef) -> dict[str, Any]:
        """What the sidecar says (no GPU needed): where it was built, its profiles and I/O."""
        sidecar = tensorrt_env.read_sidecar(ref.path)
        info: dict[str, Any] = {"path": str(ref.path), "format": Format.TENSORRT.value, "notes": [], "problems": []}
        if sidecar is None:
            info["notes"].append("no mdeploy sidecar beside the engine: its build is unknown without TensorRT")
            return info
        info.update({k: sidecar.get(k) for k in ("tensorrt_version", "gpu", "flags", "profiles", "inputs", "outputs")})
        return info
