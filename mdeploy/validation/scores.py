"""Which outputs are class scores: the only outputs where top-1 agreement means something.

The argmax over the hidden units of a transformer's hidden state, or over a pooled embedding, is noise: a
dynamic-INT8 encoder at cosine 0.9935 "agrees" on 82% of them and used to fail the int8 gate for it. So top-1 is
computed and judged only for outputs that are class scores, decided in this order:

1. the user: `--classifier-output NAME` (those and no others) or `--no-classifier` (none);
2. the output's name: logits / scores / probs / classes / predictions are scores; hidden states, embeddings,
   features and pooled outputs are not;
3. the graph, where either model is ONNX: walking back from the output through shape-only ops, Q/DQ pairs and
   constant bias/scale, a Softmax/LogSoftmax or a MatMul/Gemm with a constant weight (a classification head)
   makes it scores; anything else (LayerNormalization, a residual Add, an activation, pooling) does not;
4. without a graph: a float (batch, classes) output is taken for scores, anything of higher rank is not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from mdeploy.core import Format
from mdeploy.errors import InputError, MdeployError
from mdeploy.lazy import numpy as np

_SCORES_NAME = re.compile(r"(^|[^a-z])(logits?|scores?|probs?|probabilities|class(es)?|predictions?|preds?)([^a-z]|$)")
_NOT_SCORES_NAME = re.compile(r"(hidden|embed|feature|pool|state|encod|latent|last_layer)")
_PASS_THROUGH = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast", "Dropout", "QuantizeLinear", "DequantizeLinear"}
_SOFTMAX = {"Softmax", "LogSoftmax"}
_HEADS = {"Gemm", "MatMul", "MatMulInteger", "QGemm", "QLinearMatMul", "FusedMatMul", "MatMulNBits", "DynamicQuantizeMatMul"}
_CONSTANT_OPS = {"Constant", "DequantizeLinear", "Transpose", "Cast", "Identity"}  # a weight on its way to the head
_MAX_WALK = 16


@dataclass(frozen=True)
class OutputKind:
    """Whether one output is class scores, and what said so (shown in reports)."""

    scores: bool
    source: str


def decide(
    names: list[str],
    arrays: dict[str, np.ndarray],
    declared: tuple[str, ...] | None,
    graphs: list[tuple[Path, dict[str, str]]],
) -> dict[str, OutputKind]:
    """The kind of every output in `names` (the reference's names).

    `declared`: the user's choice (None: decide; (): no output is scores). `graphs`: ONNX files of either model,
    each with a map from reference output name to that model's output name.
    """
    if declared is not None:
        unknown = sorted(set(declared) - set(names))
        if unknown:
            raise InputError(
                f"--classifier-output names {', '.join(unknown)}, which is not an output of the model",
                hint="outputs are: " + ", ".join(names),
            )
        why = "--classifier-output" if declared else "--no-classifier"
        return {n: OutputKind(n in declared, why) for n in names}
    kinds = {}
    for name in names:
        array = arrays.get(name)
        if array is None or array.dtype.kind != "f" or array.ndim < 2 or array.shape[-1] < 2:
            kinds[name] = OutputKind(False, "not a float score vector")
            continue
        kind = _by_name(name)
        if kind is None:
            kind = _by_graph(name, graphs)
        kinds[name] = kind if kind is not None else _by_shape(array)
    return kinds


def graphs_of(*runners: Any, pairs: list[tuple[str, str]]) -> list[tuple[Path, dict[str, str]]]:
    """The ONNX files among the runners' models (reference first), each with the reference-to-its-own name map."""
    found = []
    for i, runner in enumerate(runners):
        if runner.ref.format == Format.ONNX:
            found.append((runner.ref.path, {r: (r if i == 0 else c) for r, c in pairs}))
    return found


def notes(kinds: dict[str, OutputKind], judged: bool) -> list[str]:
    """One line saying which outputs top-1 was left out for, and why, when the tolerance would judge it."""
    skipped = [f"{name} ({kind.source})" for name, kind in kinds.items() if not kind.scores and kind.source != "not a float score vector"]
    if not skipped or not judged:
        return []
    return [f"top-1 agreement not judged on outputs that are not class scores: {', '.join(skipped)}; "
            "name them with --classifier-output if they are"]


def _by_name(name: str) -> OutputKind | None:
    lowered = name.lower()
    if _SCORES_NAME.search(lowered):
        return OutputKind(True, f"name '{name}'")
    if _NOT_SCORES_NAME.search(lowered):
        return OutputKind(False, f"name '{name}'")
    return None


def _by_shape(array: np.ndarray) -> OutputKind:
    if array.ndim == 2:
        return OutputKind(True, "shape (batch, classes)")
    return OutputKind(False, f"rank {array.ndim} output with no graph or name saying it is scores")


def _by_graph(name: str, graphs: list[tuple[Path, dict[str, str]]]) -> OutputKind | None:
    for path, names in graphs:
        try:
            stat = path.stat()
            producers, constants = _graph(path, stat.st_mtime_ns, stat.st_size)
        except (MdeployError, OSError):
            continue
        tensor = names.get(name, name)
        if tensor in producers:
            return _walk(tensor, producers, constants)
    return None


@lru_cache(maxsize=8)
def _graph(path: Path, mtime_ns: int, size: int) -> tuple[dict[str, tuple[str, list[str]]], frozenset[str]]:
    """tensor -> (op type, inputs) for every node output, and the names of constant tensors (cached per file
    version: a validation over many batches reads the graph once)."""
    from mdeploy.frameworks import onnx_skeleton

    model = onnx_skeleton.load_without_weights(path)  # the graph's structure is what counts, not the weights' bytes
    producers = {out: (n.op_type, list(n.input)) for n in model.graph.node for out in n.output if out}
    constants = {i.name for i in model.graph.initializer} | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return producers, frozenset(constants)


def _is_constant(tensor: str, producers: dict[str, tuple[str, list[str]]], constants: frozenset[str], depth: int = 0) -> bool:
    """A constant, or a constant on its way through DequantizeLinear / Transpose / Cast."""
    if tensor in constants:
        return True
    if depth > 3 or tensor not in producers:
        return False
    op, inputs = producers[tensor]
    return op in _CONSTANT_OPS and bool(inputs) and all(_is_constant(i, producers, constants, depth + 1) for i in inputs[:1])


def _walk(tensor: str, producers: dict[str, tuple[str, list[str]]], constants: frozenset[str]) -> OutputKind:
    for _ in range(_MAX_WALK):
        if tensor not in producers:
            return OutputKind(False, "graph: a graph input")
        op, inputs = producers[tensor]
        inputs = [i for i in inputs if i]
        if op in _SOFTMAX:
            return OutputKind(True, f"graph: {op}")
        if op in _HEADS:
            weights = inputs[1:2] if op != "QLinearMatMul" else inputs[3:4]
            if any(_is_constant(w, producers, constants) for w in weights):
                return OutputKind(True, f"graph: {op} head")
            return OutputKind(False, f"graph: {op} of two computed tensors")
        if op in _PASS_THROUGH and inputs:
            tensor = inputs[0]
            continue
        if op in ("Add", "Mul", "Div", "Sub") and len(inputs) == 2:
            dynamic = [i for i in inputs if not _is_constant(i, producers, constants)]
            if len(dynamic) == 1:  # a bias or a scale: look past it
                tensor = dynamic[0]
                continue
            if op == "Mul" and inputs[0] in producers and producers[inputs[0]][0] == "Cast":
                tensor = inputs[0]  # dynamic INT8: MatMulInteger -> Cast -> Mul(scale)
                continue
            return OutputKind(False, f"graph: produced by {op} of two computed tensors (e.g. a residual)")
        return OutputKind(False, f"graph: produced by {op}")
    return OutputKind(False, "graph: no head found")
