"""The precision census of a model as onnxruntime runs it: how much of its work and of its time is integer.

"My INT8 model is not faster" has a handful of causes, each visible only in the graph onnxruntime executes (see
measuring/ort_profile.py): GEMMs and convolutions left in float (excluded, repaired, not quantizable, or
quantized but without an integer kernel, so they run between a DequantizeLinear and a QuantizeLinear), Q/DQ
and Cast nodes that cost more than the integer kernels save, and kernels that are slower in int8 on this CPU.
The census reads that graph and the profiler's per-node times and says, per op type, which kernels run in
integer and which in float, with their share of the multiply-accumulates and of the measured time.

Time is the profiler's per-node durations summed over the timed runs, leaving out the runs another process
preempted (a run 25% slower than the median): on a busy machine a single preempted node takes more time than the
whole model, and would be charged all of it.

A node counts as integer when its kernel computes on 8-bit (or narrower) data: the integer kernels
(QLinearConv, QGemm, MatMulInteger, DynamicQuantizeMatMul...) and any other node whose first input is int8/uint8
(a MaxPool or Transpose on uint8). QuantizeLinear/DequantizeLinear/DynamicQuantizeLinear are the Q/DQ overhead,
Cast the cast overhead; everything else is float.
"""

from __future__ import annotations

import re
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mdeploy import machine
from mdeploy.deps import require
from mdeploy.frameworks import onnx_skeleton
from mdeploy.measuring import ort_profile

