"""Reading TFLite flatbuffers with ai-edge-litert (which installs without TensorFlow; tf.lite.Interpreter is
deprecated), and describing them: tensors, quantization, operators, and what matters for delegates.

Inputs and outputs are named by the model's signature (`image`, `output_0`), the names the SavedModel it
came from used, rather than by internal tensor names (`serving_default_image:0`), so that a TFLite model
and its source are compared output by output, by name.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mdeploy.core import TensorSpec
from mdeploy.deps import require
from mdeploy.errors import ModelLoadError, first_line
from mdeploy.logs import framework_output, quiet_loggers

FLOAT_KINDS = ("float32", "float16")


@dataclass
class TensorIO:
    """One input or output: its public name and the interpreter's tensor details."""

    name: str
    index: int
    dtype: str
    shape_signature: tuple[int, ...]
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        """An int8/uint8/int16 tensor with a scale: the runner speaks real (float32) values for it."""
        return self.dtype in ("int8", "uint8", "int16") and self.scale > 0

    def spec(self) -> TensorSpec:
        shape = tuple(d if d >= 0 else ("batch" if axis == 0 else f"dim{axis}") for axis, d in enumerate(self.shape_signature))
        return TensorSpec(self.name, shape, "float32" if self.quantized else self.dtype)


def interpreter(path: Path, threads: int | None = None, inspect: bool = False) -> Any:
    """An interpreter for `path`. With `inspect`, without the default XNNPACK delegate, which would replace the
    operators it takes by one DELEGATE node and hide them from the op list."""
    module = require("ai_edge_litert.interpreter", extra="tensorflow", purpose="run TFLite models")
    quiet_loggers()
    data = path.read_bytes() if path.is_file() else b""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelLoadError(f"{path} is not a TFLite model (corrupt, truncated or another format)",
                             hint="a .tflite file is a flatbuffer written by TFLiteConverter")
    try:
        with framework_output():
            kwargs = {"experimental_op_resolver_type": module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES} if inspect else {}
            it = module.Interpreter(model_path=str(path), num_threads=threads, **kwargs)
            it.allocate_tensors()
    except Exception as exc:
        raise ModelLoadError(f"cannot load the TFLite model {path}: {first_line(exc)}") from None
    return it


def _io(name: str, d: dict[str, Any]) -> TensorIO:
    scale, zero = d.get("quantization", (0.0, 0))
    return TensorIO(name, int(d["index"]), np.dtype(d["dtype"]).name, tuple(int(x) for x in d["shape_signature"]), float(scale), int(zero))


def io(it: Any) -> tuple[list[TensorIO], list[TensorIO], str | None]:
    """Inputs and outputs named by the first signature (serving_default preferred), or by tensor names."""
    signatures = it.get_signature_list() or {}
    if signatures:
        key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
        runner = it.get_signature_runner(key)
        ins, outs = runner.get_input_details(), runner.get_output_details()
        order_in, order_out = signatures[key]["inputs"], signatures[key]["outputs"]
        return [_io(n, ins[n]) for n in order_in], [_io(n, outs[n]) for n in order_out], key
    return ([_io(d["name"], d) for d in it.get_input_details()], [_io(d["name"], d) for d in it.get_output_details()], None)


def quantize(array: np.ndarray, t: TensorIO) -> np.ndarray:
    """Real values -> the model's integer input, with its own scale and zero point."""
    info = np.iinfo(np.dtype(t.dtype))
    q = np.round(array.astype(np.float64) / t.scale) + t.zero_point
    return np.clip(q, info.min, info.max).astype(t.dtype)


def dequantize(array: np.ndarray, t: TensorIO) -> np.ndarray:
    return ((array.astype(np.float32) - np.float32(t.zero_point)) * np.float32(t.scale)).astype(np.float32)


def ops(it: Any) -> list[dict[str, Any]]:
    try:
        return list(it._get_ops_details())  # the only reader of the op list ai-edge-litert offers
    except Exception:
        return []


