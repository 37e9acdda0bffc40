"""mdeploy.training.augment: function matching on the digits MLP with the digits CNN as teacher (no CLI): each batch is
mixed with a partner, the teacher runs on the mixed inputs in the loop, integer inputs are left as they are."""

from __future__ import annotations

import numpy as np
import pytest

from tests.training.conftest import student


class Recording:
    """The teacher's output on a batch (training/teacher.py `query`), keeping every batch it was given."""

    def __init__(self, teacher) -> None:  # noqa: ANN001
        from mdeploy.training.teacher import query

        self.query = query(teacher, "output")
        self.fed: list[dict[str, np.ndarray]] = []

    def __call__(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        self.fed.append({k: v.copy() for k, v in feed.items()})
        return self.query(feed)


def test_a_batch_is_mixed_with_partners_and_the_teacher_runs_on_the_mixture(digits_pool, digits_teacher):
    import torch

    from mdeploy.training.augment import Mixup

    x = torch.from_numpy(digits_pool.inputs["image"][:32])
    teacher = Recording(digits_teacher)
    (mixed,), targets, (perm, lam) = Mixup(1.0, teacher, ["image"], seed=0)([x])
    assert sorted(perm.tolist()) == list(range(32)) and perm.tolist() != list(range(32))
    assert ((lam >= 0) & (lam <= 1)).all() and 0.2 < float(lam.mean()) < 0.8  # Beta(1, 1): uniform
    w = lam.reshape(32, 1, 1, 1)
    assert torch.allclose(mixed, w * x + (1 - w) * x[perm])
    (fed,) = teacher.fed
    assert np.array_equal(fed["image"], mixed.numpy())  # the teacher saw the student's very inputs
    assert np.allclose(targets.numpy(), digits_teacher.infer({"image": mixed.numpy()})["output"], atol=1e-5)
    assert not np.allclose(targets.numpy(), digits_pool.targets[:32], atol=1e-2)  # not the clean images' outputs


def test_training_queries_the_teacher_on_every_mixed_batch(digits_pool, digits_teacher):
    from mdeploy.training import TrainConfig, train

    teacher = Recording(digits_teacher)
    config = TrainConfig(steps=9, lr=3e-2, patience=100, mixup=1.0)  # 400 samples: 7 steps an epoch
    mixed = train(student(), digits_pool, config, teacher=teacher)
    assert len(teacher.fed) == 9 and [len(f["image"]) for f in teacher.fed] == [64] * 6 + [16] + [64] * 2
    pool = digits_pool.inputs["image"].reshape(400, -1)
    for feed in teacher.fed:  # the fed images are mixtures, not images of the pool (a weight near 0 or 1, or a sample
        rows = feed["image"].reshape(len(feed["image"]), -1)  # paired with itself, gives one now and then)
        nearest = np.abs(rows[:, None, :] - pool[None]).max(axis=2).min(axis=1)
        assert (nearest > 1e-2).mean() > 0.8
    plain = train(student(), digits_pool, TrainConfig(steps=9, lr=3e-2, patience=100))
    assert any(not np.array_equal(mixed.best_state[k], plain.best_state[k]) for k in plain.best_state)
    # without a teacher to ask, mixup does not apply: the plain run, bit for bit
    alone = train(student(), digits_pool, config)
    assert all(np.array_equal(alone.best_state[k], plain.best_state[k]) for k in plain.best_state)


def test_integer_inputs_are_not_mixed(digits_pool, digits_teacher):
    import torch

    from mdeploy.training import Dataset, TrainConfig, train
    from mdeploy.training.augment import mixable

    class FromLevels(torch.nn.Module):  # the MLP on grey levels 0-16 given as integers (as token ids would be)
        def __init__(self) -> None:
            super().__init__()
            self.mlp = student()

        def forward(self, levels):  # noqa: ANN001, ANN201
            return self.mlp(levels.float() / 16)

    levels = Dataset({"levels": np.rint(digits_pool.inputs["image"] * 16).astype(np.int64)}, digits_pool.targets)
    assert mixable(levels.inputs) == "input 'levels' is not floating-point (ids, masks: no mean of two samples)"
    assert mixable(digits_pool.inputs) is None
    teacher = Recording(digits_teacher)
    result = train(FromLevels(), levels, TrainConfig(steps=5, mixup=1.0, patience=100), teacher=teacher)
    assert teacher.fed == [] and result.best_epoch == 1  # trained on the precomputed outputs, never mixed


def test_mixed_labels_weigh_each_label_by_its_share():
    import torch
    import torch.nn.functional as F  # noqa: N812

    from mdeploy.training.loss import kd_loss

    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 10, generator=g), torch.randn(6, 10, generator=g) * 5
    y = torch.tensor([3, -1, 7, -1, 0, 2])
    perm, lam = torch.tensor([1, 0, 3, 2, 5, 4]), torch.tensor([0.25, 0.5, 1.0, 0.0, 0.9, 0.6])
    soft = kd_loss(s, t, None, 4.0, 0.9)
    def ce(i: int, label) -> float:  # noqa: ANN001 - one sample's cross-entropy, 0 without a label
        return float(F.cross_entropy(s[i : i + 1], label.reshape(1))) if label >= 0 else 0.0

    mixed = sum(float(lam[i]) * ce(i, y[i]) + (1 - float(lam[i])) * ce(i, y[perm[i]]) for i in range(6))
    expected = 0.9 * soft + 0.1 * mixed / 6
    assert float(kd_loss(s, t, y, 4.0, 0.9, (perm, lam))) == pytest.approx(float(expected), rel=1e-6)
