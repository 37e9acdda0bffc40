"""The held-out figures that choose the best epoch: loss, top-1 agreement with the teacher, accuracy on the labelled
samples (class scores), or MSE (any other output).

Which one decides: accuracy when every held-out sample has a label; agreement with the teacher when some or none
have one. With a few labels (15 held-out labelled samples of 100, in a pool of 629) accuracy moves by 6.7 points per
sample and would pick the epoch by chance; agreement is measured on every held-out sample, and the accuracy on the
labelled ones is still reported beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mdeploy.training.loop import Dataset, TrainConfig, _Tensors

EVAL_BATCH = 512


def metric_name(config: TrainConfig, held_out: Dataset) -> str:
    """The metric that picks the best epoch (see the module's docstring)."""
    if config.kind == "regression":
        return "mse"
    return "accuracy" if held_out.labels is not None and bool((held_out.labels >= 0).all()) else "agreement"


def score(metrics: dict[str, float], metric: str) -> tuple[float, float]:
    """Higher is better: the metric (MSE negated), ties broken by the lower held-out loss."""
    value = -metrics[metric] if metric == "mse" else metrics[metric]
    return value, -metrics["loss"]


def evaluate(student: Any, data: _Tensors, config: TrainConfig, loss_fn: Callable[[Any, Any, Any], Any]) -> dict[str, float]:
    """The student's held-out loss and metrics: `accuracy` only over the samples that have a label (-1: none),
    and only when some have one."""
    from mdeploy.frameworks.torch_models import torch

    t = torch()
    student.eval()
    loss = agree = right = sq = 0.0
    labelled = 0
    n = data.count
    with t.no_grad():
        for i in range(0, n, EVAL_BATCH):
            idx = t.arange(i, min(n, i + EVAL_BATCH))
            inputs, targets, labels = data.batch(idx)
            out = pick(student(*inputs), config.output)
            loss += float(loss_fn(out, targets, labels)) * len(idx)
            if config.kind == "regression":
                sq += float(((out - targets) ** 2).mean()) * len(idx)
                continue
            pred = out.argmax(-1)
            agree += float((pred == targets.argmax(-1)).sum())
            if labels is not None:
                known = labels >= 0
                right += float((pred[known] == labels[known]).sum())
                labelled += int(known.sum())
    metrics = {"loss": loss / n}
    if config.kind == "regression":
        metrics["mse"] = sq / n
    else:
        metrics["agreement"] = agree / n
        if labelled:
            metrics["accuracy"] = right / labelled
    return metrics


def pick(output: Any, which: str | int | None) -> Any:
    """The trained output among a student's outputs (a tensor, or a tuple/dict of them)."""
    import torch  # already loaded (through mdeploy.frameworks.torch_models.torch) by the caller

    if isinstance(output, torch.Tensor) and which in (None, 0, "output"):
        return output  # per step: nothing more than this check (torch_models.torch() re-quiets loggers at each call)
    from mdeploy.frameworks.torch_models import flatten_outputs

    named = flatten_outputs(output)
    if isinstance(which, int):
        return named[which][1]
    if which is None:
        return named[0][1]
    return dict(named)[which]
