"""Measured speed against the bound: the float and the int8 model timed side by side, the int8 bound of this model
on this CPU (measuring/int8_bound.py), and, when the int8 model is slower than float, why.

Both models are timed in turns (measuring.latency.time_runs) by mdeploy's own onnxruntime runner at `threads`
intra-op threads (1 by default: the figure that is reproducible on a shared machine, and the one the bound is
measured at). The number of runs is set by the models' speed so that the whole check costs about a second on a
small model and a few seconds on a large one.
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mdeploy import machine
from mdeploy.measuring import int8_bound, ort_profile
from mdeploy.measuring.latency import time_runs

if TYPE_CHECKING:  # annotations only
    from mdeploy.quantization.census import Census

# a speed-up below 1/SLOWER is "slower than float" (a warning); within it, timing noise on a busy machine
SLOWER = 1.0


@dataclass
class Speed:
    threads: int | None
    runs: int
    float_ms: float
    int8_ms: float
    speedup: float  # float_ms / int8_ms
    bound_speedup: float | None  # what this CPU's int8 kernels allow (1 / bound)
    of_bound: float | None  # speedup / bound_speedup: 1.0 means all the kernels allow
    bound: int8_bound.Bound | None = None
    reasons: list[str] = field(default_factory=list)
    warning: str | None = None
    kind: str = "int8"  # what the quantized model is, in words: int8, or int4/int8 weight-only

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bound"] = self.bound.to_dict() if self.bound else None
        return d


def time_pair(float_path: Path, int8_path: Path, feed: dict[str, Any], threads: int | None = 1,
              budget_s: float = 1.0) -> tuple[float, float, int]:
    """Median ms of the float and the int8 model on `feed`, run in turns by mdeploy's onnxruntime runner; the
    number of runs (10 to 100 each) is what fits `budget_s`."""
    from mdeploy.core import Format, ModelRef
    from mdeploy.registry import open_runner

    runners = [open_runner(ModelRef(Path(p), Format.ONNX), "cpu", None, threads) for p in (float_path, int8_path)]
    for r in runners:
        r.infer(feed)
    runs = ort_profile.runs_for(sum(r.last_latency_s for r in runners), budget_s, 10, 100)
    times = time_runs([(r, feed) for r in runners], warmup=3, runs=runs, runs_per_turn=2)
    return statistics.median(times[0]) * 1000, statistics.median(times[1]) * 1000, runs


def measure_speed(float_path: Path, int8_path: Path, feed: dict[str, Any], *, family: str, threads: int | None = 1,
                  census: Census | None = None, activation: str = "uint8", with_bound: bool = True,
                  kind: str = "int8") -> Speed:
    """Speed-up of the int8 model over the float one, the bound for the float model in kernel `family` (static or
    dynamic), their ratio, and the reasons when int8 is slower (from the bound's kernels and the int8 model's
    census, when given)."""
    float_ms, int8_ms, runs = time_pair(float_path, int8_path, feed, threads)
    bound = None
    if with_bound:
        with tempfile.TemporaryDirectory(prefix="mdeploy-int8-bound-") as work:
            bound = int8_bound.measure(Path(float_path), feed, family, Path(work), threads=threads, activation=activation)
    speedup = float_ms / int8_ms if int8_ms > 0 else float("inf")
    bound_speedup = bound.speedup if bound else None
    speed = Speed(threads, runs, float_ms, int8_ms, speedup, bound_speedup,
                  speedup / bound_speedup if bound_speedup else None, bound, kind=kind)
    speed.reasons = reasons(speed, census)
    if speedup < SLOWER:
        speed.warning = (f"WARNING: the {kind} model is slower than the float model ({int8_ms:.3g} ms vs {float_ms:.3g} ms "
                         f"at {threads or 'all'} thread(s)): " + "; ".join(speed.reasons))
    return speed


def reasons(speed: Speed, census: Census | None) -> list[str]:
    """Why the int8 model is not faster (or not as fast as the kernels allow), from the measured numbers alone:
    kernels slower in int8 than in float (depthwise convolutions above all), a bound that is no speed-up at all,
    Q/DQ and Cast overhead, GEMMs left in float."""
    found = []
    b = speed.bound
    if b is not None:
        slow = [k for k in b.kernels if k.ratio > 1.0]
        depthwise = [k for k in slow if k.depthwise]
        if depthwise:
            share = sum(k.share for k in depthwise) * b.gemm_conv_share
            worst = max(k.ratio for k in depthwise)
            x86 = "" if machine.is_arm() else " (no fast int8 depthwise kernel on x86)"
            found.append(f"depthwise convolutions are {share:.0%} of the float model's time and run up to {worst:.2f}x "
                         f"slower in int8 on this CPU{x86}")
        other = [k for k in slow if not k.depthwise]
        if other:
            share = sum(k.share for k in other) * b.gemm_conv_share
            found.append(f"{len(other)} GEMM/Conv shape(s) ({share:.0%} of the float model's time, e.g. {other[0].text} at "
                         f"{other[0].ratio:.2f}x) run slower in int8 than in float on this CPU")
        if b.bound >= 1.0:
            found.append(f"this CPU's int8 kernels cannot make this model faster: the bound is {b.bound:.2f}x float's "
                         f"time ({machine.int8_isa()['int8_path']})")
    if census is not None:
        overhead = census.shares.get("q/dq", 0.0) + census.shares.get("cast", 0.0)
        if overhead >= 0.10:
            found.append(f"Q/DQ and Cast nodes take {overhead:.0%} of the int8 model's time")
        if census.unfused_qdq:
            found.append(f"{len(census.unfused_qdq)} Q/DQ pair(s) were not fused into integer kernels")
        left = sum(f.time_share for f in census.float_nodes)
        if left >= 0.10:
            found.append(f"GEMMs/convolutions left in float take {left:.0%} of the int8 model's time")
    if not found and speed.speedup < SLOWER:
        found.append("no single cause stands out: the int8 kernels' gain is lost to the nodes around them "
                     "(see the census)")
    return found


def feed_for_timing(feed: dict[str, Any], batch: int | None) -> dict[str, Any]:
    """The first `batch` samples (1 when the model's batch is free) of a proof feed: timing is at batch 1 unless
    the model fixes its batch."""
    rows = batch or 1
    return {k: v[:rows] if getattr(v, "ndim", 0) and v.shape[0] >= rows else v for k, v in feed.items()}
