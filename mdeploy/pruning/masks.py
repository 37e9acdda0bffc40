"""Unstructured and 2:4 sparsity with torch.nn.utils.prune, made permanent (prune.remove) once recovery is done.

While the masks are attached (weight = weight_orig * weight_mask), fine-tuning cannot bring a zeroed weight back;
`make_permanent` then folds them into plain weights, so the module's state_dict fits its factory again.

Zeroed weights are still stored densely and computed by a dense runtime: the file compresses better and sparse
kernels (2:4 on GPUs with sparse tensor cores) can use them, but onnxruntime on a CPU runs exactly as fast as
before. The verb says so and measures it.
"""

from __future__ import annotations

from typing import Any

from mdeploy.deps import require
from mdeploy.errors import InputError


def prunable_layers(module: Any, skip: set[str]) -> list[tuple[str, Any]]:
    torch = require("torch", extra="torch")
    kinds = (torch.nn.modules.conv._ConvNd, torch.nn.Linear)
    return [(n, m) for n, m in module.named_modules() if isinstance(m, kinds) and n not in skip and not _under(n, skip)]


def _under(name: str, skip: set[str]) -> bool:
    return any(name.startswith(s + ".") for s in skip)


def unstructured(module: Any, sparsity: float, skip: set[str], global_ranking: bool) -> list[str]:
    """Zero the `sparsity` fraction of smallest-magnitude weights: ranked over all layers (global) or per layer."""
    torch = require("torch", extra="torch")
    prune = require("torch.nn.utils.prune", extra="torch")
    layers = prunable_layers(module, skip)
    if not layers:
        raise InputError("no convolution or linear layer is left to prune", hint="drop some --ignore")
    if global_ranking:
        prune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=prune.L1Unstructured, amount=sparsity)
    else:
        for _, m in layers:
            prune.l1_unstructured(m, "weight", amount=sparsity)
    return [n for n, _ in layers]


def two_four(module: Any, skip: set[str]) -> tuple[list[str], list[str]]:
    """2:4: in every group of 4 consecutive weights along a layer's input (a row of its GEMM), the 2 smallest are
    zeroed. Layers whose row length is not a multiple of 4 are left dense (returned second)."""
    torch = require("torch", extra="torch")
    prune = require("torch.nn.utils.prune", extra="torch")
    done, skipped = [], []
    for name, m in prunable_layers(module, skip):
        w = m.weight.detach()
        rows = w.reshape(w.shape[0], -1)
        if rows.shape[1] % 4:
            skipped.append(name)
            continue
        groups = rows.abs().reshape(rows.shape[0], -1, 4)
        keep = torch.zeros_like(groups, dtype=torch.bool)
        keep.scatter_(2, groups.topk(2, dim=2).indices, True)
        prune.custom_from_mask(m, "weight", keep.reshape(w.shape))
        done.append(name)
    if not done:
        raise InputError("no layer has rows that split into groups of 4: 2:4 sparsity applies to none",
                         hint="use --method unstructured or structured")
    return done, skipped


def make_permanent(module: Any) -> None:
    """Fold every attached mask into its weight (plain parameters again)."""
    torch = require("torch", extra="torch")
    prune = require("torch.nn.utils.prune", extra="torch")
    for m in module.modules():
        if prune.is_pruned(m) and hasattr(m, "weight_mask"):
            prune.remove(m, "weight")


def zeros(module: Any) -> int:
    """Weights that are exactly zero in convolutions and linear layers."""
    return int(sum(int((m.weight == 0).sum()) for _, m in prunable_layers(module, set())))
