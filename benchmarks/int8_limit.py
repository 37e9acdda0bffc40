"""INT8 speed measured against this CPU's own limit: how close mdeploy's int8 models come to the kernel bound.

A fixed int8/fp32 latency target means nothing across CPUs: with AVX-512 VNNI or AMX onnxruntime's integer
GEMM is several times faster than fp32, on AVX2 without VNNI only about 2x. So this script measures, in the
same run as the whole-model figures, what the int8 kernels can buy on this CPU:

1. profile the fp32 model (onnxruntime's profiler, the same session settings as the timing): the time of
   every weight GEMM/Conv node with its shapes, and the rest;
2. (mdeploy/measuring/int8_bound.py, the method quantize reports with) for every GEMM/Conv shape, a one-node fp32 model and its int8 counterpart built with the kernel family
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

from mdeploy import machine
from mdeploy.measuring import int8_bound

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


def bound(fp32: Path, feed: dict, family: str, work: Path, threads: int, kernel_seconds: float) -> dict:
    """The int8/fp32 ratio this CPU's kernels allow for the model, at `threads` (mdeploy.measuring.int8_bound)."""
    b = int8_bound.measure(fp32, feed, family, work, threads=threads, max_kernels=64, kernel_budget_s=kernel_seconds)
    rows = [{"kernel": k.key, "share": k.share, "fp32_ms": k.fp32_ms, "int8_ms": k.int8_ms, "ratio": k.ratio}
            for k in b.kernels]
    return {"bound": b.bound, "gemm_conv_share": b.gemm_conv_share, "kernel_ratio": b.kernel_ratio, "kernels": rows,
            "extrapolated_share": b.extrapolated_share}


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
