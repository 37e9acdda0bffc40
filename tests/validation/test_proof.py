"""validation/proof.py and validation/bar.py on a real tiny ONNX MLP: the proof quantize, prune and distill share (feeds,
the tolerance a bar implies, accuracy keyed by the models' roles) and the bar's one verdict (`max_error` and its step)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fixtures import onnx_graphs
from mdeploy import registry
from mdeploy.core import ModelRef, TensorSpec, Tolerance
from mdeploy.errors import InputError
from mdeploy.validation.bar import parse_bar
from mdeploy.validation.proof import bar_tolerance, prove, random_feeds


@pytest.fixture(scope="module")
def mlp(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("proof")
    return {
        "good": onnx_graphs.mlp(out / "good.onnx"),
        "broken": onnx_graphs.mlp(out / "broken.onnx", scale_layer=1),
        "data": onnx_graphs.mlp_data(out / "data.npz"),
    }


def _runner(path: Path):
    return registry.open_runner(ModelRef.parse(str(path)))


def _proof(mlp, candidate: str, bar: str):
    ref, cand = _runner(mlp["good"]), _runner(mlp[candidate])
    with np.load(mlp["data"]) as data:
        x = data["x"]
    feeds = [{"x": x[:32]}, {"x": x[32:]}]
    labels = np.concatenate([next(iter(ref.infer(f).values())).argmax(-1) for f in feeds])  # the reference is right
    tolerance = bar_tolerance(parse_bar(bar), Tolerance(), None)
    return prove(ref, cand, feeds, tolerance, labels, label="test"), labels


def test_accuracy_is_keyed_by_reference_and_candidate_or_the_verbs_own_names(mlp):
    proof, labels = _proof(mlp, "broken", "cosine>=0.5")
    acc = proof.accuracy
    assert acc.samples == len(labels) == 64
    assert acc.reference == 1.0 and acc.candidate < 1.0
    record = acc.to_dict()
    assert set(record) == {"output", "samples", "reference", "candidate", "drop"}  # not float/quantized
    assert record["drop"] == pytest.approx(1.0 - acc.candidate)
    assert acc.to_dict("before", "after") == {"output": acc.output, "samples": 64, "before": 1.0, "after": acc.candidate,
                                              "drop": record["drop"]}


def test_the_verdict_names_each_missed_criterion_in_the_record_and_the_step(mlp):
    bar = parse_bar("cosine>=0.9999,accuracy-drop<=0.0")
    proof, _ = _proof(mlp, "broken", str(bar))
    verdict = bar.judge(proof)
    assert not verdict.met
    assert [m.split()[0] for m in verdict.missed] == ["cosine", "accuracy-drop"]
    assert verdict.to_dict() == {"bar": "cosine>=0.9999,accuracy-drop<=0", "met": False, "missed": verdict.missed}
    step = verdict.step()
    assert (step.name, step.status, step.details) == ("max-error cosine>=0.9999,accuracy-drop<=0", "failed",
                                                      {"missed": verdict.missed})


def test_a_candidate_equal_to_the_reference_meets_the_bar_with_nothing_missed(mlp):
    bar = parse_bar("cosine>=0.9999,top1>=1,accuracy-drop<=0")
    proof, _ = _proof(mlp, "good", str(bar))
    verdict = bar.judge(proof)
    assert verdict.met and verdict.missed == []
    assert verdict.to_dict()["missed"] == [] and verdict.step().status == "passed" and verdict.step().details == {}


def test_the_tolerance_is_the_bars_when_given_else_the_verbs_default_and_names_the_class_score_outputs():
    default = Tolerance(atol=None, rtol=None, source="measured, not judged")
    judged = bar_tolerance(parse_bar("cosine>=0.99,top1>=0.9"), default, ("logits",))
    assert (judged.min_cosine, judged.min_top1, judged.source, judged.classifier_outputs) == (0.99, 0.9, "--max-error",
                                                                                             ("logits",))
    unjudged = bar_tolerance(None, default, ())
    assert (unjudged.atol, unjudged.min_cosine, unjudged.source, unjudged.classifier_outputs) == (None, None,
                                                                                                 "measured, not judged", ())


def test_random_feeds_come_in_batches_and_say_how_many_samples_they_are():
    specs = [TensorSpec("x", ("batch", 8), "float32")]
    feeds, source = random_feeds(specs, seed=0, samples=16, batch=4)
    assert [f["x"].shape for f in feeds] == [(4, 8)] * 4 and source == "16 random samples"
    again, _ = random_feeds(specs, seed=0, samples=16, batch=4)
    assert all(np.array_equal(a["x"], b["x"]) for a, b in zip(feeds, again))  # the seed decides them
    one, source = random_feeds(specs, seed=0, samples=3, batch=16)  # fewer samples than a batch: still one feed
    assert len(one) == 1 and one[0]["x"].shape == (16, 8) and source == "16 random samples"


def test_labels_that_do_not_cover_the_samples_are_an_input_error(mlp):
    ref, cand = _runner(mlp["good"]), _runner(mlp["good"])
    with np.load(mlp["data"]) as data:
        feeds = [{"x": data["x"]}]
    with pytest.raises(InputError, match="fewer labels"):
        prove(ref, cand, feeds, Tolerance(), np.zeros(10, dtype=np.int64))
