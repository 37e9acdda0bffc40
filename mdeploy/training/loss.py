"""The distillation losses, as torch functions of (student output, teacher output, labels).

Class scores: Hinton et al. (2015), "Distilling the Knowledge in a Neural Network". The student matches the
teacher's softened distribution, `KL(softmax(t/T) || softmax(s/T))` with `batchmean` reduction (the true KL
divergence per sample; torch's default `mean` divides by the number of classes too), scaled by `T^2` so that its
gradients keep the same size as the hard-label term's whatever T is. With labels, `(1 - alpha)` of the loss is
cross-entropy on them. A label of -1 means "no label": KD covers every sample of the batch, cross-entropy only the
labelled ones, summed and divided by the whole batch, so its weight in a batch follows how many of the batch are
labelled (a batch with none is KD alone; a fully labelled one is the usual mean). Outputs that are not class scores (regression, embeddings) have no distribution to soften:
the student matches the teacher's values with MSE.
"""

from __future__ import annotations

from typing import Any


def kd_loss(student: Any, teacher: Any, labels: Any | None, temperature: float, alpha: float,
            mix: tuple[Any, Any] | None = None) -> Any:
    """`alpha * T^2 * KL(softmax(t/T) || log_softmax(s/T))` + `(1 - alpha) * CE(s, labels)` (no labels: alpha is
    1); cross-entropy over the labelled samples (label >= 0) only, weighted by their share of the batch.

    `mix`: (partner index, weight) of a mixed batch (training/augment.py): sample i is `lam_i` of itself and
    `1 - lam_i` of sample `partner_i`, and its cross-entropy is `lam_i * CE(s_i, y_i) + (1 - lam_i) * CE(s_i,
    y_partner_i)`, each term only where that label exists."""
    import torch.nn.functional as F  # noqa: N812 - torch's own name

    t = temperature
    soft = F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1), reduction="batchmean",
                    log_target=True) * (t * t)
    if labels is None:
        return soft
    if mix is None:
        hard = F.cross_entropy(student, labels, ignore_index=-1, reduction="sum") / student.shape[0]
    else:
        perm, lam = mix
        own = F.cross_entropy(student, labels, ignore_index=-1, reduction="none")
        other = F.cross_entropy(student, labels[perm], ignore_index=-1, reduction="none")
        hard = (lam * own + (1 - lam) * other).sum() / student.shape[0]
    return alpha * soft + (1.0 - alpha) * hard


def regression_loss(student: Any, teacher: Any, labels: Any | None = None, mix: tuple[Any, Any] | None = None) -> Any:
    """MSE to the teacher's values (labels do not apply to an output that is not class scores)."""
    import torch.nn.functional as F  # noqa: N812

    return F.mse_loss(student, teacher)
