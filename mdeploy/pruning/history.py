"""`--save-weights`: the pruned module's weights plus what rebuilds its shape, loadable with weights_only=True.

A pruned module no longer fits the code that builds it (its layers lost channels), and mdeploy never unpickles
modules. So the file is a plain dict of tensors: `state_dict` and `mdeploy_pruning`, a uint8 tensor holding JSON
with Torch-Pruning's pruning history (layer name, out/in channels, removed indices), the example input specs
the dependency graph is traced with, and the head counts of attention modules that lost heads (the library
changes their layers, not the count the module reshapes with). `FILE.py:FACTORY --weights OUT.pt` then builds
the factory's module, replays the history on it (frameworks/torch_models.py calls `replay`), sets the head counts,
and loads the state_dict strictly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mdeploy.deps import require
from mdeploy.errors import ModelLoadError, first_line

KEY = "mdeploy_pruning"
FORMAT_VERSION = 1


def encode(history: list, input_specs: list[dict[str, Any]], heads: dict[str, dict[str, Any]] | None = None) -> Any:
    """The pruning record as a uint8 tensor (JSON inside): what torch.load(weights_only=True) accepts.
    `heads`: attention module name -> {"attr": its head count attribute, "after": the count left}."""
    torch = require("torch", extra="torch")
    kept = {name: {"attr": str(h["attr"]), "heads": int(h["after"])} for name, h in (heads or {}).items()
            if h["after"] != h["before"]}
    blob = json.dumps({"version": FORMAT_VERSION, "library": "torch-pruning", "history": _plain(history),
                       "inputs": input_specs, "heads": kept}).encode()
    return torch.frombuffer(bytearray(blob), dtype=torch.uint8).clone()


def save(path: Path, module: Any, history: list | None, input_specs: list[dict[str, Any]],
         heads: dict[str, dict[str, Any]] | None = None) -> None:
    """Write the module's state_dict (and the pruning record, when channels were removed) to `path`."""
    torch = require("torch", extra="torch")
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    payload: dict[str, Any] = {"state_dict": state}
    if history:
        payload[KEY] = encode(history, input_specs, heads)
    torch.save(payload, str(path))


def decode(blob: Any) -> dict[str, Any]:
    try:
        record = json.loads(bytes(blob.cpu().numpy().tobytes()).decode())
    except Exception as exc:
        raise ModelLoadError(f"the pruning record in the weights file is unreadable: {first_line(exc)}") from None
    if not isinstance(record, dict) or record.get("version") != FORMAT_VERSION or "history" not in record:
        raise ModelLoadError("the pruning record in the weights file is not one this mdeploy writes",
                             hint="write it again with `mdeploy prune ... --save-weights OUT.pt`")
    return record


def replay(module: Any, blob: Any) -> None:
    """Remove from `module` (fresh from its factory) the channels the record says were removed."""
    torch = require("torch", extra="torch")
    tp = require("torch_pruning", extra="torch", purpose="rebuild a pruned model")
    record = decode(blob)
    examples = {}
    for spec in record.get("inputs", []):
        dtype = getattr(torch, spec["dtype"])
        shape = tuple(int(d) for d in spec["shape"])
        examples[spec["name"]] = torch.zeros(shape, dtype=dtype) if not dtype.is_floating_point else torch.randn(shape)
    module.eval()
    try:
        with torch.enable_grad():  # the dependency graph is traced from autograd: never under no_grad
            graph = tp.DependencyGraph().build_dependency(module, example_inputs=examples)
            graph.load_pruning_history([list(step) for step in record["history"]])
    except Exception as exc:
        raise ModelLoadError(f"cannot replay the pruning record on this model: {first_line(exc)}",
                             hint="give the same FILE.py:FACTORY the weights were pruned from") from None
    from mdeploy.pruning.structured import set_heads

    by_name = dict(module.named_modules())
    for name, h in record.get("heads", {}).items():
        if name not in by_name or not isinstance(getattr(by_name[name], h["attr"], None), int):
            raise ModelLoadError(f"cannot replay the pruning record on this model: it has no attention '{name}' "
                                 f"with a head count '{h['attr']}'",
                                 hint="give the same FILE.py:FACTORY the weights were pruned from")
        set_heads(by_name[name], h["attr"], int(h["heads"]))


def _plain(history: list) -> list:
    return [[str(name), bool(out), [int(i) for i in idxs]] for name, out, idxs in history]
