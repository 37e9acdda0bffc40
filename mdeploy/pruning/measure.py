"""What pruning bought: parameters, MACs and layer widths of torch modules, and onnxruntime latency measured
side by side (the two models alternate, so that a noisy machine slows both alike)."""

from __future__ import annotations

import contextlib
import io
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from mdeploy.deps import require


def first_sample(examples: dict[str, Any]) -> dict[str, Any]:
    """Batch 1 of the example inputs: MACs are counted per sample."""
    return {k: v[:1] for k, v in examples.items()}


def macs_and_params(module: Any, examples: dict[str, Any]) -> tuple[int, int]:
    """MACs of one forward pass on `examples` and the parameter count (Torch-Pruning's counter, which prints)."""
    tp = require("torch_pruning", extra="torch", purpose="count MACs")
    with contextlib.redirect_stdout(io.StringIO()):
        macs, params = tp.utils.count_ops_and_params(module, examples)
    return int(macs), int(params)


def nonzero_params(module: Any) -> int:
    return int(sum(int((p != 0).sum()) for p in module.parameters()))


def widths(module: Any) -> dict[str, list[int]]:
    """[in, out] channels / features of every convolution, linear layer and attention block, by name."""
    torch = require("torch", extra="torch")
    nn = torch.nn
    out: dict[str, list[int]] = {}
    for name, m in module.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            out[name] = [m.in_channels, m.out_channels]
        elif isinstance(m, nn.Linear):
            out[name] = [m.in_features, m.out_features]
        elif isinstance(m, nn.MultiheadAttention):
            out[name] = [m.embed_dim, m.num_heads]
    return out


def changed_widths(before: dict[str, list[int]], after: dict[str, list[int]]) -> list[dict[str, Any]]:
    return [{"layer": name, "before": before[name], "after": after.get(name)} for name in before
            if after.get(name) != before[name]]


def side_by_side_latency(models: list[Path], threads: int = 2, rounds: int = 30, runs_per_round: int = 10,
                         seed: int = 0) -> list[dict[str, float]]:
    """Median and p90 latency (ms, batch 1) of each ONNX model on onnxruntime, measured in alternating rounds."""
    ort = require("onnxruntime", extra="")
    from mdeploy.frameworks import onnx_models
    from mdeploy.validation import inputs as vinputs

    sessions, feeds = [], []
    for path in models:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        specs = onnx_models.graph_inputs(onnx_models.load_proto(path))
        feeds.append(vinputs.random_feed(specs, np.random.default_rng(seed), batch=1))
        sessions.append(sess)
    times: list[list[float]] = [[] for _ in models]
    for sess, feed in zip(sessions, feeds):  # warm up
        for _ in range(5):
            sess.run(None, feed)
    for _ in range(rounds):
        for i, (sess, feed) in enumerate(zip(sessions, feeds)):
            for _ in range(runs_per_round):
                start = time.perf_counter()
                sess.run(None, feed)
                times[i].append(time.perf_counter() - start)
    return [{"median_ms": statistics.median(t) * 1000, "p90_ms": float(np.percentile(t, 90)) * 1000, "runs": len(t)}
            for t in times]
