"""The int8 bound: how much faster than float a model's int8 form can run on this CPU, measured, not assumed.

A fixed int8/fp32 target means nothing across CPUs: with AMX or AVX-512 VNNI onnxruntime's integer GEMM is several
times faster than fp32, on AVX2 without VNNI about 2x, and a depthwise convolution has no fast int8 kernel on x86
at all. So the bound is measured for the model at its own shapes:

1. profile the float model (measuring/ort_profile.py): the time of every GEMM/convolution that multiplies by a
   weight, with its shapes, and the rest;
2. for each such shape, a one-node float model and its int8 counterpart in the kernel family the quantized model
   uses (static: QDQ with 8-bit activations and per-channel int8 weights, which onnxruntime fuses into
   QLinearConv / QGemm; dynamic: onnxruntime.quantization.quantize_dynamic of the one-node model, which runs as
   DynamicQuantizeMatMul / ConvInteger), timed side by side (measuring.latency.time_runs), the kernel node's own
   time read from the profiler (layout changes at a one-node model's edges are paid once per model, not per layer);
3. bound = (1 - f) + f * sum_i w_i * r_i: f is the float time share of those nodes, w_i each shape's share of it
   and r_i its int8/float kernel ratio; everything else counts at 1.0x.

A speed-up of 1 / bound is what the int8 kernels allow; a quantized model far from it loses time elsewhere (Q/DQ,
Casts, nodes left in float: the census says which). benchmarks/int8_limit.py prints it for large models.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mdeploy.deps import require
from mdeploy.lazy import numpy as np
from mdeploy.logs import framework_output
from mdeploy.measuring import ort_profile
from mdeploy.measuring.latency import time_runs

GEMM_OPS = {"MatMul", "FusedMatMul", "Gemm", "FusedGemm"}
CONV_OPS = {"Conv", "FusedConv", "NhwcFusedConv"}
KERNEL_OPS = GEMM_OPS | CONV_OPS | {"QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat",
                                    "DynamicQuantizeMatMul", "ConvInteger"}
MAX_KERNELS = 8  # shapes measured; the rest of the GEMM/Conv time counts at the measured shapes' mean ratio
COVER = 0.95  # ...or fewer, once the measured shapes cover this share of the GEMM/Conv time


@dataclass
class Kernel:
    """One GEMM/convolution shape of the model: its share of the GEMM/Conv float time and its int8/float ratio."""

    key: tuple
    text: str
    share: float
    fp32_ms: float
    int8_ms: float
    ratio: float
    depthwise: bool
    nodes: list[str] = field(default_factory=list)  # the float model's executed nodes of this shape


@dataclass
class Bound:
    bound: float  # int8 / float latency the kernels allow (below 1: faster)
    gemm_conv_share: float
    kernel_ratio: float
    family: str
    threads: int | None
    kernels: list[Kernel]
    extrapolated_share: float = 0.0  # share of the GEMM/Conv time not measured, counted at the measured mean

    @property
    def speedup(self) -> float:
        return 1 / self.bound if self.bound > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["speedup"] = self.speedup
        for k in d["kernels"]:
            k["key"] = list(k["key"])
        return d


def kernel_key(node: ort_profile.NodeTime, graph_node: Any, weights: dict[str, list[int]]) -> tuple | None:
    """The GEMM/Conv shape of an executed node that multiplies by a constant weight; None for anything else (an
    attention's Q.K^T multiplies two activations and stays float in the int8 model too)."""
    if graph_node is None or not node.outputs or not node.inputs or len(graph_node.input) < 2:
        return None
    w = weights.get(graph_node.input[1])
    if w is None:
        return None
    y, x = node.outputs[0][1], node.inputs[0][1]
    if node.op in CONV_OPS and len(w) == 4 and len(x) == 4 and len(y) == 4:
        return ("conv", tuple(x), tuple(w), tuple(y))
    if node.op in GEMM_OPS and len(x) >= 2 and len(w) == 2:
        if any(a.name in ("transA", "transB") and a.i for a in graph_node.attribute):
            n = w[0] if any(a.name == "transB" and a.i for a in graph_node.attribute) else w[1]
            return ("gemm", int(np.prod(x[:-1])), int(x[-1]), int(n))
        return ("gemm", int(np.prod(x[:-1])), int(x[-1]), int(y[-1]))
    return None


def key_text(key: tuple) -> str:
    if key[0] == "conv":
        x, w, y = key[1:]
        group = x[1] // w[1]
        kind = "depthwise conv" if group == x[1] and group > 1 else "conv"
        return f"{kind} {x[1]}->{w[0]} {w[2]}x{w[3]} @{x[2]}x{x[3]}->{y[2]}x{y[3]}"
    return f"gemm {key[1]}x{key[2]}x{key[3]}"


def conv_attributes(x: tuple, w: tuple, y: tuple) -> dict[str, Any]:
    """Strides, pads and group of a convolution, from its input, weight and output shapes (dilation 1)."""
    group = max(1, x[1] // w[1])
    kh, kw = w[2], w[3]
    stride = max(1, round(x[2] / y[2]))
    pad = (kh - 1) // 2
    for candidate in [pad, *range(kh)]:
        if (x[2] + 2 * candidate - kh) // stride + 1 == y[2]:
            pad = candidate
            break
    return {"strides": [stride, stride], "pads": [pad, (kw - 1) // 2, pad, (kw - 1) // 2], "group": group,
            "kernel_shape": [kh, kw]}


def _save(nodes: list, inputs: list, outputs: list, inits: list, path: Path) -> None:
    onnx = require("onnx", extra="onnx")
    helper = onnx.helper
    graph = helper.make_graph(nodes, "kernel", inputs, outputs, inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))


def kernel_pair(key: tuple, family: str, work: Path, activation: str = "uint8") -> tuple[Path, Path, dict, dict]:
    """A one-node float model for `key` and its int8 counterpart in `family`, with a feed for each."""
    onnx = require("onnx", extra="onnx")
    helper, numpy_helper, T = onnx.helper, onnx.numpy_helper, onnx.TensorProto
    rng = np.random.default_rng(0)
    tag = "_".join(str(v) for part in key[1:] for v in (part if isinstance(part, tuple) else (part,)))
    fp32, int8 = work / f"{key[0]}_{tag}_fp32.onnx", work / f"{key[0]}_{tag}_{family}_{activation}.onnx"
    if key[0] == "conv":
        x, w, y = key[1:]
        attrs, op, a_shape, out_shape, w_axis = conv_attributes(x, w, y), "Conv", list(x), list(y), 0
        weight = rng.normal(0, 0.05, w).astype(np.float32)
        bias = rng.normal(0, 0.05, w[0]).astype(np.float32)
    else:
        m, k, n = key[1:]
        attrs, op, a_shape, out_shape, w_axis = {}, "Gemm", [m, k], [m, n], 1
        weight = rng.normal(0, 0.05, (k, n)).astype(np.float32)
        bias = rng.normal(0, 0.05, n).astype(np.float32)
    feed32 = {"x": rng.normal(0, 1, a_shape).astype(np.float32)}
    if not fp32.exists():
        _save([helper.make_node(op, ["x", "w", "b"], ["y"], name="kernel", **attrs)],
              [helper.make_tensor_value_info("x", T.FLOAT, a_shape)], [helper.make_tensor_value_info("y", T.FLOAT, out_shape)],
              [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")], fp32)
    if family == "dynamic":
        if not int8.exists():
            q = require("onnxruntime.quantization", extra="onnx")
            with framework_output():
                q.quantize_dynamic(str(fp32), str(int8), weight_type=q.QuantType.QInt8,
                                   extra_options={"MatMulConstBOnly": True})
        return fp32, int8, feed32, feed32
    # static: 8-bit in and out (as between two quantized layers), per-channel int8 weights, int32 bias
    signed = activation == "int8"
    act = np.int8 if signed else np.uint8
    feed8 = {"x": rng.integers(-128 if signed else 0, 128 if signed else 256, a_shape).astype(act)}
    if not int8.exists():
        sx, sy, zero = np.float32(0.02), np.float32(0.05), act(0 if signed else 128)
        channels = np.moveaxis(weight, w_axis, 0)
        sw = (np.abs(channels).reshape(channels.shape[0], -1).max(1) / 127).astype(np.float32)
        shape = [1] * weight.ndim
        shape[w_axis] = -1
        wq = np.clip(np.round(weight / sw.reshape(shape)), -127, 127).astype(np.int8)
        arrays = {"sx": np.array(sx), "zx": np.array(zero), "wq": wq, "sw": sw, "zw": np.zeros(len(sw), np.int8),
                  "bq": np.round(bias / (sx * sw)).astype(np.int32), "sb": (sx * sw).astype(np.float32),
                  "zb": np.zeros(len(sw), np.int32), "sy": np.array(sy), "zy": np.array(zero)}
        nodes = [
            helper.make_node("DequantizeLinear", ["x", "sx", "zx"], ["xf"], name="dq_x"),
            helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wf"], name="dq_w", axis=w_axis),
            helper.make_node("DequantizeLinear", ["bq", "sb", "zb"], ["bf"], name="dq_b", axis=0),
            helper.make_node(op, ["xf", "wf", "bf"], ["yf"], name="kernel", **attrs),
            helper.make_node("QuantizeLinear", ["yf", "sy", "zy"], ["y"], name="q_y"),
        ]
        t8 = T.INT8 if signed else T.UINT8
        _save(nodes, [helper.make_tensor_value_info("x", t8, a_shape)], [helper.make_tensor_value_info("y", t8, out_shape)],
              [numpy_helper.from_array(a, name) for name, a in arrays.items()], int8)
    return fp32, int8, feed32, feed8


def kernel_ratio(fp32: Path, int8: Path, feed32: dict, feed8: dict, threads: int | None = 1,
                 budget_s: float = 0.05) -> tuple[float, float, float]:
    """Median ms of the float and the int8 kernel node (the profiler's time of the node itself), the two models
    run in turns, and their ratio (int8 / float)."""
    s32, s8 = ort_profile.ProfiledSession(fp32, threads), ort_profile.ProfiledSession(int8, threads)
    s32.infer(feed32)
    s8.infer(feed8)
    runs = ort_profile.runs_for(s32.last_latency_s + s8.last_latency_s, budget_s, 10, 100)
    time_runs([(s32, feed32), (s8, feed8)], warmup=2, runs=runs, runs_per_turn=2)
    a, b = _kernel_ms(s32.finish(warmup=3)), _kernel_ms(s8.finish(warmup=3))
    return a, b, b / a if a > 0 else 1.0


def _kernel_ms(prof: ort_profile.Profile) -> float:
    per_run = [0.0] * min((len(n.us) for n in prof.nodes if n.op in KERNEL_OPS), default=0)
    for n in prof.nodes:
        if n.op in KERNEL_OPS:
            for i in range(len(per_run)):
                per_run[i] += n.us[i]
    return statistics.median(per_run) / 1000 if per_run else 0.0


def measure(fp32: Path, feed: dict[str, Any], family: str, work: Path, *, threads: int | None = 1,
            activation: str = "uint8", max_kernels: int = MAX_KERNELS, kernel_budget_s: float = 0.05) -> Bound:
    """The int8/float latency ratio this CPU's kernels allow for the float model `fp32` on `feed`, at `threads`
    (`family`: static or dynamic, the quantized model's kernels). One-node models are written to `work`."""
    if family not in ("static", "dynamic"):
        raise ValueError(f"int8 bound: family is static or dynamic, not {family}")
    onnx = require("onnx", extra="onnx")
    optimized = work / "float_executed.onnx"
    session = ort_profile.ProfiledSession(fp32, threads, optimized)
    session.infer(feed)
    for _ in range(ort_profile.runs_for(session.last_latency_s, 0.4, 3, 20) + 1):
        session.infer(feed)
    prof = session.finish(warmup=2)
    graph = onnx.load(str(optimized), load_external_data=False).graph
    by_name, weights = {n.name: n for n in graph.node}, {t.name: list(t.dims) for t in graph.initializer}
    quiet = prof.quiet_runs()  # runs no other process preempted: one preempted node would take all the weight
    total = sum(prof.node_us(n, quiet) for n in prof.nodes) or 1.0
    by_key: dict[tuple, list] = {}
    for n in prof.nodes:
        key = kernel_key(n, by_name.get(n.name), weights)
        if key:
            entry = by_key.setdefault(key, [0.0, []])
            entry[0] += prof.node_us(n, quiet)
            entry[1].append(n.name)
    weighted = sum(us for us, _ in by_key.values())
    kernels: list[Kernel] = []
    covered = 0.0
    for key, (us, names) in sorted(by_key.items(), key=lambda kv: -kv[1][0]):
        if len(kernels) >= max_kernels or covered >= COVER:
            break
        pair = kernel_pair(key, family, work, activation)
        ms32, ms8, ratio = kernel_ratio(*pair, threads=threads, budget_s=kernel_budget_s)
        x = key[1] if key[0] == "conv" else None
        depthwise = bool(x and key[2][1] == 1 and x[1] // key[2][1] > 1)
        kernels.append(Kernel(key, key_text(key), us / weighted, ms32, ms8, ratio, depthwise, names))
        covered += us / weighted
    measured = sum(k.share for k in kernels)
    mean = sum(k.share * k.ratio for k in kernels) / measured if measured else 1.0
    kernel = sum(k.share * k.ratio for k in kernels) + (1 - measured) * mean
    f = weighted / total
    return Bound((1 - f) + f * kernel, f, kernel, family, threads, kernels, 1 - measured if kernels else 0.0)
