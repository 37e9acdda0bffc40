"""INT8 speed measured against this CPU's own limit: how close mdeploy's int8 models come to the kernel bound.

A fixed int8/fp32 latency target means nothing across CPUs: with AVX-512 VNNI or AMX onnxruntime's integer
GEMM is several times faster than fp32, on AVX2 without VNNI only about 2x. So this script measures, in the
same run as the whole-model figures, what the int8 kernels can buy on this CPU:

1. profile the fp32 model (onnxruntime's profiler, the same session settings as the timing): the time of
   every weight GEMM/Conv node with its shapes, and the rest;
2. for every GEMM/Conv shape, a one-node fp32 model and its int8 counterpart built with the kernel family
   mdeploy's output uses (static: QDQ with uint8 activations and per-channel int8 weights, which onnxruntime
   fuses into QLinearConv / QGemm; dynamic: mdeploy's own dynamic quantization of the one-node model, i.e.
   DynamicQuantizeLinear + MatMulInteger, fused into DynamicQuantizeMatMul), timed side by side;
3. bound = (1 - f) + f * sum_i w_i * r_i, where f is the fp32 time share of those nodes, w_i each shape's
   share of it and r_i its int8/fp32 kernel ratio; everything else counts at 1.0x;
4. each whole model's int8/fp32 latency ratio (mdeploy's defaults and onnxruntime's, interleaved), and
   ratio / bound, at 1 and 2 threads; then where the int8 model spends its time (int8 kernels, Q/DQ,
   GEMM/Conv left in float, the rest) and its slowest nodes outside the int8 kernels.

    python benchmarks/int8_limit.py [WORKDIR] [--models cnn,transformer] [--seconds S] [--kernel-seconds S]

Target: ratio / bound <= 1.15 for the ResNet-50-style CNN (static) and the BERT-base-size encoder (dynamic),
at 1 and 2 threads, and mdeploy's ratio below onnxruntime's defaults.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from _common import latencies, mdeploy_quantize, size

from mdeploy import machine  # noqa: E402  (_common puts the repository on the path)

THREADS = (1, 2)
GEMM_OPS = {"MatMul", "FusedMatMul", "Gemm", "FusedGemm"}
CONV_OPS = {"Conv", "FusedConv"}
INT8_KERNELS = {
    "QLinearConv",
    "QGemm",
    "QLinearMatMul",
    "MatMulInteger",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
    "ConvInteger",
    "QAttention",
}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
TARGET = 1.15


@dataclass
class NodeTime:
    name: str
    op: str
    inputs: list[list[int]]
    outputs: list[list[int]]
    us: float  # median over the profiled runs


def _shapes(entries: list[dict]) -> list[list[int]]:
    return [next(iter(e.values())) for e in entries]


def profile(path: Path, feed: dict, threads: int, runs: int = 12) -> list[NodeTime]:
    """Per-node median time (us) with shapes, from onnxruntime's profiler; the first run (warm-up) is dropped."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="int8-limit-prof-") as tmp:
        options.profile_file_prefix = str(Path(tmp) / "p")
        s = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for _ in range(runs + 1):
            s.run(None, feed)
        events = json.loads(Path(s.end_profiling()).read_text())
    per_run = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    durations: dict[str, list[float]] = defaultdict(list)
    first: dict[str, dict] = {}
    for e in per_run:
        durations[e["name"]].append(float(e["dur"]))
        first.setdefault(e["name"], e)
    out = []
    for name, e in first.items():
        args = e["args"]
        out.append(
            NodeTime(
                name.removesuffix("_kernel_time"),
                args["op_name"],
                _shapes(args.get("input_type_shape", [])),
                _shapes(args.get("output_type_shape", [])),
                statistics.median(durations[name][1:] or durations[name]),
            )
        )
    return out


def kernel_key(node: NodeTime) -> tuple | None:
    """The GEMM/Conv shape of a node that multiplies by a weight; None for anything else.

    onnxruntime pre-packs constant weights and then leaves them out of the profile's shapes: a GEMM whose
    only listed input of rank >= 2 is its activation multiplies by a weight; one with two such inputs
    (attention's Q.K^T and P.V) multiplies activations and stays float in the int8 model too."""
    if node.op in CONV_OPS and len(node.inputs) >= 2 and len(node.inputs[1]) == 4 and node.outputs:
        x, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
        return ("conv", tuple(x), tuple(w), tuple(y))
    if node.op in GEMM_OPS and node.inputs and node.outputs:
        matrices = [s for s in node.inputs if len(s) >= 2]
        if len(matrices) == 1 and len(node.inputs[0]) >= 2:
            a, y = node.inputs[0], node.outputs[0]
            return ("gemm", int(np.prod(a[:-1])), int(a[-1]), int(y[-1]))
    return None


