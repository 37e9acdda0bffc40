"""What pruning bought: parameters, MACs and layer widths of torch modules (latency is measured like every other
latency, by measuring/latency.py)."""

from __future__ import annotations

import contextlib
import io
from typing import Any

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
