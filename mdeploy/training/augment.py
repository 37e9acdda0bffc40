"""Function matching (Beyer et al. 2022, "Knowledge distillation: A good teacher is patient and consistent"): the
student and the teacher see the same input, and that input is a mixup of two samples of the batch, with the teacher
run on it in the loop.

Why: a teacher's outputs on the few hundred inputs of a small pool are a few hundred points of the function the
student should copy. Mixed inputs (`lam * x_i + (1 - lam) * x_j`, a fresh `lam` and partner per sample and step) are
new points between them, and the teacher labels each one as it is made, so the student matches the teacher's function
on the whole region between the data rather than on the data alone. Reusing precomputed outputs instead (mixing the
soft labels) would teach the student a straight line between two teacher outputs, which the teacher does not compute.

Mixup applies to inputs that can be averaged: every input floating-point (an image, features, audio). An integer input
(token ids, an attention mask, indices) has no mean of two samples, so the batch stays as it is and the precomputed
outputs are used (`mixable` says why not; the caller reports it). Labels mix with the same weight: a mixed sample
counts `lam` of its own label's cross-entropy and `1 - lam` of its partner's, each only where that sample is labelled
(mixup's usual target, Zhang et al. 2018; it keeps the labelled share of the loss what it is without mixup).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Query = Callable[[dict[str, np.ndarray]], np.ndarray]  # the teacher's output on a batch of inputs keyed by input name


def by_default(labels: np.ndarray | None) -> tuple[bool, str | None]:
    """distill's default: mixup when some training sample has no label, none when every sample has one (and why).

    Function matching earns its cost where the teacher's outputs are most of what the student learns from: chosen by
    3-fold cross-validation inside the unlabelled digits pool (docs/distill.md). Where every sample is labelled (a
    teacher's own training set), the labels carry the task, and mixup measured no gain at 7x the training time (the
    larger-data case of docs/distill.md: 0.1-0.2 points under, within the spread of the seeds)."""
    if labels is not None and len(labels) and bool((np.asarray(labels) >= 0).all()):
        return False, "no mixup: every --data sample is labelled (give --mixup to train on mixups anyway)"
    return True, None


def mixable(inputs: dict[str, np.ndarray]) -> str | None:
    """None when every input is floating-point (mixup applies), else why it does not."""
    ints = [name for name, a in inputs.items() if np.dtype(a.dtype).kind not in "fc"]
    if ints:
        return (f"input{'s' if len(ints) > 1 else ''} {', '.join(repr(n) for n in ints)} {'are' if len(ints) > 1 else 'is'} "
                "not floating-point (ids, masks: no mean of two samples)")
    return None


class Mixup:
    """Mixes a batch and asks the teacher for its output on the mixed inputs.

    `alpha`: the mixing weights are drawn from Beta(alpha, alpha), one per sample (1: uniform on [0, 1]). `names`: the
    inputs' names, in the order of the batch's tensors (the teacher's input names). Seeded: the same seed draws the
    same weights and partners."""

    def __init__(self, alpha: float, query: Query, names: list[str], seed: int) -> None:
        from mdeploy.frameworks.torch_models import torch

        self.t = torch()
        self.alpha = alpha
        self.query = query
        self.names = names
        self.rng = np.random.default_rng(seed)

    def __call__(self, inputs: list[Any]) -> tuple[list[Any], Any, tuple[Any, Any]]:
        """(mixed inputs, the teacher's output on them, (partner index, weight)) for a batch of tensors."""
        t = self.t
        n = int(inputs[0].shape[0])
        device = inputs[0].device
        perm = t.from_numpy(self.rng.permutation(n)).to(device)
        lam = t.from_numpy(self.rng.beta(self.alpha, self.alpha, size=n).astype(np.float32)).to(device)
        mixed = []
        for x in inputs:
            w = lam.to(x.dtype).reshape(n, *([1] * (x.dim() - 1)))
            mixed.append(w * x + (1 - w) * x[perm])
        feed = {name: x.detach().cpu().numpy() for name, x in zip(self.names, mixed)}
        targets = t.from_numpy(np.asarray(self.query(feed), dtype=np.float32)).to(device)
        return mixed, targets, (perm, lam)