INTEGER_OPS = {
    "QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul",
    "ConvInteger", "QAttention", "QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearGlobalAveragePool",
    "QLinearAveragePool", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax", "QLinearWhere",
    "QEmbedLayerNormalization", "DynamicQuantizeLSTM", "MatMulNBits", "QLinearReduceMean",
}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
CAST_OPS = {"Cast"}
CONV_OPS = {"Conv", "FusedConv", "QLinearConv", "ConvInteger", "ConvTranspose", "NhwcFusedConv"}
GEMM_OPS = {"MatMul", "FusedMatMul", "Gemm", "FusedGemm", "QGemm", "QLinearMatMul", "MatMulInteger",
            "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "MatMulNBits"}
# the input holding the weight, per op, where it is not input 1
_WEIGHT_INPUT = {"QLinearConv": 3, "QGemm": 3, "QLinearMatMul": 3}
# executed op type -> the op the quantizer saw in the source graph
_SOURCE_OP = {"FusedConv": "Conv", "NhwcFusedConv": "Conv", "FusedGemm": "Gemm", "FusedMatMul": "MatMul"}
INTEGER_DTYPES = {"int8", "uint8", "int4", "uint4", "int16", "uint16"}
KINDS = ("integer", "float", "q/dq", "cast")
# time shares of the Q/DQ and Cast nodes above which the census says they are a cost worth looking at
OVERHEAD_NOTE = 0.10


@dataclass
class OpRow:
    op: str
    kind: str
    count: int = 0
    us: float = 0.0  # summed over the timed runs
    macs: int = 0
    time_share: float = 0.0
    mac_share: float = 0.0


@dataclass
class FloatNode:
    """A GEMM/convolution (or a node the quantizer wrapped in Q/DQ) that still runs in float, and why."""

    node: str
    op: str
    reason: str
    time_share: float
    macs: int


@dataclass
class Census:
    model: str
    mode: str  # float | static | dynamic | weight-only: what the executed graph shows
    runs: int
    threads: int | None
    integer_time_share: float
    integer_mac_share: float
    shares: dict[str, float]  # kind -> share of measured node time
    ops: list[OpRow]
    unfused_qdq: list[dict[str, str]]  # DequantizeLinear -> float consumer pairs onnxruntime did not fuse
    float_nodes: list[FloatNode]
    total_ms: float  # median whole run, from the profiler
    quiet_runs: int = 0  # the timed runs the shares are summed over: those no other process preempted
    cpu: dict[str, Any] = field(default_factory=machine.int8_isa)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def census(path: Path, feed: dict[str, Any], *, threads: int | None = 1, runs: int | None = None,
           excluded: Iterable[str] = (), excluded_ops: Iterable[str] = (), kept_by_repair: Iterable[str] = ()) -> Census:
    """Profile the model as onnxruntime runs it (`runs` timed runs, default: as many as fit about half a second,
    5 to 50) on `feed`, and take its census. `excluded` / `excluded_ops` are the user's --exclude / --exclude-op and
    `kept_by_repair` the nodes the accuracy repair kept in float (names in the source graph): they say why a node
    runs in float."""
    with tempfile.TemporaryDirectory(prefix="mdeploy-census-") as tmp:
        optimized = Path(tmp) / "executed.onnx"
        session = ort_profile.ProfiledSession(Path(path), threads, optimized)
        session.infer(feed)  # the first run also tells how many more fit the budget
        count = runs or ort_profile.runs_for(session.last_latency_s, 0.5, 5, 50)
        for _ in range(count + 1):
            session.infer(feed)
        prof = session.finish(warmup=2)
        graph = require("onnx", extra="onnx").load(str(optimized), load_external_data=False).graph
        source = onnx_skeleton.load_without_weights(Path(path)).graph
        named = {o: n.name for n in source.node for o in n.output}  # a tensor of the file -> the node writing it
        return _take(Path(path), graph, prof, threads, set(excluded), set(excluded_ops), set(kept_by_repair), named)


def kind_of(node: ort_profile.NodeTime) -> str:
    if node.op in QDQ_OPS:
        return "q/dq"
    if node.op in CAST_OPS:
        return "cast"
    if node.op in INTEGER_OPS or (node.inputs and node.inputs[0][0] in INTEGER_DTYPES):
        return "integer"
    return "float"


def macs_of(node: ort_profile.NodeTime, weights: dict[str, list[int]], graph_node: Any) -> int:
    """Multiply-accumulates of a GEMM/convolution at the shapes it ran with (0 for any other node): output elements
    times the reduction length (a convolution's weight [O, I/group, kh, kw] gives I/group*kh*kw; a GEMM's is the
    last dimension of its activation, input 0)."""
    if not node.outputs or node.op not in CONV_OPS | GEMM_OPS:
        return 0
    out = 1
    for d in node.outputs[0][1]:
        out *= max(int(d), 0)
    if node.op in CONV_OPS:
        index = _WEIGHT_INPUT.get(node.op, 1)
        name = graph_node.input[index] if graph_node is not None and len(graph_node.input) > index else ""
        shape = weights.get(name)
        if shape is None:  # not a constant: then the profiler lists it (only constant weights are pre-packed)
            shape = node.inputs[index][1] if len(node.inputs) > index else []
        reduce = 1
        for d in shape[1:]:
            reduce *= int(d)
        return out * reduce if len(shape) >= 3 else 0
    a = node.inputs[0][1] if node.inputs else []
    if len(a) < 1:
        return 0
    trans_a = graph_node is not None and any(at.name == "transA" and at.i for at in graph_node.attribute)
    k = a[-2] if trans_a and len(a) >= 2 else a[-1]
    return out * int(k)


def _take(path: Path, graph: Any, prof: ort_profile.Profile, threads: int | None, excluded: set[str],
          excluded_ops: set[str], kept: set[str], named: dict[str, str] | None = None) -> Census:
    by_name = {n.name: n for n in graph.node}
    weights = {t.name: list(t.dims) for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            consumers[i].append(n)
    outputs = {o.name for o in graph.output}
    ops: dict[tuple[str, str], OpRow] = {}
    kind_us: dict[str, float] = defaultdict(float)
    kind_macs: dict[str, int] = defaultdict(int)
    node_macs: dict[str, int] = {}
    quiet = prof.quiet_runs()
    total_us = sum(prof.node_us(n, quiet) for n in prof.nodes) or 1.0
    for node in prof.nodes:
        k = kind_of(node)
        macs = macs_of(node, weights, by_name.get(node.name))
        node_macs[node.name] = macs
        row = ops.setdefault((node.op, k), OpRow(node.op, k))
        row.count += 1
        row.us += prof.node_us(node, quiet)
        row.macs += macs
        kind_us[k] += prof.node_us(node, quiet)
        kind_macs[k] += macs
    total_macs = sum(kind_macs.values()) or 1
    for row in ops.values():
        row.time_share, row.mac_share = row.us / total_us, row.macs / total_macs
    executed = {n.op_type for n in graph.node}
    mode = ("dynamic" if executed & {"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "MatMulInteger", "ConvInteger"}
            else "static" if executed & (INTEGER_OPS | QDQ_OPS) - {"MatMulNBits"}
            else "weight-only" if "MatMulNBits" in executed else "float")
    unfused = [{"dequantize": n.name, "consumer": c.name, "consumer_op": c.op_type}
               for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] not in outputs
               for c in consumers[n.output[0]] if c.op_type not in QDQ_OPS | INTEGER_OPS]
    dq_fed = {u["consumer"] for u in unfused}
    why = _Reasons(mode, excluded, excluded_ops, kept, named or {})
    float_nodes = []
    for node in prof.nodes:
        k = kind_of(node)
        if k != "float" or not (node_macs[node.name] or node.name in dq_fed):
            continue
        reason = why.of(node, by_name.get(node.name), node.name in dq_fed, producer)
        float_nodes.append(FloatNode(node.name, node.op, reason, prof.node_us(node, quiet) / total_us, node_macs[node.name]))
    float_nodes.sort(key=lambda f: -f.time_share)
    shares = {k: kind_us[k] / total_us for k in KINDS}
    result = Census(
        model=str(path), mode=mode, runs=prof.runs, quiet_runs=len(quiet), threads=threads, integer_time_share=shares["integer"],
        integer_mac_share=kind_macs["integer"] / total_macs, shares=shares,
        ops=sorted(ops.values(), key=lambda r: -r.us), unfused_qdq=unfused, float_nodes=float_nodes,
        total_ms=(sorted(prof.run_us)[len(prof.run_us) // 2] / 1000) if prof.run_us else total_us / max(prof.runs, 1) / 1000,
    )
    result.notes = _notes(result)
    integer_anyway = sorted(n.name for n in prof.nodes if kind_of(n) == "integer" and node_macs[n.name]
                            and _aliases(n.name, by_name.get(n.name), named) & excluded)
    if integer_anyway:
        result.notes.append(f"excluded by the user but run in integer all the same: {', '.join(integer_anyway)} (onnxruntime "
                            "quantizes a float weight itself when the node sits between DequantizeLinear and "
                            "QuantizeLinear; exclude its neighbours too to keep it float)")
    return result



class _Reasons:
    """Why a GEMM/convolution of the executed graph runs in float. Names are matched to the source graph's
    loosely, because onnxruntime renames what it fuses (`/0/Conv` runs as `/0/Conv_token_1`, `fused /6/Gemm`, or
    as `/1/Relu_output_0_nchwc` after its Relu's output)."""

    def __init__(self, mode: str, excluded: set[str], excluded_ops: set[str], kept: set[str], named: dict[str, str]) -> None:
        self.mode, self.excluded, self.excluded_ops, self.kept, self.named = mode, excluded, excluded_ops, kept, named
        self.quantizable = _quantizable(mode)

    def of(self, node: ort_profile.NodeTime, graph_node: Any, dq_fed: bool, producer: dict[str, Any]) -> str:
        source_op = _SOURCE_OP.get(node.op, node.op)
        names = _aliases(node.name, graph_node, self.named)
        if self.mode == "float":
            return "the model is not quantized"
        if names & self.excluded or source_op in self.excluded_ops:
            return "excluded by the user"
        if names & self.kept:
            return "kept in float by the accuracy repair"
        if dq_fed:
            return ("quantized, but onnxruntime has no integer kernel for it here: it runs in float between "
                    "DequantizeLinear and QuantizeLinear")
        if source_op not in self.quantizable:
            return f"not quantizable: onnxruntime.quantization has no {self.mode} int8 form of {source_op}"
        if source_op in GEMM_OPS and graph_node is not None and all(i in producer for i in list(graph_node.input)[:2]):
            return "not quantized: both of its inputs are activations (only weight GEMMs are quantized)"
        return "not quantized by the quantizer (no calibrated range or weight for it)"


def _aliases(name: str, graph_node: Any, named: dict[str, str] | None = None) -> set[str]:
    """The source-graph names an executed node may carry: its own, without onnxruntime's and the quantizer's
    suffixes, and the tensors it writes (an NCHWc node is named after its output)."""
    found = {name}
    base = re.sub(r"^fused ", "", name)
    for suffix in (r"_token_\d+$", r"_nchwc$", r"_quant$", r"_MatMul$"):
        base = re.sub(suffix, "", base)
        found.add(base)
    outs = list(graph_node.output) if graph_node is not None else []
    for tensor in [base, *outs]:
        m = re.match(r"^(.*)_output_\d+$", tensor)  # torch's exporter names a node's output `<node>_output_0`
        if m:
            found.add(m[1])
    return found | {named[t] for t in found if named and t in named}


def _quantizable(mode: str) -> set[str]:
    try:
        registry = require("onnxruntime.quantization", extra="onnx").registry
    except Exception:  # noqa: BLE001 - reasons only; a census of a float model needs no quantizer
        return set()
    if mode == "dynamic":
        return set(registry.IntegerOpsRegistry)
    return set(registry.QLinearOpsRegistry) | set(registry.QDQRegistry)


def _notes(c: Census) -> list[str]:
    """What a user should look at first, each in one line."""
    notes = []
    if c.mode == "float":
        return ["the model runs entirely in float (it is not quantized)"]
    if c.unfused_qdq:
        ops = sorted({u["consumer_op"] for u in c.unfused_qdq})
        notes.append(f"{len(c.unfused_qdq)} DequantizeLinear outputs feed float kernels ({', '.join(ops)}): onnxruntime "
                     "did not fuse those Q/DQ pairs into integer kernels")
    overhead = c.shares["q/dq"] + c.shares["cast"]
    if overhead >= OVERHEAD_NOTE:
        notes.append(f"Q/DQ and Cast nodes take {overhead:.0%} of the int8 model's time")
    left = sum(f.time_share for f in c.float_nodes)
    if left >= OVERHEAD_NOTE:
        top = c.float_nodes[0]
        notes.append(f"GEMMs/convolutions left in float take {left:.0%} of the time (largest: {top.node}, {top.op}: "
                     f"{top.reason})")
    return notes
