"""Which weight nodes run slower as INT8 than as float, read from onnxruntime's own profiles of both models.

`--goal latency` leaves these nodes in float as one of its candidates. Guessing them from the operator type is
wrong on some CPUs and right on others (a depthwise convolution has no fast int8 kernel on x86 and is slower
quantized; a 1x1 convolution is 2-4x faster with VNNI), so both models are profiled on the same feed with the same
session settings and each weight node's kernel time is compared.

Profiles name the nodes onnxruntime actually runs, after its fusions: an int8 kernel keeps the quantized node's name
(`/0/Conv` becomes `/0/Conv_token_1`), a float convolution fused with its activation is named after the activation's
output (`/1/Relu_output_0_nchwc`). Both are traced back to the weight node of the float graph they compute.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

WEIGHT_OPS = {"Conv", "MatMul", "Gemm"}
FLOAT_KERNELS = {"Conv", "FusedConv", "MatMul", "FusedMatMul", "Gemm", "FusedGemm", "NhwcFusedConv"}
INT8_KERNELS = {"QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat",
                "DynamicQuantizeMatMul", "ConvInteger", "QAttention", "NhwcQLinearConv"}
_SUFFIX = re.compile(r"(_token_\d+|_nchwc|_quant|_MatMul)+$")  # int8 / fused / dynamic names


def weight_node_of(profiled: str, graph: Any) -> str | None:
    """The weight node (Conv / MatMul / Gemm of the float graph) that a profiled kernel computes, or None."""
    nodes = {n.name: n for n in graph.node}
    producer = {out: n for n in graph.node for out in n.output}
    base = _SUFFIX.sub("", profiled)
    start = nodes.get(base) or producer.get(base)
    frontier = [start] if start is not None else []
    for _ in range(4):  # an activation, a residual Add, a bias Add fused behind the weight node
        found = [n for n in frontier if n.op_type in WEIGHT_OPS]
        if found:
            return found[0].name
        frontier = [producer[i] for n in frontier for i in n.input if i in producer]
    return None


def slower_in_int8(float_path: Path, int8_path: Path, feed: dict[str, Any], threads: int | None) -> list[dict[str, Any]]:
    """Weight nodes whose int8 kernel takes longer than their float kernel, slowest first, with both times (us)."""
    from mdeploy.frameworks import onnx_models
    from mdeploy.measuring import ort_profile

    float_graph = onnx_models.load_proto(float_path).graph
    int8_names = {n.name for n in onnx_models.load_proto(int8_path).graph.node}
    times: dict[str, dict[str, float]] = defaultdict(lambda: {"float": 0.0, "int8": 0.0})
    for kind, path, kernels in (("float", float_path, FLOAT_KERNELS), ("int8", int8_path, INT8_KERNELS)):
        for n in ort_profile.profile(path, feed, threads, runs=8, warmup=1).nodes:
            node = weight_node_of(n.name, float_graph) if n.op in kernels else None
            if node is not None:
                times[node][kind] += n.median_us
    slow = [
        {"node": node, "float_us": round(t["float"], 1), "int8_us": round(t["int8"], 1)}
        for node, t in times.items()
        if t["float"] > 0 and t["int8"] > t["float"] and node in int8_names
    ]
    return sorted(slow, key=lambda s: s["float_us"] - s["int8_us"])
