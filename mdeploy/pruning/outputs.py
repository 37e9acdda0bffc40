"""Which layers set the width of each model output: pruning their output channels would change the model's outputs,
so they are never pruned.

A layer rarely returns a model output as it is. BERT's `pooler_output` is tanh(pooler.dense(x)); a ResNet's features
are the residual add of its last block, through a ReLU, pooling and flatten. Looking only at what a module returned
(the first way this was done) found no layer for such outputs, and pruning then changed them (issue 16). So each
output is traced back through the autograd graph of one forward pass, through every operation that no parametrised
layer performed (activations, adds, pooling, reshapes, indexing: functions or parameter-free modules), and stops at
the nearest outputs of layers with parameters (leaf modules: a container such as ViT's embeddings, holding a
class token beside its patch convolution, is walked through to the convolution). A residual add yields every branch's layer (both set the width, and
Torch-Pruning couples them); a concatenation yields every input's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mdeploy.deps import require
from mdeploy.errors import InputError


def producers(module: Any, examples: dict[str, Any], through: Callable[[Any], bool] = lambda layer: False) -> dict[str, list[str]]:
    """{output name: the layers (names as in named_modules()) whose outputs it is made of, element by element};
    an output no layer reaches (an input passed through, a raw parameter) maps to []. A layer for which `through`
    is true is listed and walked through as well: Torch-Pruning prunes the parameter of a layer it does not know (an
    RMSNorm written as `weight * x / rms`, as in T5 and Llama) with the channels that feed it, ignored or not, so
    the layers before it must be kept too."""
    torch = require("torch", extra="torch")
    from mdeploy.frameworks.torch_models import flatten_outputs

    by_node: dict[Any, str] = {}  # autograd node of a layer's output -> the layer
    layer_of = dict(module.named_modules())
    by_tensor: dict[int, str] = {}  # outputs without a graph (no gradient): by identity
    alive: list[Any] = []  # every output stays referenced, so no id is reused during the run

    def record(name: str) -> Callable[..., None]:
        def hook(mod: Any, args: Any, out: Any) -> None:  # returns None: a hook's return value would replace the output
            try:
                tensors = flatten_outputs(out)
            except InputError:  # a layer that returns something else besides tensors: nothing to record
                return
            for _, tensor in tensors:
                alive.append(tensor)
                by_tensor[id(tensor)] = name
                if tensor.grad_fn is not None:
                    by_node[tensor.grad_fn] = name  # the last layer to produce it wins (a re-used layer)
        return hook

    layers = [(name, m) for name, m in module.named_modules()  # leaves with parameters: a container's own parameter
              if name and not any(True for _ in m.children()) and any(True for _ in m.parameters(recurse=False))]
    hooks = [m.register_forward_hook(record(name)) for name, m in layers]
    try:
        with torch.enable_grad():  # the graph is what is traced: it needs gradients on (eval mode still)
            outputs = module(**examples)
            found = {}
            for name, tensor in flatten_outputs(outputs):
                if tensor.grad_fn is None:
                    found[name] = [by_tensor[id(tensor)]] if id(tensor) in by_tensor else []
                else:
                    found[name] = _trace(tensor.grad_fn, by_node, lambda n: through(layer_of[n]))
    finally:
        for h in hooks:
            h.remove()
    return found


def _trace(start: Any, by_node: dict[Any, str], through: Callable[[str], bool]) -> list[str]:
    """The layers first met walking back from `start` through the autograd graph (not past a layer's output, unless
    `through` says so for that layer)."""
    found: set[str] = set()
    seen: set[int] = set()
    stack = [start]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node in by_node:
            found.add(by_node[node])
            if not through(by_node[node]):
                continue
        stack.extend(child for child, _ in getattr(node, "next_functions", ()))
    return sorted(found)


__all__ = ["producers"]
