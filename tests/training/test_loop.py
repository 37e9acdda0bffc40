"""mdeploy.training on the digits MLP with the trained digits CNN as teacher (no CLI): the refit replays the best
epoch count on all the data, from the same initial weights and schedule."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def digits_data(digits_kd):
    import torch

    from fixtures.models import digits_teacher
    from mdeploy.training import Dataset, TorchTeacher, teacher_outputs

    teacher = digits_teacher.build()
    teacher.load_state_dict(torch.load(digits_kd["weights"], weights_only=True))
    with np.load(digits_kd["train"]) as data:
        x = data["image"][:400]
    y = np.load(digits_kd["train_labels"])[:400]
    targets = teacher_outputs(TorchTeacher(teacher, ["image"]), {"image": x}, "output")
    return Dataset({"image": x}, targets, y)


def _student(seed: int = 0):  # noqa: ANN202
    import torch

    from fixtures.models import digits_student

    torch.manual_seed(seed)
    return digits_student.build()


def test_fit_refits_on_all_the_data_for_the_best_epoch_count(digits_data):
    import torch

    from mdeploy.training import TrainConfig, fit, split, train

    config = TrainConfig(epochs=6, lr=3e-2, patience=6, seed=1)
    student = _student()
    result = fit(student, digits_data, config, held_out_fraction=0.25)
    assert 1 <= result.best_epoch <= 6 and len(result.history) == 6  # the history is the selection run's
    assert result.refit == {"samples": 400, "held_out_samples": 100, "epochs": result.best_epoch,
                            "seconds": result.refit["seconds"]}
    assert "accuracy" in result.best_metrics  # the selection run's held-out figures, not the refit's

    # the selection run alone: the same split and seed give the same best epoch
    train_set, held_out = split(digits_data, 0.25, 1)
    alone = train(_student(), train_set, config, held_out=held_out)
    assert alone.best_epoch == result.best_epoch
    assert not all(torch.equal(alone.best_state[k], result.best_state[k]) for k in alone.best_state)

    # the refit is exactly `best_epoch` epochs of the full schedule on all 400 samples, from the initial weights
    replay = train(_student(), digits_data, config, stop_after=result.best_epoch)
    assert replay.best_epoch == result.best_epoch and len(replay.history) == result.best_epoch
    assert all(torch.equal(replay.best_state[k], result.best_state[k]) for k in replay.best_state)
    # and it follows the full run's learning rate, not a schedule squeezed into best_epoch epochs
    full = train(_student(), digits_data, config, held_out=digits_data)
    assert replay.history[-1].lr == pytest.approx(full.history[result.best_epoch - 1].lr)


def test_epoch_records_time_training_and_evaluation_apart(digits_data):
    from mdeploy.training import TrainConfig, split, train

    train_set, held_out = split(digits_data, 0.25, 0)
    result = train(_student(), train_set, TrainConfig(epochs=2, patience=5), held_out=held_out)
    for record in result.history:
        assert record.train_seconds > 0 and record.eval_seconds > 0
        assert record.seconds >= record.train_seconds + record.eval_seconds
