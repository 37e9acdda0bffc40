"""What the benchmarks share: quantizing with mdeploy's defaults and with onnxruntime's, timing each model at 1 and 2
threads, measuring output error against the float model; the work folder of the scripts that run mdeploy per verb.

Figures, not tests: run on an idle machine; every model is timed in the same process, interleaved.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def work_folder(given: Path | None, prefix: str) -> tuple[Path, Path]:
    """The folder a benchmark writes its models to (`given`, or a new temporary one) and the `logs` folder inside it
    where each child process's stdout and stderr go."""
    work = given or Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    return work, logs


def mdeploy_quantize(src: Path, out: Path, **options) -> list[str]:
    """Quantize with mdeploy's pass and its defaults (options only say where the calibration data is)."""
    from mdeploy.core import ModelRef
    from mdeploy.quantization.onnx_quantize import OnnxQuantize, OnnxQuantizeOptions

    result = OnnxQuantize().run(ModelRef.parse(str(src)), out, OnnxQuantizeOptions(**options))
    return result.notes


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def latencies(models: dict[str, Path], feed: dict, threads: int, seconds: float = 6.0, warmup: int = 3) -> dict[str, float]:
    """Median latency (ms) per model; rounds interleave the models so machine noise hits them alike."""
    sessions = {name: session(path, threads) for name, path in models.items()}
    for s in sessions.values():
        for _ in range(warmup):
            s.run(None, feed)
    times: dict[str, list[float]] = {name: [] for name in models}
    deadline = time.perf_counter() + seconds * len(models)
    while time.perf_counter() < deadline or min(len(v) for v in times.values()) < 5:
        for name, s in sessions.items():
            start = time.perf_counter()
            s.run(None, feed)
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(v) for name, v in times.items()}


def errors(reference: Path, candidate: Path, feeds: list[dict]) -> dict[str, float]:
    """Cosine similarity and max abs error of the first output over `feeds`, and top-1 agreement."""
    ref, cand = session(reference, 2), session(candidate, 2)
    r = np.concatenate([ref.run(None, f)[0].reshape(len(next(iter(f.values()))), -1) for f in feeds]).astype(np.float64)
    c = np.concatenate([cand.run(None, f)[0].reshape(len(next(iter(f.values()))), -1) for f in feeds]).astype(np.float64)
    cos = float((r * c).sum() / np.sqrt((r * r).sum() * (c * c).sum()))
    return {"cosine": cos, "max_abs": float(np.abs(r - c).max()), "top1": float((r.argmax(1) == c.argmax(1)).mean())}


def size(path: Path) -> int:
    return path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(path.name + "*.data"))


def report(title: str, fp32: Path, variants: dict[str, Path], feed: dict, eval_feeds: list[dict], seconds: float) -> dict:
    """Print and return size ratio, latency ratio at 1 and 2 threads, and error for every variant."""
    rows: dict[str, dict] = {name: {"size_ratio": size(p) / size(fp32)} for name, p in variants.items()}
    for name, p in variants.items():
        rows[name].update(errors(fp32, p, eval_feeds))
    for threads in (1, 2):
        lat = latencies({"fp32": fp32, **variants}, feed, threads, seconds)
        for name in variants:
            rows[name][f"latency_ratio_{threads}t"] = lat[name] / lat["fp32"]
            rows[name][f"ms_{threads}t"] = lat[name]
        rows.setdefault("fp32", {})[f"ms_{threads}t"] = lat["fp32"]
    from mdeploy import machine

    isa = machine.int8_isa()
    print(f"\nCPU: {machine.describe()}\nint8 kernels: {isa['int8_path']}: {isa['implies']}")
    print(
        f"\n== {title} (fp32: {size(fp32) / 2**20:.1f} MiB, {rows['fp32']['ms_1t']:.1f} ms at 1 thread, "
        f"{rows['fp32']['ms_2t']:.1f} ms at 2 threads)"
    )
    print(f"{'variant':28} {'size':>7} {'lat 1t':>7} {'lat 2t':>7} {'cosine':>9} {'max abs':>9} {'top-1':>6}")
    for name in variants:
        r = rows[name]
        print(
            f"{name:28} {r['size_ratio']:6.3f}x {r['latency_ratio_1t']:6.3f}x {r['latency_ratio_2t']:6.3f}x "
            f"{r['cosine']:9.5f} {r['max_abs']:9.4f} {r['top1']:6.3f}"
        )
    print(json.dumps(rows, indent=None, default=float))
    return rows
