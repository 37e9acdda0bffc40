"""The teacher's interface on an ONNX student: its input and output names, and the names of its dynamic axes.

Why: a student replaces its teacher in serving code that feeds `{"image": x}` and reads `"logits"`. Exported from
torch, the student is named after its forward() arguments and torch.onnx's defaults (`input`, `output`), with axes
named by the exporter; renamed here by position (the student takes the teacher's inputs in the teacher's order and
has its outputs, checked before training), it drops in where the teacher was without a code change, and
`mdeploy validate TEACHER STUDENT` pairs inputs and outputs by name without a remapping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mdeploy.core import TensorSpec
from mdeploy.deps import require


def take_interface(path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> list[str]:
    """Rename the ONNX student at `path` (in place) to the teacher's `inputs` and `outputs` (by position; their
    shapes carry the teacher's axis names, strings where an axis is dynamic). Returns notes on what was renamed,
    or why a name was kept."""
    from mdeploy.frameworks.tf_onnx import rename_io  # graph-level ONNX renaming, shared with the TF converters

    onnx = require("onnx", extra="onnx")
    model = onnx.load(str(path))
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    student_inputs = [v for v in graph.input if v.name not in initializers]
    pairs = list(zip(student_inputs, inputs)) + list(zip(graph.output, outputs))
    mapping = {s.name: t.name for s, t in pairs if s.name != t.name}
    taken = _names(graph) - set(mapping)
    clash = sorted(new for new in mapping.values() if new in taken)
    if clash:
        return [f"the student keeps its own input/output names: {', '.join(clash)} already name(s) a tensor inside it"]
    axes: dict[str, str] = {}
    for s, t in pairs:
        for dim, teacher_dim in zip(s.type.tensor_type.shape.dim, t.shape):
            if dim.dim_param and isinstance(teacher_dim, str) and teacher_dim != "?":
                axes.setdefault(dim.dim_param, teacher_dim)
    rename_io(model, {s.name: t.name for s, t in pairs[: len(student_inputs)]},
              [(s.name, t.name) for s, t in pairs[len(student_inputs):]])
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in axes:
                dim.dim_param = axes[dim.dim_param]
    onnx.save(model, str(path))
    if not mapping and not axes:
        return []
    renamed = ", ".join(f"{old} -> {new}" for old, new in mapping.items())
    return [(f"the student takes the teacher's interface ({renamed or 'names unchanged'}; dynamic axes named as the "
            "teacher's): it replaces the teacher without a code change (--keep-student-names keeps its own)")]


def onnx_outputs(path: Path) -> list[TensorSpec] | None:
    """An ONNX teacher's outputs with their axis names (read without its weights); None for another format."""
    from mdeploy.frameworks import onnx_models, onnx_skeleton

    if path.suffix != ".onnx" or not path.is_file():
        return None
    return [onnx_models.value_info_spec(v) for v in onnx_skeleton.load_without_weights(path).graph.output]


def _names(graph: Any) -> set[str]:
    """Every tensor name of the graph: node outputs and inputs, initializers, interface."""
    names = {i.name for i in graph.initializer} | {v.name for v in [*graph.input, *graph.output]}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names