def float_ops(it: Any) -> list[str]:
    """Operators that compute in float (their result is float32): what INT8-only delegates cannot run."""
    names = []
    for op in ops(it):
        results = [np.dtype(t).name for t in op.get("result_types", [])]
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        if any(r == "float32" for r in results):
            names.append(op["op_name"])
    return names


def precision_of(it: Any, inputs: list[TensorIO]) -> str:
    """What kind of model this is: float32, float16 weights, dynamic-range int8 weights, or full-integer int8."""
    tensors = it.get_tensor_details()
    kinds = Counter(np.dtype(t["dtype"]).name for t in tensors)
    opnames = Counter(op["op_name"] for op in ops(it))
    flt = float_ops(it)
    if kinds.get("int8") and not flt:
        return "int8"
    if kinds.get("int8") and any(i.dtype == "float32" for i in inputs) and not opnames.get("QUANTIZE"):
        return "dynamic-int8"
    if kinds.get("int8"):
        return "int8-mixed"
    if kinds.get("float16"):
        return "fp16"
    return "fp32"


_NOTES = {
    "int8": "full-integer INT8: suits INT8-only accelerators (Edge TPU after compilation, NNAPI/Hexagon-class DSPs)",
    "int8-mixed": "INT8 with float fallback ops: INT8-only delegates leave the float ops on the CPU",
    "dynamic-int8": "dynamic-range INT8 weights, float activations: runs on CPU (XNNPACK); INT8-only delegates cannot take it",
    "fp16": "float16 weights dequantized at load: the GPU delegate can run it in fp16; on CPU it computes in fp32",
    "fp32": "float32: runs on CPU (XNNPACK) and the GPU delegate",
}


def describe(path: Path) -> dict[str, Any]:
    it = interpreter(path, inspect=True)
    inputs, outputs, signature = io(it)
    tensors = it.get_tensor_details()
    histogram = Counter(op["op_name"] for op in ops(it))
    precision = precision_of(it, inputs)
    notes = [_NOTES[precision]]
    if any(d < 0 for t in inputs for d in t.shape_signature):
        notes.append("dynamic input dimensions: resized at run time; some delegates (GPU, NNAPI) want static shapes")
    custom = [op for op in histogram if op in ("CUSTOM", "DELEGATE") or op.startswith("Flex")]
    if custom:
        notes.append(f"custom/Flex ops ({', '.join(custom)}): need the TF Select (Flex) delegate or a custom op resolver")
    flt = float_ops(it) if precision.startswith("int8") else []
    if flt:
        notes.append("operators left in float: " + ", ".join(sorted(set(flt))))
    produced = {int(i) for op in ops(it) for i in op.get("outputs", [])} | {i.index for i in inputs}
    # constants: produced by no op and not an input (unnamed tensors are the runtime's scratch buffers)
    weights = [t for t in tensors if t["index"] not in produced and t["name"]]
    return {
        "format": "tflite",
        "path": str(path),
        "signature": signature,
        "signatures": list((it.get_signature_list() or {}).keys()),
        "inputs": [_io_dict(t) for t in inputs],
        "outputs": [_io_dict(t) for t in outputs],
        "precision": precision,
        "quantization": {t.name: {"dtype": t.dtype, "scale": t.scale, "zero_point": t.zero_point} for t in inputs + outputs if t.quantized},
        "tensors": len(tensors),
        "tensor_dtypes": dict(Counter(np.dtype(t["dtype"]).name for t in tensors).most_common()),
        "parameters": int(sum(int(np.prod(t["shape"])) for t in weights if len(t["shape"]) > 0)),
        "operators": dict(histogram.most_common()),
        "nodes": sum(histogram.values()),
        "size_bytes": path.stat().st_size,
        "delegate_notes": notes,
    }


def _io_dict(t: TensorIO) -> dict[str, Any]:
    d: dict[str, Any] = {"name": t.name, "shape": list(t.spec().shape), "dtype": t.dtype}
    if t.quantized:
        d["quantization"] = {"scale": t.scale, "zero_point": t.zero_point}
    return d
