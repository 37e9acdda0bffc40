"""Layer by layer: where two ONNX models that should compute the same thing start to differ.

Every node output of the reference that the candidate also computes is compared, in the reference's graph
order: a quantized model keeps the float tensor names of the ops it quantized and dequantizes them into
`NAME_DequantizeLinear_Output` (QDQ; that one is compared, as it is what consumers see), or renames them
`NAME_quantized` with `NAME_scale`/`NAME_zero_point` beside (QOperator), which are dequantized to compare; an
optimized model keeps the names of the outputs its fusions produce. onnxruntime can only return graph
outputs, so intermediate tensors are exposed a chunk of layers at a time (a session per chunk) and folded
into running metrics as they are produced: memory holds one chunk of tensors, never the whole model's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdeploy.core import Tolerance
from mdeploy.deps import require
from mdeploy.errors import InputError, first_line
from mdeploy.frameworks import onnx_models, ort_sessions
from mdeploy.lazy import numpy as np
from mdeploy.logs import framework_output
from mdeploy.validation.compare import OutputAccumulator

Feed = dict[str, "np.ndarray"]
DEFAULT_CHUNK = 48  # tensors exposed per session


@dataclass
class LayerResult:
    """One node output compared: truthy when it is within tolerance."""

    index: int
    node: str
    op_type: str
    tensor: str
    candidate_tensor: str
    shape: list[int]
    cosine: float
    max_abs_error: float
    mean_abs_error: float
    rel_l2_error: float  # ||cand - ref|| / ||ref||: grows as error compounds through the layers
    passed: bool
    reasons: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        d = {
            k: getattr(self, k)
            for k in (
                "index",
                "node",
                "op_type",
                "tensor",
                "candidate_tensor",
                "shape",
                "cosine",
                "max_abs_error",
                "mean_abs_error",
                "rel_l2_error",
                "passed",
                "reasons",
            )
        }
        return {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


@dataclass
class LayerwiseResult:
    """Every shared layer in graph order, and the first one beyond tolerance (None when all passed)."""

    layers: list[LayerResult]
    tolerance: Tolerance
    skipped: int = 0  # reference tensors the candidate does not compute (fused away, or quantized away)
    notes: list[str] = field(default_factory=list)

    @property
    def first_failure(self) -> LayerResult | None:
        return next((layer for layer in self.layers if not layer), None)

    def __bool__(self) -> bool:
        return self.first_failure is None

    def to_dict(self) -> dict[str, Any]:
        first = self.first_failure
        return {
            "passed": bool(self),
            "tolerance": self.tolerance.describe(),
            "compared": len(self.layers),
            "not_shared": self.skipped,
            "first_failure": first.to_dict() if first is not None else None,
            "layers": [layer.to_dict() for layer in self.layers],
            "notes": self.notes,
        }


def layer_tolerance(tolerance: Tolerance) -> Tolerance:
    """Intermediate tensors have no classes: top-1 agreement does not apply to them."""
    return Tolerance(tolerance.atol, tolerance.rtol, tolerance.min_cosine, None, tolerance.source)


@dataclass
class _Tensor:
    index: int
    node: str
    op_type: str
    name: str
    cand_name: str
    dequant: tuple[str, str] | None  # scale and zero-point initializer names in the candidate (QOperator)
    inputs: list[str]


class _Model:
    """An ONNX model loaded once, from which sessions exposing chosen tensors are made."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proto = onnx_models.load_proto(path)  # without external data: it is read by onnxruntime from the folder
        self.external = bool(onnx_models.external_data_files(self.proto))
        if not self.external:
            self.proto = onnx_models.load_proto(path, with_data=True)
        self.outputs = [o.name for o in self.proto.graph.output]
        self.produced: dict[str, int] = {}  # tensor -> elem type when known (0: unknown)
        types = {v.name: v.type.tensor_type.elem_type for v in [*self.proto.graph.value_info, *self.proto.graph.output]}
        for node in self.proto.graph.node:
            for out in node.output:
                if out:
                    self.produced[out] = types.get(out, 0)
        self.initializers = {i.name: i for i in self.proto.graph.initializer}

    def session(self, tensors: list[str]) -> Any:
        """A session whose outputs are `tensors` (plus nothing else)."""
        onnx = require("onnx", extra="onnx")
        ort = require("onnxruntime", extra="onnx")
        model = onnx.ModelProto()
        model.CopyFrom(self.proto)
        del model.graph.output[:]
        model.graph.output.extend([onnx.ValueInfoProto(name=t) for t in tensors])
        options = ort.SessionOptions()
        options.log_severity_level = 4  # failures come back as exceptions, reported as one line
        opened = ort_sessions.open_session(self.path, options, ["CPUExecutionProvider"], proto=model, edited=True,
                                           purpose=" with its intermediate tensors exposed")
        return opened.session


def _candidate_tensor(name: str, cand: _Model) -> tuple[str, tuple[str, str] | None] | None:
    """Where the candidate holds the reference tensor `name`, and the (scale, zero point) to dequantize it with.

    QDQ models: the DequantizeLinear output is what the consumers see (a removed Relu included); QOperator
    models: the `_quantized` tensor with its scale; an unquantized candidate: the same name.
    """
    if name + "_DequantizeLinear_Output" in cand.produced:
        return name + "_DequantizeLinear_Output", None
    if name in cand.produced:
        return name, None
    if name + "_quantized" in cand.produced and name + "_scale" in cand.initializers:
        return name + "_quantized", (name + "_scale", name + "_zero_point")
    return None


