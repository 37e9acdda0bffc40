"""Structured pruning with Torch-Pruning's DepGraph: whole channels, neurons and heads go, with everything that
depends on them (BatchNorm, residual adds, concatenations), so the pruned module is a smaller dense model.

Two traps of the library are handled here: the dependency graph is traced through autograd, so it is built in
eval mode with gradients on (never under no_grad); and its failures are raw index errors from deep inside, so a
failure names the layer it was pruning (found on the failing frames) and suggests `--ignore` for it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mdeploy.deps import require
from mdeploy.errors import ConversionError, InputError, MdeployError, first_line
from mdeploy.pruning.measure import first_sample, macs_and_params

MACS_STEPS = 40  # --target-macs: channels go in steps of 1/40 of the reachable ratio until MACs reach the target
MAX_RATIO = 0.95


@dataclass
class Settings:
    sparsity: float | None = None  # fraction of channels removed in every prunable group
    target_macs: float | None = None  # prune until MACs <= this fraction of the original
    importance: str = "magnitude"  # magnitude | taylor
    global_ranking: bool = False
    ignore: list[str] = field(default_factory=list)
    round_to: int | None = None


@dataclass
class Outcome:
    history: list
    macs_before: int
    macs_after: int
    steps: int
    ignored: list[str]


def resolve_ignored(module: Any, names: list[str]) -> list[Any]:
    """The modules `--ignore` names (a module's qualified name, as in `model.named_modules()`)."""
    by_name = dict(module.named_modules())
    found = []
    for name in names:
        if name not in by_name:
            near = difflib.get_close_matches(name, [n for n in by_name if n], n=3)
            raise InputError(f"--ignore {name}: the model has no module of that name",
                             hint=("did you mean " + ", ".join(near) + "?") if near else "names are as in model.named_modules()")
        found.append(by_name[name])
    return found


def output_layers(module: Any, examples: dict[str, Any]) -> list[str]:
    """The leaf modules whose output is returned by the model as it is (a classifier head, a final norm): pruning
    their outputs would change the model's outputs, so they are always ignored."""
    torch = require("torch", extra="torch")
    from mdeploy.frameworks.torch_models import flatten_outputs

    produced: dict[int, str] = {}
    alive: list[Any] = []  # every output stays referenced, so no id is reused by a later tensor during the run

    def record(name: str) -> Callable[..., None]:
        def hook(mod: Any, args: Any, out: Any) -> None:  # returns None: a hook's return value would replace the output
            alive.append(out)
            produced[id(out)] = name  # the last module to return a tensor is the one that produced it last
        return hook

    hooks = [m.register_forward_hook(record(name)) for name, m in module.named_modules() if name and not list(m.children())]
    try:
        with torch.no_grad():
            outputs = module(**examples)
    finally:
        for h in hooks:
            h.remove()
    return sorted({produced[id(t)] for _, t in flatten_outputs(outputs) if id(t) in produced})


def output_shapes(module: Any, examples: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    torch = require("torch", extra="torch")
    from mdeploy.frameworks.torch_models import flatten_outputs

    with torch.no_grad():
        return {name: tuple(t.shape) for name, t in flatten_outputs(module(**examples))}


def prune(module: Any, examples: dict[str, Any], settings: Settings, loss: Callable[[Any], Any] | None = None) -> Outcome:
    """Prune `module` in place. `loss(module)` (a scalar tensor) feeds Taylor importance with gradients."""
    torch = require("torch", extra="torch")
    tp = require("torch_pruning", extra="torch", purpose="prune channels (torch-pruning)")
    module.eval()
    sample = first_sample(examples)
    heads = output_layers(module, examples)
    by_name = dict(module.named_modules())
    ignored_names = sorted(set(heads) | set(settings.ignore))
    ignored = resolve_ignored(module, settings.ignore) + [by_name[n] for n in heads]
    shapes = output_shapes(module, examples)
    macs_before, _ = macs_and_params(module, sample)
    if settings.importance == "taylor":
        if loss is None:
            raise InputError("--importance taylor needs data to take gradients on", hint="give --data TRAIN.npz, or use magnitude")
        importance = tp.importance.GroupTaylorImportance()
    else:
        importance = tp.importance.GroupMagnitudeImportance(p=2)
    iterative = settings.target_macs is not None
    names = {id(m): n for n, m in module.named_modules()}
    try:
        with torch.enable_grad():  # DepGraph traces autograd: no_grad here would find no dependencies at all
            pruner = tp.pruner.MetaPruner(
                module, examples, importance=importance, global_pruning=settings.global_ranking,
                pruning_ratio=MAX_RATIO if iterative else settings.sparsity,
                iterative_steps=MACS_STEPS if iterative else 1, ignored_layers=ignored, round_to=settings.round_to,
            )
            steps = 0
            for _ in range(MACS_STEPS if iterative else 1):
                if loss is not None and settings.importance == "taylor":
                    module.zero_grad()
                    loss(module).backward()
                pruner.step()
                steps += 1
                if iterative and macs_and_params(module, sample)[0] <= settings.target_macs * macs_before:
                    break
    except MdeployError:
        raise
    except Exception as exc:
        raise _library_failure(exc, names, grouped_convolutions(module)) from None
    finally:
        module.zero_grad(set_to_none=True)
    module.eval()
    macs_after, _ = macs_and_params(module, sample)
    new_shapes = output_shapes(module, examples)
    if new_shapes != shapes:
        diff = [f"{k} {list(shapes[k])} -> {list(new_shapes.get(k, ()))}" for k in shapes if new_shapes.get(k) != shapes[k]]
        suspects = grouped_convolutions(module)
        where = f" around the grouped convolution {', '.join(repr(n) for n in suspects)} (a known case)" if suspects else ""
        raise ConversionError(f"torch-pruning cannot prune this model{where}: it would change the outputs ({'; '.join(diff)})",
                              hint=f"leave it out with --ignore {suspects[0]}" if suspects else "--ignore the layers that produce these outputs")
    if iterative and macs_after > settings.target_macs * macs_before:
        raise ConversionError(
            f"--target-macs {settings.target_macs:g} cannot be reached: pruning stops at {macs_after / macs_before:.3f}x "
            "the original MACs", hint="ask for a higher --target-macs, or --ignore fewer layers")
    history = pruner.pruning_history()
    return Outcome(history, macs_before, macs_after, steps, ignored_names)



def grouped_convolutions(module: Any) -> list[str]:
    """Convolutions with 1 < groups < out_channels (not depthwise): where channel index mapping goes wrong."""
    torch = require("torch", extra="torch")
    return [n for n, m in module.named_modules()
            if isinstance(m, torch.nn.modules.conv._ConvNd) and 1 < m.groups < m.out_channels]


def _library_failure(exc: BaseException, names: dict[int, str], grouped: list[str]) -> ConversionError:
    """A failure inside Torch-Pruning as one line naming the layer it was pruning, when the frames show it."""
    layer = None
    tb = exc.__traceback__
    while tb is not None:  # the innermost frame holding one of our modules names the layer
        for value in tb.tb_frame.f_locals.values():
            name = names.get(id(value))
            if name:
                layer = name
        tb = tb.tb_next
    if layer is None and grouped:
        layer = grouped[0]
    where = f" at layer '{layer}'" if layer else ""
    hint = f"leave it out with --ignore {layer}" if layer else "leave the layer out with --ignore MODULE"
    return ConversionError(f"torch-pruning cannot prune this model{where}: {type(exc).__name__}: {first_line(exc)}",
                           hint=hint + " (a concatenation feeding a grouped convolution is a known case)")
