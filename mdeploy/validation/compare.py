"""Comparing outputs: every metric for every output, collected before anything is decided.

Metrics are accumulated batch by batch (running sums and maxima), so validating over a large data set
never holds all outputs in memory at once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from mdeploy.core import Tolerance
from mdeploy.errors import InputError
from mdeploy.lazy import numpy as np
from mdeploy.validation.scores import OutputKind

# Relative error is only meaningful where the reference is not ~0.
_REL_FLOOR = 1e-6

# The abs-error histogram's bins are fixed (0, then 4 per decade from 1e-9 to 1e3), so histograms of different
# batches, outputs and runs add up bin by bin and plot on one axis. Bin i holds errors in [edges[i], edges[i+1]);
# the last bin also holds everything at or above its upper edge (max_abs_error gives the true maximum).
HISTOGRAM_EDGES: list[float] = [0.0] + [float(10.0 ** (e / 4)) for e in range(-36, 13)]


@dataclass
class OutputComparison:
    """The verdict on one output and every number that led to it (truthy when it passed)."""

    name: str
    candidate_name: str
    shape: list[int]
    max_abs_error: float
    mean_abs_error: float
    max_rel_error: float
    cosine: float
    mismatched: int
    total: int
    ref_nonfinite: int
    cand_nonfinite: int
    top1_agreement: float | None
    passed: bool
    class_scores: bool = False  # top-1 is computed and judged only on class scores (validation/scores.py)
    class_scores_source: str = ""
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # {"edges": HISTOGRAM_EDGES, "counts": [...]} of |ref - cand| over the values finite on both sides (for plots)
    abs_error_histogram: dict[str, list] | None = None

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_number(v) for k, v in asdict(self).items()}


@dataclass
class Comparison:
    """All outputs of one validation run (one input set, e.g. `batch=3`); truthy when all passed."""

    label: str
    tolerance: Tolerance
    outputs: list[OutputComparison]
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(self.outputs)

    def __bool__(self) -> bool:
        return self.passed

    def failures(self) -> list[OutputComparison]:
        return [o for o in self.outputs if not o]

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "passed": self.passed,
            "tolerance": {**asdict(self.tolerance), "text": self.tolerance.describe()},
            "outputs": [o.to_dict() for o in self.outputs],
            "notes": self.notes,
        }


def _json_number(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class OutputAccumulator:
    """Running metrics for one output across batches."""

    def __init__(self, name: str, candidate_name: str, kind: OutputKind | None = None) -> None:
        self.name, self.candidate_name = name, candidate_name
        self.kind = kind if kind is not None else OutputKind(False, "an intermediate tensor")
        self.shape: list[int] | None = None
        self.shape_problem: str | None = None
        self.max_abs = 0.0
        self.sum_abs = 0.0
        self.max_rel = 0.0
        self.dot = self.ref_sq = self.cand_sq = 0.0
        self.mismatched = self.total = 0
        self.ref_nonfinite = self.cand_nonfinite = 0
        self.top1_match = self.top1_total = 0
        self.classifier = self.kind.scores
        self.ref_min, self.ref_max = float("inf"), float("-inf")
        self.histogram = np.zeros(len(HISTOGRAM_EDGES) - 1, dtype=np.int64)

    def update(self, ref: np.ndarray, cand: np.ndarray, tol: Tolerance) -> None:
        ref, cand = np.asarray(ref), np.asarray(cand)
        if self.shape is None:
            self.shape = list(ref.shape)
        if ref.shape != cand.shape:
            self.shape_problem = f"shape {list(cand.shape)} differs from the reference's {list(ref.shape)}"
            return
        self.classifier = self.classifier and ref.dtype.kind == "f" and ref.ndim >= 2 and ref.shape[-1] > 1
        r = ref.astype(np.float64, copy=False).ravel()
        c = cand.astype(np.float64, copy=False).ravel()
        ref_ok, cand_ok = np.isfinite(r), np.isfinite(c)
        self.ref_nonfinite += int(r.size - ref_ok.sum())
        self.cand_nonfinite += int(c.size - cand_ok.sum())
        both = ref_ok & cand_ok
        if ref_ok.any():
            self.ref_min = min(self.ref_min, float(r[ref_ok].min()))
            self.ref_max = max(self.ref_max, float(r[ref_ok].max()))
        # non-finite on one side only is a mismatch; identical non-finite values (nan vs nan, inf vs inf) agree
        same_nonfinite = ~ref_ok & ~cand_ok & ((np.isnan(r) & np.isnan(c)) | (r == c))
        diff = np.abs(r[both] - c[both])
        self.total += r.size
        if diff.size:
            self.max_abs = max(self.max_abs, float(diff.max()))
            self.sum_abs += float(diff.sum())
            rb = np.abs(r[both])
            big = rb >= _REL_FLOOR
            if big.any():
                self.max_rel = max(self.max_rel, float((diff[big] / rb[big]).max()))
            self.dot += float(np.dot(r[both], c[both]))
            bins = np.searchsorted(HISTOGRAM_EDGES, diff, side="right") - 1
            self.histogram += np.bincount(np.minimum(bins, len(self.histogram) - 1), minlength=len(self.histogram))
            self.ref_sq += float(np.dot(r[both], r[both]))
            self.cand_sq += float(np.dot(c[both], c[both]))
        bad = int((~both & ~same_nonfinite).sum())
        if tol.atol is not None or tol.rtol is not None:
            limit = (tol.atol or 0.0) + (tol.rtol or 0.0) * np.abs(r[both])
            bad += int((diff > limit).sum())
        self.mismatched += bad
        if self.classifier and ref.shape[-1] > 1:
            self.top1_match += int((ref.argmax(-1) == cand.argmax(-1)).sum())
            self.top1_total += int(np.prod(ref.shape[:-1]))

    def result(self, tol: Tolerance) -> OutputComparison:
        reasons = []
        if self.shape_problem:
            reasons.append(self.shape_problem)
        n_finite = max(self.total - max(self.ref_nonfinite, self.cand_nonfinite), 1)
        if self.ref_sq == 0 and self.cand_sq == 0:
            cosine = 1.0
        elif self.ref_sq == 0 or self.cand_sq == 0:
            cosine = 0.0
        else:
            cosine = self.dot / math.sqrt(self.ref_sq * self.cand_sq)
        top1 = self.top1_match / self.top1_total if self.classifier and self.top1_total else None
        if self.cand_nonfinite > self.ref_nonfinite:
            reasons.append(f"{self.cand_nonfinite} NaN/Inf values in the candidate, {self.ref_nonfinite} in the reference")
        if self.mismatched and (tol.atol is not None or tol.rtol is not None):
            reasons.append(f"{self.mismatched} of {self.total} values outside {tol.describe()}")
        if tol.min_cosine is not None and cosine < tol.min_cosine:
            reasons.append(f"cosine similarity {cosine:.6f} < {tol.min_cosine:g}")
        if tol.min_top1 is not None and top1 is not None and top1 < tol.min_top1:
            reasons.append(f"top-1 agreement {top1:.4f} < {tol.min_top1:g}")
        warnings = []
        if self.total > 1 and self.ref_min == self.ref_max:
            warnings.append(f"the reference output is constant ({self.ref_min:g}) on every input: agreement here proves little")
        if self.shape_problem:  # nothing comparable was measured: no number may look like a pass
            self.max_abs = self.sum_abs = self.max_rel = float("inf")
            cosine = 0.0
        return OutputComparison(
            name=self.name,
            candidate_name=self.candidate_name,
            shape=self.shape or [],
            max_abs_error=self.max_abs,
            mean_abs_error=self.sum_abs / n_finite,
            max_rel_error=self.max_rel,
            cosine=cosine,
            mismatched=self.mismatched,
            total=self.total,
            ref_nonfinite=self.ref_nonfinite,
            cand_nonfinite=self.cand_nonfinite,
            top1_agreement=top1,
            passed=not reasons,
            class_scores=self.kind.scores,
            class_scores_source=self.kind.source,
            reasons=reasons,
            warnings=warnings,
            abs_error_histogram=None if self.shape_problem else {"edges": HISTOGRAM_EDGES, "counts": self.histogram.tolist()},
        )


def match_outputs(ref_names: list[str], cand_names: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Pair outputs by name, or by position (with a note) when the names differ but the counts agree."""

    if set(ref_names) == set(cand_names):
        return [(n, n) for n in ref_names], []
    common = [n for n in ref_names if n in cand_names]
    if len(ref_names) == len(cand_names):
        pairs = list(zip(ref_names, cand_names))
        renamed = ", ".join(f"{r}->{c}" for r, c in pairs if r != c)
        return pairs, [f"output names differ; matched by position ({renamed})"]
    if common:
        return [(n, n) for n in common], [
            f"compared only the outputs both models have ({', '.join(common)}); "
            f"reference also has {sorted(set(ref_names) - set(common))}, candidate {sorted(set(cand_names) - set(common))}"
        ]
    raise InputError(
        f"the models' outputs cannot be matched: reference {ref_names}, candidate {cand_names}",
        hint="the two models must produce the same outputs, by name or by position",
    )
