"""The census agrees with the profile: the integer share of time `mdeploy quantize` reports (quantization/census.py,
a short profile) against onnxruntime's own profiler per-node sums over a long run, read here independently: over
the runs no other process preempted (the census leaves those out too), and, for reference, over every run. Target: within 5 points, for every model. CPU flags printed.

    python benchmarks/quantize_census.py [WORKDIR] [--runs N]

Models: fixtures/census_graphs.py's CNN (static QDQ, and dynamic) and depthwise model, and, when WORKDIR holds them
(benchmarks/int8_limit.py writes them), its ResNet-50-style CNN and mdeploy's int8 form.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import mdeploy_quantize

from mdeploy import machine
from mdeploy.quantization.census import census

QDQ = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")
TARGET = 0.05
INTEGER = {"QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul",
           "MatMulIntegerToFloat", "QLinearGlobalAveragePool", "QLinearAdd", "QLinearMul", "QAttention"}


def profiler_share(path: Path, feed: dict, runs: int) -> tuple[float, float]:
    """Integer kernels' share of the per-node duration sums in onnxruntime's profile (2 warm-up runs dropped): over
    every run, and over the runs no other process preempted (within 1.25x the median run)."""
    import bisect
    import statistics

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "p")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for _ in range(runs + 2):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    model_runs = sorted((e["ts"], e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    starts = [ts for ts, _ in model_runs]
    limit = statistics.median(d for _, d in model_runs[2:]) * 1.25
    sums = {"all": defaultdict(float), "quiet": defaultdict(float)}
    for e in events:
        if e.get("cat") != "Node":
            continue
        run = bisect.bisect_right(starts, e["ts"]) - 1
        if run < 2:
            continue
        op = e["args"]["op_name"]
        first = next(iter(e["args"]["input_type_shape"][0])) if e["args"].get("input_type_shape") else ""
        kind = "integer" if op in INTEGER or (first in ("uint8", "int8") and op not in QDQ) else "other"
        sums["all"][kind] += e["dur"]
        if model_runs[run][1] <= limit:
            sums["quiet"][kind] += e["dur"]
    return tuple(s["integer"] / (s["integer"] + s["other"]) for s in (sums["all"], sums["quiet"]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", nargs="?")
    parser.add_argument("--runs", type=int, default=200, help="profiled runs of the reference profile")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-census-"))
    work.mkdir(parents=True, exist_ok=True)
    import onnxruntime

    from fixtures import census_graphs

    print(f"CPU: {machine.describe()}; onnxruntime {onnxruntime.__version__}")
    isa = machine.int8_isa()
    print(f"int8 path: {isa['int8_path']}: {isa['implies']}")
    rng = np.random.default_rng(0)
    cases = []
    cnn, calib = census_graphs.cnn(work / "cnn.onnx"), census_graphs.calibration(work / "cnn_calib.npz", (1, 3, 32, 32))
    dw, dw_calib = census_graphs.depthwise(work / "dw.onnx"), census_graphs.calibration(work / "dw_calib.npz", (1, 32, 28, 28))
    for name, src, data, mode, shape in (("cnn static", cnn, calib, "static", (1, 3, 32, 32)),
                                         ("cnn dynamic", cnn, calib, "dynamic", (1, 3, 32, 32)),
                                         ("depthwise static", dw, dw_calib, "static", (1, 32, 28, 28))):
        out = work / f"{name.replace(' ', '_')}.onnx"
        out.unlink(missing_ok=True)
        mdeploy_quantize(src, out, calib_data=str(data), mode=mode)
        cases.append((name, out, {"image": rng.random(shape).astype(np.float32)}))
    resnet = work / "resnet_mdeploy.onnx"
    if resnet.exists():
        cases.append(("ResNet-50-style static", resnet, {"image": rng.random((1, 3, 224, 224)).astype(np.float32)}))
    print(f"{'model':26} {'census':>8} {'profile':>8} {'diff':>7}  verdict  (profile sums over every run, preempted too)")
    worst = 0.0
    for name, path, feed in cases:
        c = census(path, feed)
        every, quiet = profiler_share(path, feed, args.runs)
        diff = abs(c.integer_time_share - quiet)
        worst = max(worst, diff)
        print(f"{name:26} {c.integer_time_share:8.1%} {quiet:8.1%} {diff * 100:6.2f}p  {'ok' if diff <= TARGET else 'MISSES'}"
              f"     ({every:.1%}; census on {c.quiet_runs} of {c.runs} runs)")
    print(f"worst difference: {worst * 100:.2f} points (target <= {TARGET * 100:.0f})")


if __name__ == "__main__":
    main()
