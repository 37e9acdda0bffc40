"""mdeploy.training.loop on the digits MLP with a trained digits CNN as teacher (no CLI): the schedule counted in
steps, the refit's complete schedule, the split and the metrics with labels for some samples only."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.training.conftest import partly_labelled, student


def test_the_schedule_is_counted_in_optimizer_steps(digits_pool):
    from mdeploy.training import TrainConfig, train

    config = TrainConfig(steps=15, batch_size=64, lr=3e-2, patience=100)  # 400 samples: 7 steps an epoch
    result = train(student(), digits_pool, config)
    assert [e.step for e in result.history] == [7, 14, 15]  # the last epoch stops part-way, at step 15
    assert result.history[-1].lr == pytest.approx(0.0, abs=1e-12)  # the cosine ends at the last step
    epochs = train(student(), digits_pool, TrainConfig(epochs=2, batch_size=64, patience=100))
    assert [e.step for e in epochs.history] == [7, 14]


def test_refit_replays_a_complete_schedule_after_early_stopping(digits_pool):
    """Early stopping picks K epochs; the refit trains K epochs on all the data with warm-up and the whole cosine
    fitted to them, so the learning rate decays to 0 (replaying K epochs of the longer schedule ended at a high lr)."""
    from mdeploy.training import TrainConfig, fit, split, train

    config = TrainConfig(epochs=40, lr=3e-2, patience=2, seed=1)
    result = fit(student(), digits_pool, config, held_out_fraction=0.25)
    assert result.stopped_early and 1 <= result.best_epoch < len(result.history) < 40
    refit = result.refit
    assert refit["samples"] == 400 and refit["held_out_samples"] == 100 and refit["epochs"] == result.best_epoch
    assert refit["steps"] == result.best_epoch * math.ceil(400 / 64) == refit["history"][-1]["step"]
    lrs = [e["lr"] for e in refit["history"]]
    assert max(lrs) > 0.5 * 3e-2 and lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert lrs == sorted(lrs, reverse=True)  # epoch ends after the warm-up: the cosine only goes down
    selection_lr = result.history[result.best_epoch - 1].lr  # where the selection run was at epoch K: still high
    assert selection_lr > 0.5 * 3e-2 > lrs[-1]

    # the refit is that complete schedule on all 400 samples from the initial weights, evaluation aside
    replay = train(student(), digits_pool, TrainConfig(epochs=40, steps=refit["steps"], lr=3e-2, seed=1), evaluate=False)
    assert all(np.array_equal(replay.best_state[k].numpy(), result.best_state[k].numpy()) for k in replay.best_state)
    # and the selection run alone, on the same split and seed, picks the same epoch
    train_set, held_out = split(digits_pool, 0.25, 1)
    assert train(student(), train_set, config, held_out=held_out).best_epoch == result.best_epoch


def test_refit_runs_the_whole_schedule_when_the_metric_never_stalled(digits_pool):
    from mdeploy.training import TrainConfig, fit

    result = fit(student(), digits_pool, TrainConfig(steps=12, lr=3e-2, patience=1000), held_out_fraction=0.25)
    assert not result.stopped_early
    assert result.refit["length"] == "the whole schedule" and result.refit["epochs"] == len(result.history)


def test_split_keeps_labelled_and_unlabelled_samples_in_proportion(digits_pool):
    from mdeploy.training import split

    data = partly_labelled(digits_pool, 40)
    for seed in range(3):
        kept, held = split(data, 0.15, seed)
        assert (held.labels >= 0).sum() == 6 and (kept.labels >= 0).sum() == 34
        assert len(held) == 6 + round(360 * 0.15)


def test_metrics_with_some_labels_choose_by_agreement_and_report_accuracy_on_the_labelled(digits_pool):
    from mdeploy.training import TrainConfig, split, train

    data = partly_labelled(digits_pool, 100)
    train_set, held_out = split(data, 0.25, 0)
    result = train(student(), train_set, TrainConfig(steps=20, lr=3e-2), held_out=held_out)
    assert result.metric == "agreement"
    best = result.best_metrics
    assert set(best) == {"loss", "agreement", "accuracy"}
    # accuracy counts the 25 labelled held-out samples only: a multiple of 1/25
    assert best["accuracy"] * 25 == pytest.approx(round(best["accuracy"] * 25))
    kept, held = split(digits_pool, 0.25, 0)
    assert train(student(), kept, TrainConfig(steps=5), held_out=held).metric == "accuracy"  # every sample labelled


def test_epoch_records_time_training_and_evaluation_apart(digits_pool):
    from mdeploy.training import TrainConfig, split, train

    train_set, held_out = split(digits_pool, 0.25, 0)
    result = train(student(), train_set, TrainConfig(epochs=2, patience=5), held_out=held_out)
    for record in result.history:
        assert record.train_seconds > 0 and record.eval_seconds > 0
        assert record.seconds >= record.train_seconds + record.eval_seconds
