"""Latency: the one way mdeploy times a model, used by benchmark, prune and distill.

Every run is timed by the runner (Runner.infer: `last_latency_s`, the backend call alone, the feed checks not
counted; on CUDA the device synchronized before the clock starts and before it stops). Several models are timed
in turns, so that a machine that slows down part way (another process, a CPU's clock) slows every model alike and
a ratio between them stays fair.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

# Latency samples kept in the report for plotting its distribution; a longer run keeps evenly spaced ones
# (the percentiles are always computed from every sample).
MAX_SAMPLES = 2000


def time_runs(
    models: Sequence[tuple[Any, dict[str, np.ndarray]]],
    *,
    warmup: int,
    runs: int | None = None,
    duration: float | None = None,
    runs_per_turn: int = 1,
    advance: Callable[[], None] | None = None,
) -> list[list[float]]:
    """Seconds of every timed run of each (runner, feed), in the order they ran.

    Each model first runs `warmup` times untimed (in turns). Then the models take turns of `runs_per_turn` runs
    each: `runs` timed runs per model, or, with `duration`, turns until that many seconds have passed (at least
    one turn). `advance` is called after every turn (a progress bar's step).
    """
    if (runs is None) == (duration is None):
        raise ValueError("time_runs: give runs or duration, not both")
    for _ in range(warmup):
        for runner, feed in models:
            runner.infer(feed)
    times: list[list[float]] = [[] for _ in models]
    deadline = time.perf_counter() + duration if duration is not None else None
    while True:
        done = len(times[0]) if models else 0
        if deadline is None and done >= (runs or 0):
            break
        if deadline is not None and done and time.perf_counter() >= deadline:
            break
        turn = runs_per_turn if runs is None else min(runs_per_turn, runs - done)
        for (runner, feed), seconds in zip(models, times):
            for _ in range(turn):
                runner.infer(feed)
                seconds.append(runner.last_latency_s)
        if advance is not None:
            advance()
    return times


def side_by_side(paths: Sequence[Path], threads: int | None = 2, runs: int = 300, runs_per_turn: int = 10,
                 seed: int = 0) -> list[dict[str, float]]:
    """Median and p90 latency (ms, batch 1, random inputs) of each model file on the CPU, timed in turns
    (time_runs); each model's own runner loads it, with `threads` intra-op threads."""
    from mdeploy.core import ModelRef
    from mdeploy.lazy import numpy as np
    from mdeploy.registry import open_runner
    from mdeploy.validation import inputs as vinputs

    runners = [open_runner(ModelRef.parse(str(p)), "cpu", None, threads) for p in paths]
    feeds = [vinputs.random_feed(r.input_specs(), np.random.default_rng(seed), batch=1) for r in runners]
    times = time_runs(list(zip(runners, feeds)), warmup=5, runs=runs, runs_per_turn=runs_per_turn)
    return [{"median_ms": float(np.median(t)) * 1000, "p90_ms": float(np.percentile(t, 90)) * 1000, "runs": len(t)}
            for t in times]


def percentiles(seconds: list[float]) -> dict[str, float]:
    import numpy as np

    ms = np.asarray(seconds) * 1000.0
    return {
        "mean": float(ms.mean()),
        "p50": float(np.percentile(ms, 50)),
        "p90": float(np.percentile(ms, 90)),
        "p99": float(np.percentile(ms, 99)),
        "min": float(ms.min()),
        "max": float(ms.max()),
        "std": float(ms.std()),
    }


def latency_samples(seconds: list[float], cap: int = MAX_SAMPLES) -> list[float]:
    """The timed runs in milliseconds (0.1 us resolution), in the order they ran; at most `cap` of them, evenly spaced."""
    if len(seconds) > cap:
        step = len(seconds) / cap
        seconds = [seconds[int(i * step)] for i in range(cap)]
    return [round(s * 1000.0, 4) for s in seconds]
