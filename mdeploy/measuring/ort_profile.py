"""What onnxruntime really runs and how long each node takes: its optimized graph and its profiler's per-node times.

The graph a user's .onnx file describes is not the one onnxruntime executes: its optimizer fuses Q/DQ pairs into
integer kernels (QLinearConv, QGemm), Conv+Relu into FusedConv, re-lays convolutions out in NCHWc blocks, and
renames nodes as it goes. Only that executed graph says which nodes run in int8, so the census and the int8 bound
read it (saved with `optimized_model_filepath`) together with onnxruntime's own profiler (`enable_profiling`),
whose events name the executed nodes, their kernels' input and output types and shapes, and their durations.

Sessions are opened as mdeploy's onnxruntime runner opens them (ort_sessions.open_session, default graph
optimizations, CPU provider), with `threads` intra-op threads, so the profile is of the graph the user's runs get.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdeploy.deps import require
from mdeploy.frameworks import ort_sessions

# onnxruntime writes initializers above this size to a side file, so the saved graph stays small to read
_EXTERNAL_MIN_BYTES = "1024"


@dataclass
class NodeTime:
    """One executed node: its kernel's op type, the (dtype, shape) of every input and output the profiler lists
    (constant weights onnxruntime pre-packed are left out of `inputs`), and its duration in each timed run (us)."""

    name: str
    op: str
    inputs: list[tuple[str, list[int]]]
    outputs: list[tuple[str, list[int]]]
    us: list[float] = field(default_factory=list)

    @property
    def median_us(self) -> float:
        return statistics.median(self.us) if self.us else 0.0

    @property
    def total_us(self) -> float:
        return float(sum(self.us))


@dataclass
class Profile:
    """Per-node times of `runs` timed runs (after the warm-up), in the order the nodes first ran."""

    nodes: list[NodeTime]
    runs: int
    run_us: list[float]  # each timed run's whole duration, as the profiler saw it

    def total_us(self) -> float:
        return sum(n.total_us for n in self.nodes)

    def quiet_runs(self, slack: float = 1.25) -> list[int]:
        """The timed runs no other process got in the way of: those within `slack` times the median run. On a
        busy machine one preempted node can take 20 ms in a run whose nodes take 100 us in all; summing it would
        hand that node most of the time."""
        if not self.run_us:
            return []
        limit = statistics.median(self.run_us) * slack
        return [i for i, us in enumerate(self.run_us) if us <= limit]

    def node_us(self, node: NodeTime, runs: list[int]) -> float:
        """A node's summed time over `runs` (indices of timed runs); when the node does not run once per run (a
        loop's body), its median times the number of runs."""
        if len(node.us) == len(self.run_us):
            return float(sum(node.us[i] for i in runs))
        return node.median_us * len(runs)


class ProfiledSession:
    """An onnxruntime session with its profiler on, run like a runner (`infer`, `last_latency_s`) so that
    measuring.latency.time_runs can interleave several of them; `finish()` reads the per-node times."""

    def __init__(self, path: Path, threads: int | None = 1, optimized_to: Path | None = None) -> None:
        ort = require("onnxruntime", extra="onnx")
        self._tmp = tempfile.TemporaryDirectory(prefix="mdeploy-profile-")
        options = ort.SessionOptions()
        options.log_severity_level = 4
        if threads:
            options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(self._tmp.name) / "profile")
        if optimized_to is not None:
            options.optimized_model_filepath = str(optimized_to)
            options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                             optimized_to.name + ".data")
            options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                             _EXTERNAL_MIN_BYTES)
        self.session = ort_sessions.open_session(Path(path), options, ["CPUExecutionProvider"]).session
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.last_latency_s = 0.0
        self.calls = 0

    def infer(self, feed: dict[str, Any]) -> None:
        start = time.perf_counter()
        self.session.run(self.outputs, feed)
        self.last_latency_s = time.perf_counter() - start
        self.calls += 1

    def finish(self, warmup: int) -> Profile:
        """The per-node times, the first `warmup` runs of every node dropped (first-run allocations, pre-packing)."""
        try:
            events = json.loads(Path(self.session.end_profiling()).read_text())
        finally:
            self._tmp.cleanup()
        return _parse(events, warmup)


def _parse(events: list[dict[str, Any]], warmup: int) -> Profile:
    nodes: dict[str, NodeTime] = {}
    seen: dict[str, int] = defaultdict(int)
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        name = e["name"].removesuffix("_kernel_time")
        seen[name] += 1
        if name not in nodes:
            args = e.get("args", {})
            nodes[name] = NodeTime(name, args.get("op_name", "?"), _typed(args.get("input_type_shape")),
                                   _typed(args.get("output_type_shape")))
        if seen[name] > warmup:
            nodes[name].us.append(float(e["dur"]))
    runs = [float(e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"][warmup:]
    return Profile(list(nodes.values()), len(runs), runs)


def _typed(entries: list[dict[str, list[int]]] | None) -> list[tuple[str, list[int]]]:
    return [next(iter(e.items())) for e in entries or [] if e]


def profile(path: Path, feed: dict[str, Any], threads: int | None = 1, runs: int = 10, warmup: int = 2,
            optimized_to: Path | None = None) -> Profile:
    """Run the model `warmup + runs` times with onnxruntime's profiler on; with `optimized_to`, also save the graph
    onnxruntime executes there (large initializers beside it in `<name>.data`)."""
    session = ProfiledSession(path, threads, optimized_to)
    for _ in range(warmup + runs):
        session.infer(feed)
    return session.finish(warmup)


def runs_for(seconds_each: float, budget_s: float, low: int, high: int) -> int:
    """How many timed runs fit a time budget, kept within [low, high]: a tiny model gets enough runs for a stable
    median, a large one does not make the command wait."""
    if seconds_each <= 0:
        return high
    return max(low, min(high, int(budget_s / seconds_each)))
