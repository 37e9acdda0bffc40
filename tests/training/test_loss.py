"""mdeploy.training.loss: KD on every sample, cross-entropy on the labelled ones weighted by their share of the batch."""

from __future__ import annotations

import pytest


def _batch():  # noqa: ANN202
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g) * 5, torch.randint(0, 10, (8,), generator=g)


def test_labels_for_part_of_a_batch():
    import torch
    import torch.nn.functional as F  # noqa: N812

    from mdeploy.training.loss import kd_loss

    student, teacher, labels = _batch()
    soft = kd_loss(student, teacher, None, 4.0, 0.9)  # no labels: KD alone
    full = kd_loss(student, teacher, labels, 4.0, 0.9)
    assert float(full) == pytest.approx(float(0.9 * soft + 0.1 * F.cross_entropy(student, labels)), rel=1e-6)

    some = labels.clone()
    some[3:] = -1  # 3 of 8 labelled: their cross-entropy, summed, over the 8 of the batch
    expected = 0.9 * soft + 0.1 * F.cross_entropy(student[:3], labels[:3], reduction="sum") / 8
    assert float(kd_loss(student, teacher, some, 4.0, 0.9)) == pytest.approx(float(expected), rel=1e-6)

    none = torch.full_like(labels, -1)  # a batch of unlabelled samples only: KD alone, scaled by alpha
    assert float(kd_loss(student, teacher, none, 4.0, 0.9)) == pytest.approx(float(0.9 * soft), rel=1e-6)