def conv_attributes(x: tuple, w: tuple, y: tuple) -> dict:
    """Strides, pads and group of a convolution, from its input, weight and output shapes (dilation 1)."""
    group = x[1] // w[1]
    kh, kw = w[2], w[3]
    stride = max(1, round(x[2] / y[2]))
    for pad in [(kh - 1) // 2, *range(kh)]:
        if (x[2] + 2 * pad - kh) // stride + 1 == y[2]:
            break
    pads = [pad, (kw - 1) // 2, pad, (kw - 1) // 2]
    return {"strides": [stride, stride], "pads": pads, "group": group, "kernel_shape": [kh, kw]}


def _model(nodes, inputs, outputs, inits):  # noqa: ANN001, ANN202
    from onnx import helper

    graph = helper.make_graph(nodes, "kernel", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def kernel_pair(key: tuple, family: str, work: Path) -> tuple[Path, Path, dict, dict]:
    """One-node fp32 model and its int8 counterpart for `key`, with feeds for each."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    tag = "_".join(str(v) for part in key[1:] for v in (part if isinstance(part, tuple) else (part,)))
    fp32, int8 = work / f"{key[0]}_{tag}_fp32_v2.onnx", work / f"{key[0]}_{tag}_int8_{family}_v2.onnx"
    if key[0] == "conv":
        x, w, y = key[1:]
        attrs = conv_attributes(x, w, y)
        weight = rng.normal(0, 0.05, w).astype(np.float32)
        bias = rng.normal(0, 0.05, w[0]).astype(np.float32)
        op, a_shape, out_shape = "Conv", list(x), list(y)
        b_name_attrs = attrs
        w_axis = 0
    else:
        m, k, n = key[1:]
        # the [K, N] layout onnxruntime runs both the fp32 graph's MatMul+Add (fused to Gemm) and the quantized one in
        weight = rng.normal(0, 0.05, (k, n)).astype(np.float32)
        bias = rng.normal(0, 0.05, n).astype(np.float32)
        op, a_shape, out_shape = "Gemm", [m, k], [m, n]
        b_name_attrs = {}
        w_axis = 1
    feed32 = {"x": rng.normal(0, 1, a_shape).astype(np.float32)}
    if not fp32.exists():
        node = helper.make_node(op, ["x", "w", "b"], ["y"], name="kernel", **b_name_attrs)
        model = _model(
            [node],
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, a_shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
            [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
        )
        onnx.save(model, str(fp32))
    if family == "dynamic":  # mdeploy's own dynamic quantization of the one-node model
        if not int8.exists():
            mdeploy_quantize(fp32, int8, mode="dynamic")
        return fp32, int8, feed32, feed32
    # static: uint8 in, uint8 out (as between two quantized layers), int8 per-channel weights, int32 bias
    feed8 = {"x": rng.integers(0, 256, a_shape, dtype=np.uint8)}
    if not int8.exists():
        sx, zx, sy, zy = np.float32(0.02), np.uint8(128), np.float32(0.05), np.uint8(128)
        channels = np.moveaxis(weight, w_axis, 0)
        sw = (np.abs(channels).reshape(channels.shape[0], -1).max(1) / 127).astype(np.float32)
        shape = [1] * weight.ndim
        shape[w_axis] = -1
        wq = np.clip(np.round(weight / sw.reshape(shape)), -127, 127).astype(np.int8)
        bq = np.round(bias / (sx * sw)).astype(np.int32)
        inits = [
            numpy_helper.from_array(np.array(sx), "sx"),
            numpy_helper.from_array(np.array(zx), "zx"),
            numpy_helper.from_array(wq, "wq"),
            numpy_helper.from_array(sw, "sw"),
            numpy_helper.from_array(np.zeros(len(sw), np.int8), "zw"),
            numpy_helper.from_array(bq, "bq"),
            numpy_helper.from_array((sx * sw).astype(np.float32), "sb"),
            numpy_helper.from_array(np.zeros(len(sw), np.int32), "zb"),
            numpy_helper.from_array(np.array(sy), "sy"),
            numpy_helper.from_array(np.array(zy), "zy"),
        ]
        nodes = [
            helper.make_node("DequantizeLinear", ["x", "sx", "zx"], ["xf"], name="dq_x"),
            helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wf"], name="dq_w", axis=w_axis),
            helper.make_node("DequantizeLinear", ["bq", "sb", "zb"], ["bf"], name="dq_b", axis=0),
            helper.make_node(op, ["xf", "wf", "bf"], ["yf"], name="kernel", **b_name_attrs),
            helper.make_node("QuantizeLinear", ["yf", "sy", "zy"], ["y"], name="q_y"),
        ]
        model = _model(
            nodes,
            [helper.make_tensor_value_info("x", TensorProto.UINT8, a_shape)],
            [helper.make_tensor_value_info("y", TensorProto.UINT8, out_shape)],
            inits,
        )
        onnx.save(model, str(int8))
    return fp32, int8, feed32, feed8


def fused_ops(path: Path) -> list[str]:
    """The operators onnxruntime actually runs for a model (after its graph optimizations)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return sorted({n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node})


def _profiled(path: Path, threads: int, prefix: Path):  # noqa: ANN202
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.enable_profiling = True
    options.profile_file_prefix = str(prefix)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _kernel_runs(profile_file: str) -> list[float]:
    """Per run, the time (us) of the GEMM/Conv node itself: layout changes at the model's edges (NCHWc reorders,
    NHWC transposes) that a whole model pays once, not per layer, are left out."""
    events = json.loads(Path(profile_file).read_text())
    ops = GEMM_OPS | CONV_OPS | INT8_KERNELS
    return [float(e["dur"]) for e in events if e.get("cat") == "Node" and e.get("args", {}).get("op_name") in ops]


def kernel_ratio(fp32: Path, int8: Path, feed32: dict, feed8: dict, threads: int, seconds: float) -> tuple[float, float, float]:
    """Median ms of the fp32 and the int8 kernel node (onnxruntime's profiler), run interleaved, and their ratio."""
    with tempfile.TemporaryDirectory(prefix="int8-limit-kernel-") as tmp:
        s32, s8 = _profiled(fp32, threads, Path(tmp) / "f"), _profiled(int8, threads, Path(tmp) / "q")
        runs = 0
        deadline = time.perf_counter() + 2 * seconds
        while time.perf_counter() < deadline or runs < 8:
            s32.run(None, feed32)
            s8.run(None, feed8)
            runs += 1
        t32, t8 = _kernel_runs(s32.end_profiling())[3:], _kernel_runs(s8.end_profiling())[3:]  # 3 warm-up runs
    a, b = statistics.median(t32) / 1000, statistics.median(t8) / 1000
    return a, b, b / a


def bound(fp32: Path, feed: dict, family: str, work: Path, threads: int, kernel_seconds: float) -> dict:
    """The int8/fp32 ratio this CPU's kernels allow for the model, at `threads`."""
    nodes = profile(fp32, feed, threads)
    total = sum(n.us for n in nodes)
    by_key: dict[tuple, float] = defaultdict(float)
    for n in nodes:
        key = kernel_key(n)
        if key:
            by_key[key] += n.us
    weighted = sum(by_key.values())
    rows = []
    for key, us in sorted(by_key.items(), key=lambda kv: -kv[1]):
        fp32_k, int8_k, f32, f8 = kernel_pair(key, family, work)
        ms32, ms8, ratio = kernel_ratio(fp32_k, int8_k, f32, f8, threads, kernel_seconds)
        rows.append({"kernel": key, "share": us / weighted, "fp32_ms": ms32, "int8_ms": ms8, "ratio": ratio})
    if rows:  # the operators onnxruntime runs for the int8 one-node models: the kernel family measured
        rows[0]["int8_ops"] = fused_ops(kernel_pair(rows[0]["kernel"], family, work)[1])
    kernel = sum(r["share"] * r["ratio"] for r in rows)
    f = weighted / total
    return {"bound": (1 - f) + f * kernel, "gemm_conv_share": f, "kernel_ratio": kernel, "kernels": rows}


def breakdown(path: Path, feed: dict, threads: int = 1) -> dict:
    """Where a model spends its time: int8 kernels, Q/DQ, GEMM/Conv left in float, the rest; slowest nodes outside int8."""
    nodes = profile(path, feed, threads)
    total = sum(n.us for n in nodes)
    groups: dict[str, float] = defaultdict(float)
    slow: list[tuple[float, str, str, str]] = []
    for n in nodes:
        if n.op in INT8_KERNELS:
            group = "int8 GEMM/Conv"
        elif n.op in QDQ_OPS:
            group = "Q/DQ"
        elif kernel_key(n):
            group = "float GEMM/Conv"
        else:
            group = "other"
        groups[group] += n.us
        if group in ("Q/DQ", "float GEMM/Conv"):
            slow.append((n.us, group, n.op, n.name))
    slow.sort(reverse=True)
    return {
        "total_ms": total / 1000,
        "shares": {g: groups[g] / total for g in ("int8 GEMM/Conv", "Q/DQ", "float GEMM/Conv", "other")},
        "ms": {g: groups[g] / 1000 for g in ("int8 GEMM/Conv", "Q/DQ", "float GEMM/Conv", "other")},
        "slowest": [{"us": us, "group": g, "op": op, "node": name} for us, g, op, name in slow[:6]],
    }


def evaluate(
    title: str, fp32: Path, variants: dict[str, Path], feed: dict, family: str, work: Path, args: argparse.Namespace
) -> dict:
    """Bound, whole-model ratios and ratio/bound at 1 and 2 threads; breakdowns of every model."""
    kernels = work / "kernels"
    kernels.mkdir(exist_ok=True)
    result: dict = {"title": title, "family": family, "threads": {}, "size_ratio": {}}
    for name, p in variants.items():
        result["size_ratio"][name] = size(p) / size(fp32)
    for threads in THREADS:
        b = bound(fp32, feed, family, kernels, threads, args.kernel_seconds)
        lat = latencies({"fp32": fp32, **variants}, feed, threads, args.seconds)
        ratios = {name: lat[name] / lat["fp32"] for name in variants}
        over = {n: r / b["bound"] for n, r in ratios.items()}
        result["threads"][threads] = {"bound": b, "ms": lat, "ratio": ratios, "over_bound": over}
    result["breakdown"] = {"fp32": breakdown(fp32, feed), **{name: breakdown(p, feed) for name, p in variants.items()}}
    # the same ratio from the profiles: sums of per-node medians, far less hit by other processes on a busy machine
    # (a preempted node moves one median a little; a preempted run moves a whole-model sample a lot)
    bound1 = result["threads"][1]["bound"]["bound"]
    total = result["breakdown"]["fp32"]["total_ms"]
    result["profile_ratio_1t"] = {n: result["breakdown"][n]["total_ms"] / total for n in variants}
    result["profile_over_bound_1t"] = {n: r / bound1 for n, r in result["profile_ratio_1t"].items()}
    print_result(result)
    return result


def print_result(r: dict) -> None:
    print(f"\n== {r['title']}")
    for threads, t in r["threads"].items():
        b = t["bound"]
        print(
            f"  {threads} thread(s): fp32 {t['ms']['fp32']:.1f} ms; GEMM/Conv are {b['gemm_conv_share']:.1%} of fp32 time, "
            f"their int8 kernels run at {b['kernel_ratio']:.3f}x -> bound {b['bound']:.3f}x"
        )
        for name, ratio in t["ratio"].items():
            over = t["over_bound"][name]
            verdict = "ok" if over <= TARGET else f"MISSES {TARGET}x"
            print(f"    {name:24} {t['ms'][name]:8.1f} ms  ratio {ratio:.3f}x  ratio/bound {over:.3f}  {verdict}")
        if b["kernels"] and "int8_ops" in b["kernels"][0]:
            print(f"    int8 one-node models run as: {' + '.join(b['kernels'][0]['int8_ops'])}")
        worst = sorted(b["kernels"], key=lambda k: -k["share"])[:6]
        print("    largest kernels (share of GEMM/Conv time, int8/fp32): " + "; ".join(
            f"{_key_text(k['kernel'])} {k['share']:.0%} {k['ratio']:.2f}x" for k in worst
        ))
    print("  size: " + ", ".join(f"{n} {s:.3f}x" for n, s in r["size_ratio"].items()))
    print(
        "  1 thread, from the profiles' per-node medians: "
        + "; ".join(
            f"{n} ratio {x:.3f}x, ratio/bound {r['profile_over_bound_1t'][n]:.3f}" for n, x in r["profile_ratio_1t"].items()
        )
    )
    print("  where the time goes at 1 thread (ms): int8 GEMM/Conv | Q/DQ | float GEMM/Conv | other")
    for name, bd in r["breakdown"].items():
        ms = bd["ms"]
        print(
            f"    {name:24} {ms['int8 GEMM/Conv']:7.2f} | {ms['Q/DQ']:6.2f} | {ms['float GEMM/Conv']:7.2f} | {ms['other']:6.2f}"
            f"  (total {bd['total_ms']:.1f})"
        )
        if name != "fp32" and bd["slowest"]:
            slowest = "; ".join(f"{s['node']} ({s['op']}, {s['us'] / 1000:.2f} ms)" for s in bd["slowest"][:4])
            print(f"      slowest outside int8 kernels: {slowest}")


def _key_text(key: tuple) -> str:
    if key[0] == "conv":
        x, w, y = key[1:]
        return f"conv {w[1] * (x[1] // w[1])}->{w[0]} {w[2]}x{w[3]} @{x[2]}->{y[2]}"
    return f"gemm {key[1]}x{key[2]}x{key[3]}"


def cnn(work: Path, args: argparse.Namespace) -> dict:
    import quantize_cnn as c
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    fp32, ours, ort_default = work / "resnet.onnx", work / "resnet_mdeploy.onnx", work / "resnet_ort_default.onnx"
    calib = work / "calib.npz"
    if not fp32.exists():
        c.export(fp32)
    if not ours.exists() or not ort_default.exists():
        np.savez(calib, image=c.images(args.calib, 1))
        ours.unlink(missing_ok=True)
        for note in mdeploy_quantize(fp32, ours, calib_data=str(calib)):
            print("  mdeploy:", note)
        reader = type("R", (c.Reader, CalibrationDataReader), {})(np.load(calib)["image"])
        quantize_static(str(fp32), str(ort_default), reader)
    variants = {"mdeploy (defaults)": ours, "onnxruntime defaults": ort_default}
    title = "ResNet-50-style CNN, static INT8, batch 1, 224x224"
    return evaluate(title, fp32, variants, {"image": c.images(1, 2)}, "static", work, args)


def transformer(work: Path, args: argparse.Namespace) -> dict:
    import quantize_transformer as t
    from onnxruntime.quantization import quantize_dynamic

    exporter = args.exporter
    fp32 = work / f"encoder_{exporter}.onnx"
    ours, ort_default = work / f"encoder_{exporter}_mdeploy.onnx", work / f"encoder_{exporter}_ort_default.onnx"
    if not fp32.exists():
        t.export(fp32, exporter)
    if not ours.exists():
        for note in mdeploy_quantize(fp32, ours, mode="dynamic"):
            print("  mdeploy:", note)
    variants = {"mdeploy (defaults)": ours}
    try:
        if not ort_default.exists():
            quantize_dynamic(str(fp32), str(ort_default))
        variants["onnxruntime defaults"] = ort_default
    except Exception as exc:  # noqa: BLE001 - the failure is the figure
        print(f"  onnxruntime quantize_dynamic (defaults) FAILED on this export: {type(exc).__name__}: {str(exc)[:160]}")
    feed = {"input_ids": np.random.default_rng(0).integers(0, t.VOCAB, (1, t.SEQ)).astype(np.int64)}
    title = f"BERT-base-size encoder ({exporter} export), dynamic INT8, batch 1, seq {t.SEQ}"
    return evaluate(title, fp32, variants, feed, "dynamic", work, args)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", nargs="?", help="models are built here once and reused")
    parser.add_argument("--models", default="cnn,transformer")
    parser.add_argument("--seconds", type=float, default=5.0, help="whole-model timing per model per thread count")
    parser.add_argument("--kernel-seconds", type=float, default=0.4, help="timing per one-node model")
    parser.add_argument("--calib", type=int, default=32, help="calibration images for the CNN")
    parser.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-int8-limit-"))
    work.mkdir(parents=True, exist_ok=True)
    import onnxruntime

    print(f"CPU: {machine.describe()}; onnxruntime {onnxruntime.__version__}")
    results = {"cpu": machine.cpu_name(), "flags": machine.cpu_flags(), "onnxruntime": onnxruntime.__version__, "models": []}
    for model in args.models.split(","):
        start = time.time()
        results["models"].append({"cnn": cnn, "transformer": transformer}[model](work, args))
        print(f"  ({time.time() - start:.0f}s)")
    if args.json:
        args.json.write_text(json.dumps(results, default=str, indent=1))


if __name__ == "__main__":
    sys.exit(main())