def shared_tensors(ref: _Model, cand: _Model) -> tuple[list[_Tensor], int]:
    """Reference node outputs the candidate computes too, in the reference's graph order."""
    found, skipped = [], 0
    for node in ref.proto.graph.node:
        for out in node.output:
            if not out or ref.produced.get(out, 1) not in (0, 1, 10, 11, 16):  # float tensors only (or unknown)
                continue
            match = _candidate_tensor(out, cand)
            if match is None:
                skipped += 1
                continue
            cand_name, dequant = match
            found.append(_Tensor(len(found), node.name, node.op_type, out, cand_name, dequant, [i for i in node.input if i]))
    found = _through_removed_activations(ref, found)
    return [_Tensor(i, t.node, t.op_type, t.name, t.cand_name, t.dequant, t.inputs) for i, t in enumerate(found)], skipped


# Quantizers drop a Relu/Clip after the op that feeds it: the quantized range does its clamping, and the op's
# own output (say `conv_out`) then holds what the float model calls the Relu's output.
_FUSED_ACTIVATIONS = ("Relu", "Clip")


def _through_removed_activations(ref: _Model, found: list[_Tensor]) -> list[_Tensor]:
    by_name = {t.name: t for t in found}
    consumers: dict[str, int] = {}
    for node in ref.proto.graph.node:
        for i in node.input:
            consumers[i] = consumers.get(i, 0) + 1
    moved: dict[str, _Tensor] = {}
    for node in ref.proto.graph.node:
        if node.op_type not in _FUSED_ACTIVATIONS or not node.input or not node.output:
            continue
        x, y = node.input[0], node.output[0]
        if y in by_name or x not in by_name or consumers.get(x) != 1:
            continue
        pre = by_name[x]
        moved[x] = _Tensor(pre.index, node.name, node.op_type, y, pre.cand_name, pre.dequant, [x])
    return [moved.get(t.name, t) for t in found]


def _dequantize(value: np.ndarray, cand: _Model, names: tuple[str, str]) -> np.ndarray:
    from onnx import numpy_helper

    scale = numpy_helper.to_array(cand.initializers[names[0]]).astype(np.float32)
    zero = numpy_helper.to_array(cand.initializers[names[1]]).astype(np.float32) if names[1] in cand.initializers else 0.0
    return (value.astype(np.float32) - zero) * scale


def compare_layers(
    reference: Path,
    candidate: Path,
    feeds: list[Feed],
    tolerance: Tolerance,
    chunk: int = DEFAULT_CHUNK,
    progress: Callable[[], None] | None = None,
    on_chunks: Callable[[int], None] | None = None,
) -> LayerwiseResult:
    """Compare every shared intermediate tensor over `feeds`, a chunk of tensors at a time."""
    if not feeds:
        raise InputError("layerwise comparison needs at least one input")
    if chunk <= 0:
        raise InputError("the layer chunk size must be positive")
    ref, cand = _Model(reference), _Model(candidate)
    tensors, skipped = shared_tensors(ref, cand)
    if not tensors:
        raise InputError(
            f"{reference.name} and {candidate.name} share no intermediate tensor names",
            hint="layerwise comparison needs two versions of one graph (float vs quantized, original vs optimized)",
        )
    tol = layer_tolerance(tolerance)
    chunks = [tensors[i : i + chunk] for i in range(0, len(tensors), chunk)]
    if on_chunks:
        on_chunks(len(chunks))
    layers: list[LayerResult] = []
    for part in chunks:
        ref_session = ref.session([t.name for t in part])
        cand_session = cand.session([t.cand_name for t in part])
        cand_inputs = {i.name for i in cand_session.get_inputs()}
        accs = {t.name: OutputAccumulator(t.name, t.cand_name) for t in part}
        for feed in feeds:
            with framework_output():
                try:
                    r_values = ref_session.run([t.name for t in part], feed)
                    c_values = cand_session.run([t.cand_name for t in part], {k: v for k, v in feed.items() if k in cand_inputs})
                except Exception as exc:
                    raise InputError(f"onnxruntime failed to run the models layer by layer: {first_line(exc)}") from None
            for t, r, c in zip(part, r_values, c_values):
                if t.dequant:
                    c = _dequantize(c, cand, t.dequant)
                accs[t.name].update(r, c, tol)
            del r_values, c_values
        del ref_session, cand_session
        for t in part:
            layers.append(_layer(t, accs[t.name].result(tol), accs[t.name]))
        if progress:
            progress()
    notes = []
    if skipped:
        notes.append(f"{skipped} reference tensors have no counterpart in the candidate (fused or quantized away); not compared")
    return LayerwiseResult(layers, tol, skipped, notes)


def _layer(t: _Tensor, out: Any, acc: OutputAccumulator) -> LayerResult:
    diff_sq = max(acc.ref_sq + acc.cand_sq - 2 * acc.dot, 0.0)
    rel = math.sqrt(diff_sq / acc.ref_sq) if acc.ref_sq > 0 else (0.0 if diff_sq == 0 else math.inf)
    return LayerResult(
        index=t.index,
        node=t.node,
        op_type=t.op_type,
        tensor=t.name,
        candidate_tensor=t.cand_name,
        shape=out.shape,
        cosine=out.cosine,
        max_abs_error=out.max_abs_error,
        mean_abs_error=out.mean_abs_error,
        rel_l2_error=rel,
        passed=out.passed,
        reasons=out.reasons,
        inputs=t.inputs,
    )
