"""Which pruning `--method` does what: structured (Torch-Pruning removes channels) or masks (unstructured, 2:4), the
loss Taylor importance takes gradients of, and why a `.pt2` source cannot be pruned.

Why it is here and not in the verb: this is torch work on a module in-process; the verb (mdeploy/verbs/prune.py)
holds the options and the orchestration (export, proof, report) and calls `prune` once.
"""

from __future__ import annotations

from typing import Any

from mdeploy.errors import ConversionError, InputError, MdeployError, first_line
from mdeploy.lazy import numpy as np
from mdeploy.pruning.structured import Settings

TAYLOR_SAMPLES = 128  # Taylor importance takes gradients on this many samples of --data


def prune(module: Any, examples: dict[str, Any], method: str, settings: Settings,
          train: tuple[dict[str, np.ndarray], np.ndarray | None] | None, notes: list[str]) -> tuple[list | None, dict[str, Any]]:
    """Prune `module` in place by `method`; the pruning history (structured only: what --save-weights replays) and
    the report's details. Notes the report must carry are appended to `notes`."""
    from mdeploy.pruning import structured

    if method == "structured":
        outcome = structured.prune(module, examples, settings, taylor_loss(train) if train else None)
        if settings.importance == "taylor":
            notes.append(f"taylor importance from gradients on the first {TAYLOR_SAMPLES} samples of --data")
        details = {"sparsity": settings.sparsity, "target_macs": settings.target_macs, "importance": settings.importance,
                   "global": settings.global_ranking, "round_to": settings.round_to, "ignored": outcome.ignored,
                   "steps": outcome.steps, "library": "torch-pruning"}
        if outcome.heads:
            details["heads"] = outcome.heads
        return outcome.history, details
    from mdeploy.pruning import masks

    if settings.round_to is not None or settings.importance != "magnitude":
        raise InputError(f"--round-to and --importance apply to structured pruning, not {method}")
    skip = set(structured.output_layers(module, examples)) | set(settings.ignore)
    structured.resolve_ignored(module, list(settings.ignore))
    zeros_before = masks.zeros(module)
    if method == "unstructured":
        layers, dense = masks.unstructured(module, settings.sparsity, skip, settings.global_ranking), []
    else:
        layers, dense = masks.two_four(module, skip)
    if masks.zeros(module) <= zeros_before:
        raise ConversionError("pruning changed nothing: no weight was zeroed", hint="raise --sparsity")
    notes.append(
        f"{method} pruning zeroes weights but keeps every channel: a dense runtime (onnxruntime on a CPU) computes "
        "them anyway, so the model is no faster (the latency below shows it); only sparse kernels gain"
    )
    return None, {"sparsity": settings.sparsity, "global": settings.global_ranking, "layers": layers, "left_dense": dense,
                  "ignored": sorted(skip), "zeroed_weights": masks.zeros(module) - zeros_before}


def taylor_loss(train: tuple[dict[str, np.ndarray], np.ndarray | None]) -> Any:
    """A loss on the first samples of --data for Taylor importance: cross-entropy on labels, else on the model's own
    predictions (its first class-score output), else the outputs' squared norm."""
    from mdeploy.frameworks.torch_models import flatten_outputs, torch

    t = torch()
    inputs, labels = train
    batch = {k: t.from_numpy(np.ascontiguousarray(v[:TAYLOR_SAMPLES])) for k, v in inputs.items()}
    y = t.from_numpy(labels[:TAYLOR_SAMPLES]) if labels is not None else None

    def loss(module: Any) -> Any:
        outputs = [v for _, v in flatten_outputs(module(**batch))]
        scores = next((v for v in outputs if v.ndim == 2 and v.shape[1] > 1), None)
        if scores is None:
            return sum((v.float() ** 2).mean() for v in outputs)
        target = y if y is not None else scores.detach().argmax(1)
        return t.nn.functional.cross_entropy(scores, target)

    return loss


def exported_refusal(module: Any, examples: dict[str, Any], sparsity: float, name: str) -> InputError:
    """A .pt2 source: try Torch-Pruning on the module torch.export.load gives back, and say why it cannot serve."""
    from mdeploy.pruning import structured

    try:
        outcome = structured.prune(module, examples, Settings(sparsity=sparsity))
        why = "torch-pruning finds no channel to remove in it" if not outcome.history else \
            "the pruned graph module cannot be rebuilt from a factory and weights"
    except MdeployError as exc:
        why = exc.message
    except Exception as exc:  # the library's own refusal, e.g. "Calling eval() is not supported yet"
        why = f"pruning it fails ({type(exc).__name__}: {first_line(exc)})"
    return InputError(f"{name}: torch.export.load(...).module() is a flat graph without the nn.Module layers "
                      f"prune removes channels from: {why}",
                      hint="prune reads the code that builds the model: FILE.py:FACTORY --weights state.pt, the state "
                           "saved with torch.save(model.state_dict(), 'state.pt') from the module you exported")
