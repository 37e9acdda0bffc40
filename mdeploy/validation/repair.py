"""Accuracy-aware quantization: the loop that keeps the costliest nodes in float until the quantized model clears
the bar (`--max-error`, validation/bar.py).

Which nodes cost the most is measured, not guessed: the float and quantized models are compared layer by
layer, and each node the quantizer actually quantized is charged the error its output adds over the error
already present in its inputs (relative L2 error, which compounds through the graph). The worst are excluded
and the model re-quantized, 1, 1, 2, 4, ... nodes per round, so that a model needing many exclusions still
finishes in a few rounds.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mdeploy.core import ModelRef

if TYPE_CHECKING:  # annotations only: `mdeploy VERB --help` imports this module
    from mdeploy.validation.bar import Bar
    from mdeploy.validation.layerwise import LayerwiseResult
    from mdeploy.validation.proof import Proof

MAX_ROUNDS = 8


@dataclass
class Segment:
    """Nodes that produce one compared tensor (a compute node and the ops fused behind it), and their cost."""

    nodes: list[str]
    op_type: str
    tensor: str
    cost: float

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "op_type": self.op_type, "tensor": self.tensor, "cost_rel_l2": round(self.cost, 6)}


def quantized_nodes(candidate: Path, producers: dict[str, tuple[str, str, list[str]]]) -> set[str]:
    """Nodes of the quantizer's input model that the quantized model really quantized: replaced by integer
    ops (their name is gone: dynamic and QOperator), or fed by DequantizeLinear (QDQ)."""
    from mdeploy.frameworks import onnx_models

    model = onnx_models.load_proto(candidate)
    dq_out = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    present = {n.name for n in model.graph.node}
    fed = {
        n.name
        for n in model.graph.node
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
        and any(i in dq_out or i.endswith("_quantized") for i in n.input)
    }  # QDQ, or a kept name on int8 data (Gather)
    names = {node for node, _, _ in producers.values()}
    return {n for n in names if n in fed or n not in present}


def costs(
    layers: LayerwiseResult,
    producers: dict[str, tuple[str, str, list[str]]],
    excluded: set[str],
    quantized: set[str] | None = None,
) -> list[Segment]:
    """Each compared tensor's added error, charged to the nodes of the quantizer's model that produce it.

    `producers`: tensor -> (node name, op type, node inputs) in the model the quantizer saw. A tensor the
    candidate does not expose (a Conv output whose Relu was folded into the quantization) belongs to the
    segment of the compared tensor downstream of it.
    """
    error = {layer.tensor: layer.rel_l2_error for layer in layers.layers}
    segments = []
    for layer in layers.layers:
        if layer.tensor not in producers:
            continue
        nodes, frontier, upstream = [], [layer.tensor], []
        while frontier:
            tensor = frontier.pop()
            if tensor not in producers:
                continue
            node, _op, inputs = producers[tensor]
            if node in nodes:
                continue
            nodes.append(node)
            for i in inputs:
                if i in error:
                    upstream.append(error[i])
                elif i in producers and len(nodes) < 8:
                    frontier.append(i)
        nodes = [n for n in nodes if n not in excluded and (quantized is None or n in quantized)]
        if not nodes:  # nothing quantized here: error that shows up at this output was made upstream
            continue
        added = layer.rel_l2_error - max(upstream, default=0.0)
        segments.append(Segment(nodes[::-1], producers[layer.tensor][1], layer.tensor, added))
    # costliest first; segments that add no error still come last, so the loop can go on to all-float if it must
    return sorted(segments, key=lambda s: -s.cost)


@dataclass
class Round:
    excluded: list[Segment]
    margin: float
    missed: list[str]
    metrics: dict[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kept_in_float": [s.to_dict() for s in self.excluded],
            "met": self.margin >= 0,
            "missed": self.missed,
            "metrics": self.metrics,
        }


@dataclass
class Repair:
    """What the loop did: every round, the exclusions of the best model found, and whether the bar holds."""

    met: bool
    best_path: Path
    best_proof: Proof
    kept_in_float: list[Segment] = field(default_factory=list)
    rounds: list[Round] = field(default_factory=list)

    @property
    def exclude_args(self) -> str:
        return " ".join(f"--exclude '{n}'" for s in self.kept_in_float for n in s.nodes)


def repair(
    run_pass: Callable[[Any, Path], Any],
    options: Any,
    first: Path,
    first_proof: Proof,
    bar: Bar,
    evaluate: Callable[[Path], Proof],
    layerwise: Callable[[Path], LayerwiseResult],
    producers: Callable[[], dict[str, tuple[str, str, list[str]]]],
    workdir: Path,
    report_round: Callable[[Round], None] | None = None,
) -> Repair:
    """Exclude the costliest nodes and re-quantize until `bar` holds, or nothing is left to try."""
    margin, missed = bar.check(first_proof)
    metrics = {c.metric: first_proof.metric(c.metric) for c in bar.criteria}
    best = Repair(margin >= 0, first, first_proof, [], [Round([], margin, missed, metrics)])
    best_margin, current, excluded = margin, first, list(options.exclude)
    kept: list[Segment] = []
    step = 1
    for number in range(1, MAX_ROUNDS + 1):
        if best.met:
            break
        produced = producers()
        candidates = costs(layerwise(current), produced, set(excluded), quantized_nodes(current, produced))
        if not candidates:
            break
        chosen = candidates[:step]
        step *= 2
        kept = kept + chosen
        excluded = excluded + [n for s in chosen for n in s.nodes]
        current = workdir / f"round{number}.onnx"
        run_pass(replace(options, exclude=excluded), current)
        proof = evaluate(current)
        margin, missed = bar.check(proof)
        metrics = {c.metric: proof.metric(c.metric) for c in bar.criteria}
        best.rounds.append(Round(chosen, margin, missed, metrics))
        if report_round:
            report_round(best.rounds[-1])
        if margin > best_margin:
            best_margin = margin
            best.best_path, best.best_proof, best.kept_in_float, best.met = current, proof, list(kept), margin >= 0
    return best


def workspace() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="mdeploy-repair-")


def install(best: Path, target: Path) -> None:
    """Copy the best model found into the output being written (and its external data, if any)."""
    if best.resolve() == target.resolve():
        return
    from mdeploy.frameworks import onnx_models

    if not onnx_models.external_data_files(onnx_models.load_proto(best)):
        shutil.copyfile(best, target)
        return
    import onnx  # weights in an external file: re-save so that the file name inside the model matches

    model = onnx.load(str(best), load_external_data=True)
    onnx.save_model(model, str(target), save_as_external_data=True, all_tensors_to_one_file=True, location=target.name + ".data")


def producers_of(model_path: Path) -> dict[str, tuple[str, str, list[str]]]:
    """tensor -> (node name, op type, inputs) for every node output of an ONNX model."""
    from mdeploy.frameworks import onnx_models

    model = onnx_models.load_proto(model_path)
    return {out: (n.name, n.op_type, [i for i in n.input if i]) for n in model.graph.node for out in n.output if out}


def source_ref(path: Path) -> ModelRef:
    return ModelRef.parse(str(path))
