"""Structured pruning with Torch-Pruning's DepGraph: whole channels, neurons and heads go, with everything that
depends on them (BatchNorm, residual adds, concatenations), so the pruned module is a smaller dense model.

Attention heads: Torch-Pruning removes whole heads of attention written with separate q/k/v projections (BERT,
ViT, most Hugging Face models) when told which layers are q/k/v and how many heads each has. `attention_modules`
finds them (a module holding its head count, e.g. `num_heads`, and q/k/v nn.Linear children); heads go whole
(`prune_head_dims=False`: the head width the module reshapes with stays), and the module's head count is updated
afterwards, as the library leaves that to the caller. The fused nn.MultiheadAttention (in_proj) is not one of them.

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
from mdeploy.frameworks.pruning_record import set_heads
from mdeploy.pruning.measure import first_sample, macs_and_params
from mdeploy.pruning.outputs import producers

MACS_STEPS = 40  # --target-macs: channels go in steps of 1/40 of the reachable ratio until MACs reach the target
MAX_RATIO = 0.95
HEAD_COUNT_ATTRS = ("num_heads", "num_attention_heads", "n_heads", "n_head")
QKV_NAMES = (("q_proj", "k_proj", "v_proj"), ("query", "key", "value"), ("q", "k", "v"), ("q_lin", "k_lin", "v_lin"),
             ("wq", "wk", "wv"), ("to_q", "to_k", "to_v"))


@dataclass
class Settings:
    sparsity: float | None = None  # fraction of channels removed in every prunable group
    target_macs: float | None = None  # prune until MACs <= this fraction of the original
    importance: str = "magnitude"  # magnitude | taylor
    global_ranking: bool = False
    ignore: list[str] = field(default_factory=list)
    round_to: int | None = None
    head_sparsity: float | None = None  # fraction of attention heads removed (None: as --sparsity; 0 keeps them)


@dataclass
class Outcome:
    history: list
    macs_before: int
    macs_after: int
    steps: int
    ignored: list[str]
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)  # attention module -> attr, before, after


@dataclass
class Attention:
    """An attention module whose heads can go whole: its head count attribute and its q/k/v projections."""

    name: str
    module: Any
    attr: str
    qkv: list[Any]

    @property
    def heads(self) -> int:
        return int(getattr(self.module, self.attr))


def attention_modules(module: Any) -> list[Attention]:
    """Attention written with separate q/k/v nn.Linear children and an integer head count attribute."""
    torch = require("torch", extra="torch")
    found = []
    for name, m in module.named_modules():
        attr = next((a for a in HEAD_COUNT_ATTRS if isinstance(getattr(m, a, None), int)), None)
        if attr is None:
            continue
        children = dict(m.named_children())
        for names in QKV_NAMES:
            layers = [children.get(n) for n in names]
            if all(isinstance(layer, torch.nn.Linear) for layer in layers):
                if all(layer.out_features % getattr(m, attr) == 0 for layer in layers):
                    found.append(Attention(name, m, attr, layers))
                break
    return found


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
    """The layers that set the width of a model output (a classifier head, BERT's pooler.dense under its tanh, the
    last convolutions and BatchNorms before a ResNet's residual add and pooling): pruning their outputs would change
    the model's outputs, so they are always ignored (outputs.py traces them)."""
    from mdeploy.pruning.outputs import producers

    return sorted({layer for layers in producers(module, examples).values() for layer in layers})


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
    known = tuple(tp.ops.type2class(t) for t in tp.DependencyGraph().REGISTERED_PRUNERS)
    traced = producers(module, examples, through=lambda layer: not isinstance(layer, known))
    heads = sorted({layer for layers in traced.values() for layer in layers})
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
    attentions = [a for a in attention_modules(module) if not any(_within(a.name, n) for n in ignored_names)]
    head_ratio = _head_ratio(settings, attentions)
    heads_before = {a.name: a.heads for a in attentions}
    head_options: dict[str, Any] = {}
    if attentions:
        head_options = {"num_heads": {layer: a.heads for a in attentions for layer in a.qkv}, "prune_num_heads": True,
                        "prune_head_dims": False, "head_pruning_ratio": head_ratio}
        if not iterative and not settings.sparsity and head_ratio > 0:
            # heads only (--sparsity 0): the library skips a group whose channel ratio removes no channel, heads and
            # all, so the q/k/v groups get a ratio of their own; their channels within a head stay (prune_head_dims)
            head_options["pruning_ratio_dict"] = {tuple(a.qkv): head_ratio for a in attentions}
    try:
        with torch.enable_grad():  # DepGraph traces autograd: no_grad here would find no dependencies at all
            pruner = tp.pruner.MetaPruner(
                module, examples, importance=importance, global_pruning=settings.global_ranking,
                pruning_ratio=MAX_RATIO if iterative else settings.sparsity,
                iterative_steps=MACS_STEPS if iterative else 1, ignored_layers=ignored, round_to=settings.round_to,
                **head_options,
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
    head_counts = {}
    for a in attentions:
        after = int(pruner.num_heads[a.qkv[0]])
        set_heads(a.module, a.attr, after)
        head_counts[a.name] = {"attr": a.attr, "before": heads_before[a.name], "after": after}
    module.eval()
    macs_after, _ = macs_and_params(module, sample)
    new_shapes = output_shapes(module, examples)
    if new_shapes != shapes:
        diff = [f"{k} {list(shapes[k])} -> {list(new_shapes.get(k, ()))}" for k in shapes if new_shapes.get(k) != shapes[k]]
        raise _changed_outputs(diff, [k for k in shapes if new_shapes.get(k) != shapes[k]], traced, grouped_convolutions(module))
    if iterative and macs_after > settings.target_macs * macs_before:
        raise ConversionError(
            f"--target-macs {settings.target_macs:g} cannot be reached: pruning stops at {macs_after / macs_before:.3f}x "
            "the original MACs", hint="ask for a higher --target-macs, or --ignore fewer layers")
    history = pruner.pruning_history()
    return Outcome(history, macs_before, macs_after, steps, ignored_names, head_counts)


def _changed_outputs(diff: list[str], changed: list[str], traced: dict[str, list[str]], grouped: list[str]) -> ConversionError:
    """Pruning changed an output although the layers traced to it were kept: name what to --ignore."""
    where = f" around the grouped convolution {', '.join(repr(n) for n in grouped)} (a known case)" if grouped else ""
    message = f"torch-pruning cannot prune this model{where}: it would change the outputs ({'; '.join(diff)})"
    if grouped:
        return ConversionError(message, hint=f"leave it out with --ignore {grouped[0]}")
    layers = sorted({layer for name in changed for layer in traced.get(name, [])})
    if layers:
        return ConversionError(message, hint=f"the layers that set their width ({', '.join(layers)}) were kept; --ignore the "
                               "layers that feed them, as in model.named_modules()")
    return ConversionError(message, hint=f"no layer with parameters produces {', '.join(changed)} (computed by functions "
                           "only): --ignore the layers that set its width, as in model.named_modules()")


def _within(name: str, ignored: str) -> bool:
    return name == ignored or name.startswith(ignored + ".") or ignored.startswith(name + ".")


def _head_ratio(settings: Settings, attentions: list[Attention]) -> float:
    """The fraction of heads to remove in every attention module, leaving at least one head in each. Torch-Pruning
    removes ceil(ratio x heads) per module; --target-macs keeps heads whole (its iterative steps would compound)."""
    if not attentions:
        if settings.head_sparsity:
            raise InputError("--head-sparsity: the model has no attention with separate q/k/v projections to remove heads from",
                             hint="heads go whole in modules with a head count (num_heads) and q/k/v nn.Linear layers")
        return 0.0
    if settings.target_macs is not None:
        return 0.0
    ratio = settings.head_sparsity if settings.head_sparsity is not None else (settings.sparsity or 0.0)
    fewest = min(a.heads for a in attentions)
    return min(ratio, (fewest - 1) / fewest - 1e-9) if fewest > 1 else 0.0



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
