"""TensorRT's rules for Q/DQ models, checked on the CPU before any engine build.

TensorRT 10 and 11 take INT8 only from explicit QuantizeLinear/DequantizeLinear pairs, and only in one form:
signed 8-bit (never uint8, never int32 bias), symmetric (every zero point 0), positive scales, and scales per
channel only on weights (activations per tensor). A model that breaks these fails deep inside the builder,
on a GPU machine, with a message about one node; this check reads the graph with onnx alone and names every
offending node at once, so the converter can refuse it (exit 2) before looking for a GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mdeploy.errors import InputError
from mdeploy.frameworks import onnx_models

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
HINT = "mdeploy quantize m.onnx -o m.qdq.onnx --target tensorrt"
_INT8, _UINT8 = 3, 2  # onnx.TensorProto.INT8 / UINT8
_SHOWN = 3  # nodes named in require_trt_qdq's one line


def check_qdq(model_path: Path) -> list[str]:
    """One readable problem per Q/DQ node that TensorRT would refuse; empty when the model is fine (or has no Q/DQ)."""
    onnx = _onnx()
    # weights stay on disk: only scales and zero points are read (external data too), so a 2 GB model costs little
    model = onnx_models.load_proto(Path(model_path))
    graph = _Graph(model, onnx, Path(model_path).resolve().parent)
    problems = []
    for node in model.graph.node:
        if node.op_type not in QDQ_OPS:
            continue
        found = _node_problems(node, graph, onnx)
        if found:
            problems.append(f"{node.name or '(unnamed ' + node.op_type + ')'} ({node.op_type}): " + "; ".join(found))
    return problems


def require_trt_qdq(model_path: Path) -> None:
    """Raise InputError naming the first offending nodes when the Q/DQ model does not follow TensorRT's rules."""
    problems = check_qdq(Path(model_path))
    if not problems:
        return
    shown = " | ".join(problems[:_SHOWN])
    more = f" (and {len(problems) - _SHOWN} more nodes)" if len(problems) > _SHOWN else ""
    raise InputError(
        f"{Path(model_path).name} breaks TensorRT's Q/DQ rules (int8 only, zero points 0, positive scales, "
        f"per-channel only on weights): {shown}{more}",
        hint=HINT,
    )


def _onnx() -> Any:
    from mdeploy.deps import require

    return require("onnx", extra="onnx")


class _Graph:
    """What the checks need to know about tensors: constant values, element types, and producers."""

    def __init__(self, model: Any, onnx: Any, folder: Path) -> None:
        self._to_array, self._folder = onnx.numpy_helper.to_array, str(folder)
        self._tensors: dict[str, Any] = {i.name: i for i in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type == "Constant" and node.output:
                for attr in node.attribute:
                    if attr.name == "value" and attr.HasField("t"):
                        self._tensors[node.output[0]] = attr.t
        self.constants = _Constants(self)
        self.producers = {out: node for node in model.graph.node for out in node.output}
        self.types: dict[str, int] = {}
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:  # a graph shape inference cannot read: types come from what is declared
            inferred = model
        for info in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
            if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
                self.types[info.name] = info.type.tensor_type.elem_type
        for init in model.graph.initializer:
            self.types[init.name] = init.data_type

    def value(self, name: str) -> Any:
        return self._to_array(self._tensors[name], base_dir=self._folder)

    def is_weight(self, name: str) -> bool:
        """A constant, or a constant reached through QuantizeLinear / Cast / Identity (weights kept as float + Q)."""
        seen = 0
        while name not in self.constants:
            node = self.producers.get(name)
            if node is None or node.op_type not in ("QuantizeLinear", "DequantizeLinear", "Cast", "Identity") or seen > 4:
                return False
            name, seen = node.input[0], seen + 1
        return True


class _Constants:
    """Constant tensors by name, read from the model (or its external data) only when a check asks for one."""

    def __init__(self, graph: _Graph) -> None:
        self._graph = graph
        self._cache: dict[str, Any] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._graph._tensors

    def __getitem__(self, name: str) -> Any:
        if name not in self._cache:
            self._cache[name] = self._graph.value(name)
        return self._cache[name]

    def get(self, name: str) -> Any:
        return self[name] if name in self else None


def _input(node: Any, index: int) -> str:
    return node.input[index] if len(node.input) > index else ""


def _quantized_type(node: Any, graph: _Graph) -> int | None:
    """The element type of the quantized side of the node (its output for Q, its input for DQ)."""
    zero_point = _input(node, 2)
    if zero_point:
        if zero_point in graph.constants:
            return graph.types.get(zero_point) or _elem_of(graph.constants[zero_point])
        return graph.types.get(zero_point)
    if node.op_type == "QuantizeLinear":
        for attr in node.attribute:
            if attr.name == "output_dtype" and attr.i:
                return attr.i
        return _UINT8  # ONNX: no zero point and no output_dtype means uint8
    x = node.input[0]
    if x in graph.constants:
        return graph.types.get(x) or _elem_of(graph.constants[x])
    return graph.types.get(x)


def _elem_of(array: Any) -> int | None:
    return {"int8": _INT8, "uint8": _UINT8, "int32": 6, "int16": 5, "uint16": 4}.get(str(array.dtype))


def _node_problems(node: Any, graph: _Graph, onnx: Any) -> list[str]:
    found = []
    elem = _quantized_type(node, graph)
    if elem != _INT8:
        name = onnx.helper.tensor_dtype_to_np_dtype(elem).name if elem else "unknown"
        found.append(f"{name} instead of int8")
    zero_point = _input(node, 2)
    if zero_point:
        if zero_point not in graph.constants:
            found.append("zero point is not a constant")
        elif graph.constants[zero_point].size and (graph.constants[zero_point] != 0).any():
            found.append("zero point is not 0 (asymmetric)")
    scale_name = _input(node, 1)
    scale = graph.constants.get(scale_name)
    if scale is None:
        found.append("scale is not a constant")
        return found
    if scale.size == 0 or not (scale > 0).all() or not _finite(scale):
        found.append("scale is not positive" + (f" (min {float(scale.min()):g})" if scale.size else ""))
    if scale.size > 1 and not graph.is_weight(node.input[0]):
        found.append(f"per-channel scale ({scale.size} values) on an activation; TensorRT takes per-channel only on weights")
    return found


def _finite(array: Any) -> bool:
    import numpy as np

    return bool(np.isfinite(array).all())
