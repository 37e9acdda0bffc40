"""PyTorch models (ExportedProgram, TorchScript, or a factory's nn.Module) in eager mode, on the CPU or on CUDA.

With `--device cuda` the whole model goes to the GPU before the first run (an ExportedProgram through
torch.export's move_to_device_pass, which also rewrites devices burnt into its graph), feeds are copied to the GPU
for each run and outputs come back as numpy arrays. TF32 is switched off on CUDA: a float32 model then computes in
float32 as it does on the CPU, so a CPU-vs-CUDA validation measures the device and not a silently lower precision.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any, ClassVar

import numpy as np

from mdeploy.core import Format, TensorSpec
from mdeploy.errors import InputError, first_line
from mdeploy.frameworks import torch_indices, torch_models
from mdeploy.logs import framework_output
from mdeploy.runners.base import Feed, Runner


class TorchRunner(Runner):
    formats: ClassVar[tuple[Format, ...]] = (Format.PYTORCH_EXPORTED, Format.TORCHSCRIPT, Format.PYTORCH_MODULE)
    framework: ClassVar[str] = "torch"
    gpu_memory: ClassVar[str] = "torch"

    def _load(self) -> None:
        t = torch_models.torch()
        if self.device not in ("cpu", "cuda"):
            raise InputError(f"--device {self.device}: the torch runner runs on cpu or cuda")
        if self.threads:
            t.set_num_threads(self.threads)
        with framework_output():
            self.model = torch_models.load(self.ref)  # a bad model is reported before a missing GPU
        if self.device == "cuda":
            check_cuda(t)
            self._to_cuda(t)
        if self.model.exported_program is not None:
            self._specs = self.apply_overrides(self.model.specs)
        else:
            self._specs = self._eager_specs()
        self._outputs: list[str] | None = None

    def _to_cuda(self, t: Any) -> None:
        """Move the model's weights, buffers and constants to the GPU, with TF32 off (see the module's docstring)."""
        t.backends.cuda.matmul.allow_tf32 = False
        t.backends.cudnn.allow_tf32 = False
        model = self.model
        try:
            with framework_output():
                if model.exported_program is not None:
                    from torch.export.passes import move_to_device_pass

                    model.exported_program = move_to_device_pass(model.exported_program, "cuda")
                    model.module = model.exported_program.module()
                else:
                    model.module = model.module.to("cuda")
        except t.cuda.OutOfMemoryError:
            raise InputError(f"{self.ref.name} does not fit in the GPU's free memory",
                             hint="use --device cpu, or free the GPU") from None
        self.notes.append("torch on cuda: TF32 off (float32 matmuls and convolutions in full float32, as on the CPU)")

    def _eager_specs(self) -> list[TensorSpec]:
        """An eager module accepts any shape: its example inputs are a default, `--input` replaces them."""
        names = self.model.input_names or list(self._overrides)
        known = {s.name: s for s in self.model.specs}
        unknown = sorted(set(self._overrides) - set(names))
        if unknown:
            raise InputError(f"--input names {', '.join(unknown)}, not an input of {self.ref.name}", hint="inputs are: " + ", ".join(names))
        specs = []
        for name in names:
            spec = self._overrides.get(name) or known.get(name)
            if spec is not None and not spec.dtype_given and name in known:  # --input without a dtype: the example's
                spec = TensorSpec(name, spec.shape, known[name].dtype, known[name].value_range)
            if spec is None:
                if specs:
                    break  # trailing optional forward() arguments
                raise InputError(
                    f"{self.ref.name} does not record its input shapes",
                    hint="give them with --input NAME:SHAPE[:DTYPE] (inputs: " + ", ".join(names) + ")",
                )
            specs.append(spec)
        self.model.input_names = [s.name for s in specs]
        return torch_indices.with_index_ranges(specs, self.model.module)

    def release(self) -> None:
        """Free the model's memory now; the runner cannot run again.

        Dropping the module is not enough after convert's export: onnxscript's rewrite rules (module-level objects)
        keep the last graph they matched for the life of the process, and values that graph once held wrap this
        module's parameters (0.3 GB of BERT-base's 0.44 GB). So once nothing but those leftovers can reach the
        module (a factory that returns a module its caller also holds keeps it whole), every parameter and buffer
        gives its storage back, whoever still refers to the tensor.
        """
        model, self.model = self.model, None
        if model is None:
            return
        t = torch_models.torch()
        program = model.exported_program
        state = program.state_dict if program is not None else model.module.state_dict(keep_vars=True)
        constants = getattr(program, "constants", None) or {}
        tensors = [v for v in [*state.values(), *constants.values()] if isinstance(v, t.Tensor)]
        owners = [weakref.ref(o) for o in (model.module, program) if o is not None]
        del model, program, state, constants
        gc.collect()
        if any(owner() is not None for owner in owners):
            return
        for tensor in tensors:
            try:
                tensor.untyped_storage().resize_(0)
            except RuntimeError:  # a storage numpy views (the exporter's optimizer made some): give the tensor another
                tensor.data = t.empty(0, dtype=tensor.dtype)

    def input_specs(self) -> list[TensorSpec]:
        return self._specs

    def output_names(self) -> list[str]:
        if self._outputs is None:
            from mdeploy.validation.inputs import random_feed

            self.infer(random_feed(self._specs, np.random.default_rng(0)))
        return self._outputs or []

    def _infer(self, feed: Feed) -> dict[str, np.ndarray]:
        t = torch_models.torch()
        tensors = torch_models.to_torch(feed, self.device)
        try:
            with t.inference_mode(), framework_output():
                result = self.model.call(tensors)
        except t.cuda.OutOfMemoryError:
            raise InputError(f"{self.ref.name} ran out of GPU memory on inputs of "
                             + ", ".join(f"{k}{list(v.shape)}" for k, v in feed.items()),
                             hint="give smaller inputs (--batch, --input), or use --device cpu") from None
        except Exception as exc:
            hint = device_hint(exc) if self.device == "cuda" else None
            raise InputError(f"{self.ref.name} fails on these inputs: {first_line(exc)}",
                             hint=hint or integer_hint(exc, self._specs)) from None
        named = torch_models.flatten_outputs(result)
        self._outputs = [n for n, _ in named]
        return {n: v.detach().cpu().numpy() for n, v in named}

    @classmethod
    def describe(cls, ref: Any) -> dict[str, Any]:
        t = torch_models.torch()
        with framework_output():
            loaded = torch_models.load(ref)
        module = loaded.exported_program or loaded.module
        info: dict[str, Any] = {
            "format": ref.format.value,
            "path": ref.name,
            "inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in loaded.specs]
            or [{"name": n, "shape": None, "dtype": None} for n in loaded.input_names],
        }
        state = module.state_dict if loaded.exported_program is not None else module.state_dict()
        tensors = [v for v in state.values() if isinstance(v, t.Tensor)]
        info["parameters"] = int(sum(v.numel() for v in tensors))
        info["parameter_bytes"] = int(sum(v.numel() * v.element_size() for v in tensors))
        if ref.path.is_file():
            info["size_bytes"] = ref.path.stat().st_size
        if loaded.exported_program is not None:
            from collections import Counter

            ops = Counter(str(n.target) for n in loaded.exported_program.graph.nodes if n.op == "call_function")
            info["operators"] = dict(ops.most_common())
        return info


def check_cuda(t: Any) -> None:
    """One line that says why torch cannot run on CUDA here: a CPU-only build of torch, or no device it can see."""
    if t.cuda.is_available():
        return
    if not (t.version.cuda or getattr(t.version, "hip", None)):  # ROCm builds answer to "cuda" too
        raise InputError(f"--device cuda: torch {t.__version__} is a CPU-only build, it cannot run models on CUDA",
                         hint="install a CUDA build of torch on a machine with an NVIDIA GPU, or use --device cpu")
    raise InputError(f"--device cuda: torch {t.__version__} (CUDA {t.version.cuda}) sees no CUDA device here",
                     hint="check nvidia-smi and CUDA_VISIBLE_DEVICES, or use --device cpu")


def device_hint(exc: BaseException) -> str | None:
    """A model that makes its own tensors on a fixed device (a traced TorchScript records `cpu`) fails on CUDA."""
    text = str(exc)
    if "same device" in text or ("cuda" in text and "cpu" in text):
        return ("the model creates tensors on a device of its own (TorchScript traces record it): save it with "
                "torch.export.save (.pt2), which mdeploy moves to CUDA whole, or validate it with --device cpu")
    return None


def integer_hint(exc: BaseException, specs: list[TensorSpec]) -> str | None:
    """When a model rejects float input where it wants integer ids, show the `:int64` form of --input."""
    text = str(exc)
    if not any(k in text for k in ("indices", "Long", "Int;", "scalar type", "embedding")):
        return None
    floats = [s for s in specs if s.dtype.startswith("float") and all(isinstance(d, int) for d in s.shape)]
    if not floats:
        return None
    forms = " ".join(f"--input {s.name}:{'x'.join(str(d) for d in s.shape)}:int64" for s in floats)
    return f"an input must be integer (token ids are int64): {forms}"
