"""Metrics and verdicts on real arrays: what passes, what fails, and why."""

import numpy as np
import pytest

from mdeploy.core import tolerance_for
from mdeploy.errors import InputError
from mdeploy.validation.compare import OutputAccumulator, match_outputs
from mdeploy.validation.scores import OutputKind

SCORES = OutputKind(True, "class scores, as the test says")


def _compare(ref, cand, tol=None):
    tol = tol or tolerance_for("fp32")
    acc = OutputAccumulator("y", "y", SCORES)
    acc.update(np.asarray(ref), np.asarray(cand), tol)
    return acc.result(tol)


def test_deep_network_noise_passes_fp32_defaults():
    """A correct export of a deep network differs by ~1e-3 on outputs near 10 (ResNet-50 scale)."""
    rng = np.random.default_rng(0)
    ref = rng.normal(10, 3, size=(8, 1000)).astype(np.float32)
    cand = ref + rng.uniform(-1e-3, 1e-3, size=ref.shape).astype(np.float32)
    result = _compare(ref, cand)
    assert result.passed, result.reasons
    assert 5e-4 < result.max_abs_error <= 1.1e-3
    assert result.cosine > 0.999999
    assert result.top1_agreement is not None


def test_a_real_bug_fails_fp32_defaults():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, size=(8, 10)).astype(np.float32)
    cand = ref.copy()
    cand[:, 3] += 0.05  # one wrong channel
    result = _compare(ref, cand)
    assert not result.passed
    assert result.mismatched == 8
    assert result.max_abs_error == pytest.approx(0.05, rel=1e-3)
    assert "outside" in result.reasons[0]


def test_metrics_accumulate_across_batches_like_one_big_batch():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(6, 5)).astype(np.float32)
    cand = ref + rng.normal(scale=1e-2, size=ref.shape).astype(np.float32)
    tol = tolerance_for("fp32")
    whole = _compare(ref, cand)
    acc = OutputAccumulator("y", "y", SCORES)
    for i in range(0, 6, 2):
        acc.update(ref[i : i + 2], cand[i : i + 2], tol)
    split = acc.result(tol)
    assert split.max_abs_error == pytest.approx(whole.max_abs_error)
    assert split.mean_abs_error == pytest.approx(whole.mean_abs_error)
    assert split.cosine == pytest.approx(whole.cosine)
    assert split.mismatched == whole.mismatched
    assert split.top1_agreement == pytest.approx(whole.top1_agreement)


def test_nan_in_candidate_only_is_a_mismatch_and_counted():
    ref = np.ones((2, 3), np.float32)
    cand = ref.copy()
    cand[0, 0] = np.nan
    cand[1, 2] = np.inf
    result = _compare(ref, cand)
    assert not result.passed
    assert (result.ref_nonfinite, result.cand_nonfinite) == (0, 2)


def test_top1_agreement_counts_argmax_matches():
    ref = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], np.float32)
    cand = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], np.float32)
    tol = tolerance_for("int8")
    result = _compare(ref, cand, tol)
    assert result.top1_agreement == pytest.approx(0.75)
    assert not result.passed and any("top-1" in r for r in result.reasons)


def test_shape_difference_fails_without_numbers_that_look_like_a_pass():
    result = _compare(np.zeros((4, 4), np.float32), np.zeros((2, 8), np.float32))
    assert not result.passed
    assert result.cosine == 0.0 and result.max_abs_error == float("inf")


def test_outputs_match_by_name_then_by_position():
    assert match_outputs(["a", "b"], ["b", "a"]) == ([("a", "a"), ("b", "b")], [])
    pairs, notes = match_outputs(["logits"], ["output_0"])
    assert pairs == [("logits", "output_0")] and "position" in notes[0]
    with pytest.raises(InputError):
        match_outputs(["a"], ["b", "c"])


def test_constant_reference_output_is_flagged_as_weak_evidence():
    ref = np.full((4, 10), 0.1, np.float32)
    result = _compare(ref, ref.copy())
    assert result.passed and "constant" in result.warnings[0]
    assert not _compare(np.arange(4, dtype=np.float32), np.arange(4, dtype=np.float32)).warnings
