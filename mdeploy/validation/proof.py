"""Proving on data what a quantized, pruned or distilled model kept: output agreement and, with labels, task accuracy.

One pass over the data runs both models per batch, folds every output into the running comparison metrics,
and counts correct top-1 predictions of the first classifier-like output against the labels. quantize, prune and
distill all prove their result here: the feeds (`random_feeds` when no data is given), the tolerance the bar implies
(`bar_tolerance`), `prove`, then the bar's verdict (validation/bar.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from mdeploy.core import Tolerance
from mdeploy.errors import InputError
from mdeploy.lazy import numpy as np
from mdeploy.runners.base import Feed, Runner
from mdeploy.validation import scores
from mdeploy.validation.compare import Comparison, OutputAccumulator, match_outputs
from mdeploy.validation.inputs import random_feed
from mdeploy.validation.run import candidate_feed, output_kinds

if TYPE_CHECKING:
    from mdeploy.core import TensorSpec
    from mdeploy.validation.bar import Bar


@dataclass
class Accuracy:
    """Top-1 accuracy of the reference and the candidate against labels, on one output."""

    output: str
    samples: int
    reference: float
    candidate: float

    @property
    def drop(self) -> float:
        return self.reference - self.candidate

    def to_dict(self, reference: str = "reference", candidate: str = "candidate") -> dict[str, Any]:
        """Keyed by the two models' roles; a verb whose report names them otherwise (prune: before/after, distill:
        teacher/student) passes its own names."""
        return {"output": self.output, "samples": self.samples, reference: self.reference, candidate: self.candidate,
                "drop": self.drop}


@dataclass
class Proof:
    comparison: Comparison
    accuracy: Accuracy | None

    def metric(self, name: str) -> float | None:
        """cosine / top1 (worst output), max-abs (worst output), accuracy, accuracy-drop; None when not measurable."""
        outs = self.comparison.outputs
        if name == "cosine":
            return min(o.cosine for o in outs)
        if name == "top1":
            values = [o.top1_agreement for o in outs if o.top1_agreement is not None]
            return min(values) if values else None
        if name == "max-abs":
            return max(o.max_abs_error for o in outs)
        if self.accuracy is None:
            return None
        return self.accuracy.candidate if name == "accuracy" else self.accuracy.drop


def bar_tolerance(bar: Bar | None, default: Tolerance, classifier_outputs: tuple[str, ...] | None) -> Tolerance:
    """What each output is judged by: the tolerance the bar implies (`--max-error`), else the verb's own default; top-1
    only on the outputs the user says are class scores (None: decided per output)."""
    return replace(bar.tolerance() if bar else default, classifier_outputs=classifier_outputs)


def random_feeds(specs: list[TensorSpec], seed: int, samples: int, batch: int) -> tuple[list[Feed], str]:
    """`samples` random samples in feeds of `batch` (at least one feed), and the proof's source line for them."""
    rng = np.random.default_rng(seed)
    feeds = [random_feed(specs, rng, batch=batch) for _ in range(max(1, samples // batch))]
    return feeds, f"{len(feeds) * batch} random samples"


def prove(
    ref: Runner,
    cand: Runner,
    feeds: list[Feed],
    tolerance: Tolerance,
    labels: np.ndarray | None = None,
    label: str = "",
    progress: Callable[[], None] | None = None,
) -> Proof:
    """Run both models on every feed (consecutive slices of the data, in order, when labels are given)."""
    accs: dict[str, OutputAccumulator] | None = None
    pairs: list[tuple[str, str]] = []
    notes: list[str] = []
    scored: str | None = None
    seen = right_ref = right_cand = 0
    for feed in feeds:
        ref_out = ref.infer(feed)
        cand_out = cand.infer(candidate_feed(feed, ref, cand))
        if accs is None:
            pairs, notes = match_outputs(list(ref_out), list(cand_out))
            kinds = output_kinds(ref, cand, pairs, ref_out, tolerance)
            notes += scores.notes(kinds, tolerance.min_top1 is not None)
            accs = {r: OutputAccumulator(r, c, kinds[r]) for r, c in pairs}
            if labels is not None:
                scored = next((r for r, _ in pairs if kinds[r].scores and ref_out[r].ndim == 2), None)
                if scored is None:
                    raise InputError(
                        "labels were given, but the model has no (batch, classes) score output to score against them",
                        hint="name it with --classifier-output NAME",
                    )
        for r, c in pairs:
            accs[r].update(ref_out[r], cand_out[c], tolerance)
        if labels is not None and scored is not None:
            n = ref_out[scored].shape[0]
            y = labels[seen : seen + n]
            if len(y) != n:
                raise InputError(f"there are fewer labels ({len(labels)}) than samples")
            right_ref += int((ref_out[scored].argmax(-1) == y).sum())
            right_cand += int((cand_out[dict(pairs)[scored]].argmax(-1) == y).sum())
            seen += n
        if progress:
            progress()
    if labels is not None and seen != len(labels):
        raise InputError(f"{len(labels)} labels for {seen} samples", hint="give one label per sample")
    comparison = Comparison(
        label=label, tolerance=tolerance, outputs=[a.result(tolerance) for a in (accs or {}).values()], notes=notes
    )
    accuracy = Accuracy(scored, seen, right_ref / seen, right_cand / seen) if scored and seen else None
    return Proof(comparison, accuracy)
