"""Which integer inputs of a PyTorch model are indices (token ids, gather indices), and the range they may take.

Why it exists: a model's example inputs are drawn at random when the user gives no data, and a float drawn for a
token id (or an id past the embedding table) makes an export or a comparison fail in a way that does not say why.
So mdeploy reads the embedding tables for the ids' range, and watches one eager run (or reads a TorchScript graph)
for inputs used as indices, to name the input whose dtype the user must give.
"""

from __future__ import annotations

from typing import Any

from mdeploy.core import TensorSpec
from mdeploy.deps import require


def embedding_bound(module: Any) -> int | None:
    """The smallest nn.Embedding table in a module: integer inputs drawn below it are valid token ids."""
    sizes = []
    for sub in getattr(module, "modules", lambda: [])():
        kind = getattr(sub, "original_name", type(sub).__name__)
        if kind == "Embedding" and hasattr(sub, "num_embeddings"):
            sizes.append(int(sub.num_embeddings))
    return min(sizes) if sizes else None


def with_index_ranges(specs: list[TensorSpec], module: Any) -> list[TensorSpec]:
    """Give integer inputs the id range the module's embeddings accept (masks keep their own rule)."""
    bound = embedding_bound(module)
    if bound is None:
        return specs
    return [
        TensorSpec(s.name, s.shape, s.dtype, (0, bound)) if s.dtype.startswith(("int", "uint")) and s.value_range is None else s
        for s in specs
    ]


# Ops that take integer indices: which argument holds them (position counting a Tensor method's self as 0, and
# keyword). F.embedding(input, weight) takes the ids first; torch.embedding(weight, indices) second.
_INDEX_ARGS: dict[str, tuple[int, str | None]] = {
    "embedding": (0, "input"), "embedding_bag": (0, "input"), "one_hot": (0, "tensor"),
    "gather": (2, "index"), "index_select": (2, "index"), "take": (1, "index"), "take_along_dim": (1, "indices"),
    "scatter": (2, "index"), "scatter_add": (2, "index"), "scatter_reduce": (2, "index"),
    "index_add": (2, "index"), "index_copy": (2, "index"), "index_fill": (2, "index"),
    "__getitem__": (1, None), "__setitem__": (1, None),
}


class IndexWatch:
    """Watches one eager run for inputs used as indices: token ids into an embedding, gather/index_select
    indices, tensor subscripts. A float input (or a float tensor computed from it) reaching such an argument can
    only be an integer input given without its dtype; `found` maps its name to the op. That use gets zeros
    instead, so the run goes on and finds the next one (its outputs are then meaningless: run again).
    """

    def __init__(self, tensors: dict[str, Any]) -> None:
        from torch.overrides import TorchFunctionMode
        from torch.utils.weak import WeakIdKeyDictionary

        t = require("torch", extra="torch")  # loaded already: the watch runs a torch model
        origin = WeakIdKeyDictionary({v: name for name, v in tensors.items()})
        self.found: dict[str, str] = {}
        found = self.found

        def taint(value: Any) -> str | None:
            if isinstance(value, (tuple, list)):
                return next((n for n in map(taint, value) if n), None)
            return origin.get(value) if isinstance(value, t.Tensor) else None

        def integer(value: Any) -> Any:
            if isinstance(value, (tuple, list)):
                return type(value)(integer(v) for v in value)
            return t.zeros(value.shape, dtype=t.int64, device=value.device) if taint(value) else value

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
                kwargs = dict(kwargs or {})
                op = getattr(func, "__name__", "")
                where = (1, "indices") if func is t.embedding else _INDEX_ARGS.get(op)
                if where is not None:
                    pos, key = where
                    if key in kwargs and taint(kwargs[key]):
                        found.setdefault(taint(kwargs[key]), op)
                        kwargs[key] = integer(kwargs[key])
                    elif len(args) > pos and taint(args[pos]):
                        found.setdefault(taint(args[pos]), op)
                        args = (*args[:pos], integer(args[pos]), *args[pos + 1:])
                result = func(*args, **kwargs)
                if isinstance(result, t.Tensor) and result.is_floating_point():
                    source = taint(list(args) + list(kwargs.values()))
                    if source:
                        origin[result] = source
                return result

        self._mode = Mode()

    def __enter__(self) -> IndexWatch:
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._mode.__exit__(*exc)


# The same, read from a TorchScript graph (scripted code does not pass through Python's torch function modes):
# ops whose argument at this offset is an index, and ops an index passes through unchanged in meaning.
_SCRIPT_INDEX = {"aten::embedding": 1, "aten::embedding_bag": 1, "aten::_embedding_bag": 1, "aten::one_hot": 0,
                 "aten::gather": 2, "aten::index_select": 2, "aten::take": 1, "aten::take_along_dim": 1,
                 "aten::scatter": 2, "aten::scatter_add": 2, "aten::index_add": 2, "aten::index_copy": 2, "aten::index_fill": 2}
_SCRIPT_PASS = {"aten::view", "aten::reshape", "aten::flatten", "aten::unsqueeze", "aten::squeeze", "aten::contiguous",
                "aten::slice", "aten::select", "aten::transpose", "aten::permute", "aten::expand", "aten::clone",
                "aten::detach", "aten::add", "aten::sub", "aten::mul", "aten::remainder", "aten::clamp", "prim::ListConstruct"}


def script_index_inputs(module: Any, names: list[str], wanted: set[str]) -> dict[str, str]:
    """Which inputs in `wanted` a ScriptModule uses as indices, and the op (`names` are forward()'s arguments)."""
    try:
        inputs = list(module.inlined_graph.inputs())[1:]
    except Exception:
        return {}
    found: dict[str, str] = {}
    for name, value in zip(names, inputs):
        if name not in wanted:
            continue
        todo, seen = [value], set()
        while todo and name not in found:
            current = todo.pop()
            for use in current.uses():
                kind = use.user.kind()
                if _SCRIPT_INDEX.get(kind) == use.offset or (kind == "aten::index" and use.offset == 1):
                    found[name] = kind.split("::")[1]
                    break
                if kind in _SCRIPT_PASS:
                    todo.extend(o for o in use.user.outputs() if o.unique() not in seen)
                    seen.update(o.unique() for o in use.user.outputs())
    return found
