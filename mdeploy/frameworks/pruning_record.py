"""`--save-weights`: the pruned module's weights plus what rebuilds its shape, loadable with weights_only=True.

A pruned module no longer fits the code that builds it (its layers lost channels), and mdeploy never unpickles
modules. So the file is a plain dict of tensors: `state_dict` and `mdeploy_pruning`, a uint8 tensor holding JSON
with Torch-Pruning's pruning history (layer name, out/in channels, removed indices), the example input specs
the dependency graph is traced with, and the head counts of attention modules that lost heads (the library
changes their layers, not the count the module reshapes with). `FILE.py:FACTORY --weights OUT.pt` then builds
the factory's module, replays the history on it (frameworks/torch_models.py calls `replay`), sets the head counts,
and loads the state_dict strictly. It lives with loading because the loader reads it; pruning/ writes it through
`save`, importing it downward.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mdeploy.deps import require
from mdeploy.errors import ModelLoadError, first_line, shown

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


# What a record may hold. The inputs' dtypes are those `encode` writes (numpy names, as torch calls them too); a
# shape is bounded because replaying builds a tensor of it (2**26 elements: a 256 MiB float32 example at most).
DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
MAX_ELEMENTS = 1 << 26
MAX_RANK = 8
_NOT_OURS = "the pruning record (mdeploy_pruning) in the --weights file is not a pruning record this mdeploy writes"
_REWRITE = "write it again with `mdeploy prune ... --save-weights OUT.pt`"


def decode(blob: Any) -> dict[str, Any]:
    """The record inside a --save-weights file, every field checked before anything uses it: the file is the
    user's, and a record edited by hand (a dtype torch lacks, a shape of a billion elements) must be one error
    line, not a traceback from the replay."""
    try:
        record = json.loads(bytes(blob.cpu().numpy().tobytes()).decode())
    except Exception as exc:
        raise ModelLoadError(f"the pruning record in the weights file is unreadable: {first_line(exc)}",
                             hint=_REWRITE) from None
    problem = _problem(record)
    if problem:
        raise ModelLoadError(f"{_NOT_OURS}: {problem}", hint=_REWRITE)
    return record


def _problem(record: Any) -> str | None:
    """What is wrong with a decoded record (the first thing), or None."""
    if not isinstance(record, dict):
        return f"a JSON object was expected, got {shown(record)}"
    if record.get("version") != FORMAT_VERSION:
        return f"version {shown(record.get('version'))} (this mdeploy writes version {FORMAT_VERSION})"
    if record.get("library") != "torch-pruning":
        return f"library {shown(record.get('library'))} (this mdeploy writes 'torch-pruning')"
    steps = record.get("history")
    if not isinstance(steps, list):
        return f"history is {shown(steps)}, not a list"
    for i, step in enumerate(steps):
        if not (isinstance(step, list) and len(step) == 3 and isinstance(step[0], str) and isinstance(step[1], bool)
                and isinstance(step[2], list) and all(_count(v, 1 << 31) for v in step[2])):
            return f"history[{i}] is {shown(step)}, not [layer name, true/false, [channel indices >= 0]]"
    inputs = record.get("inputs", [])
    if not isinstance(inputs, list):
        return f"inputs is {shown(inputs)}, not a list"
    for i, spec in enumerate(inputs):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            return f"inputs[{i}] is {shown(spec)}, not {{name, shape, dtype}}"
        if spec.get("dtype") not in DTYPES:
            return f"inputs[{i}].dtype is {shown(spec.get('dtype'))}, not one of {', '.join(DTYPES)}"
        shape = spec.get("shape")
        if not (isinstance(shape, list) and len(shape) <= MAX_RANK and all(_count(d, MAX_ELEMENTS) for d in shape)):
            return f"inputs[{i}].shape is {shown(shape)}, not a list of at most {MAX_RANK} sizes >= 0"
        elements = 1
        for d in shape:
            elements *= d
        if elements > MAX_ELEMENTS:
            return f"inputs[{i}].shape {shown(shape)} has {elements:,} elements (at most {MAX_ELEMENTS:,})"
    heads = record.get("heads", {})
    if not isinstance(heads, dict):
        return f"heads is {shown(heads)}, not an object"
    for name, h in heads.items():
        if not (isinstance(h, dict) and isinstance(h.get("attr"), str) and h["attr"].isidentifier()
                and _count(h.get("heads"), 1 << 16) and h["heads"] > 0):
            return f"heads[{shown(name)}] is {shown(h)}, not {{attr: a name, heads: a count > 0}}"
    return None


def _count(value: Any, limit: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit


def replay(module: Any, blob: Any) -> None:
    """Remove from `module` (fresh from its factory) the channels the record says were removed."""
    torch = require("torch", extra="torch")
    tp = require("torch_pruning", extra="torch", purpose="rebuild a pruned model")
    record = decode(blob)
    examples = {}
    for spec in record.get("inputs", []):
        dtype = getattr(torch, spec["dtype"])  # one of DTYPES: decode checked
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
    by_name = dict(module.named_modules())
    for name, h in record.get("heads", {}).items():
        if name not in by_name or not isinstance(getattr(by_name[name], h["attr"], None), int):
            raise ModelLoadError(f"cannot replay the pruning record on this model: it has no attention '{name}' "
                                 f"with a head count '{h['attr']}'",
                                 hint="give the same FILE.py:FACTORY the weights were pruned from")
        set_heads(by_name[name], h["attr"], int(h["heads"]))


def set_heads(attention_module: Any, attr: str, heads: int) -> None:
    """Give an attention module its new head count (and `all_head_size`, Hugging Face's heads x head width)."""
    old = int(getattr(attention_module, attr))
    setattr(attention_module, attr, int(heads))
    size = getattr(attention_module, "all_head_size", None)
    if isinstance(size, int) and old:
        attention_module.all_head_size = size // old * int(heads)


def _plain(history: list) -> list:
    return [[str(name), bool(out), [int(i) for i in idxs]] for name, out, idxs in history]
