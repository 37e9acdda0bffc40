"""Running two models on the same inputs and comparing what they produce."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from mdeploy.core import ModelRef, TensorSpec, Tolerance
from mdeploy.errors import InputError, MdeployError
from mdeploy.runners.base import Feed, Runner
from mdeploy.validation import scores
from mdeploy.validation.compare import Comparison, OutputAccumulator, OutputComparison, match_outputs
from mdeploy.validation.inputs import random_feed


def merged_specs(ref: Runner, cand: Runner) -> list[TensorSpec]:
    """The reference's input specs, with the tighter id range of either side (token ids below the vocab)."""
    return merge_specs(ref.input_specs(), cand.input_specs())


def merge_specs(ref_specs: list[TensorSpec], cand_specs: list[TensorSpec]) -> list[TensorSpec]:
    """merged_specs from the two models' input specs (convert knows an ONNX result's before it loads it)."""
    by_name = {s.name: s for s in cand_specs}
    specs = []
    for spec in ref_specs:
        other = by_name.get(spec.name)
        ranges = [r for r in (spec.value_range, other.value_range if other else None) if r]
        value_range = (max(r[0] for r in ranges), min(r[1] for r in ranges)) if ranges else None
        specs.append(TensorSpec(spec.name, spec.shape, spec.dtype, value_range))
    return specs


def candidate_feed(feed: Feed, ref: Runner, cand: Runner) -> Feed:
    """Rename a reference feed for the candidate: by name, or by position when the names differ."""
    cand_names = [s.name for s in cand.input_specs()]
    if set(feed) == set(cand_names):
        return feed
    ref_names = [s.name for s in ref.input_specs()]
    if len(ref_names) != len(cand_names):
        raise InputError(f"the models take different inputs: reference {ref_names}, candidate {cand_names}")
    return {c: feed[r] for r, c in zip(ref_names, cand_names)}


def compare(
    ref: Runner,
    cand: Runner,
    feeds: list[Feed],
    tolerance: Tolerance,
    label: str = "",
    progress: Callable[[], None] | None = None,
) -> Comparison:
    """Run both models on every feed; metrics accumulate per output, and the verdict comes at the end."""
    return _compare(ref, cand, ((feed, ref.infer(feed)) for feed in feeds), tolerance, label, progress)


@dataclass
class ReferenceOutputs:
    """What a reference model computed on some feeds, kept so that the model itself can be released before the
    candidate is loaded: the two never hold memory at once (convert validates a BERT-size export this way).

    It answers what comparing needs from the reference runner: its model's name and notes, its input specs (to
    rename feeds for the candidate), and `ref` (whether its graph says which outputs are class scores).
    """

    ref: ModelRef
    specs: list[TensorSpec]
    notes: list[str]
    feeds: list[Feed]
    outputs: list[dict[str, np.ndarray]]

    def input_specs(self) -> list[TensorSpec]:
        return self.specs


def run_reference(ref: Runner, feeds: list[Feed]) -> ReferenceOutputs:
    """Run the reference on every feed and keep what it computed (the runner can then be dropped)."""
    outputs = [ref.infer(feed) for feed in feeds]
    return ReferenceOutputs(ref.ref, list(ref.input_specs()), list(ref.notes), list(feeds), outputs)


def compare_to_reference(
    reference: ReferenceOutputs,
    cand: Runner,
    tolerance: Tolerance,
    label: str = "",
    progress: Callable[[], None] | None = None,
) -> Comparison:
    """`compare`, with the reference's outputs computed beforehand (run_reference): the same metrics and verdict."""
    return _compare(reference, cand, zip(reference.feeds, reference.outputs), tolerance, label, progress)


def _compare(
    ref: Runner | ReferenceOutputs,
    cand: Runner,
    runs: Iterable[tuple[Feed, dict[str, np.ndarray]]],
    tolerance: Tolerance,
    label: str,
    progress: Callable[[], None] | None,
) -> Comparison:
    """The candidate on every feed against the reference's outputs for it (computed as `runs` is iterated)."""
    accumulators: dict[str, OutputAccumulator] | None = None
    notes: list[str] = []
    pairs: list[tuple[str, str]] = []
    nonfinite_ref: dict[str, int] = {}
    for feed, ref_out in runs:
        try:
            cand_out = cand.infer(candidate_feed(feed, ref, cand))
        except MdeployError as exc:
            # the reference ran on this input and the candidate cannot: a failed check, not bad input
            # (an export that froze a dynamic axis fails exactly like this)
            return _failed_to_run(ref_out, exc, tolerance, label)
        if accumulators is None:
            pairs, notes = match_outputs(list(ref_out), list(cand_out))
            kinds = output_kinds(ref, cand, pairs, ref_out, tolerance)
            notes += scores.notes(kinds, tolerance.min_top1 is not None)
            accumulators = {r: OutputAccumulator(r, c, kinds[r]) for r, c in pairs}
        for r, c in pairs:
            accumulators[r].update(ref_out[r], cand_out[c], tolerance)
            bad = int(np.size(ref_out[r]) - np.isfinite(ref_out[r]).sum()) if ref_out[r].dtype.kind == "f" else 0
            nonfinite_ref[r] = nonfinite_ref.get(r, 0) + bad
        if progress:
            progress()
    poisoned = {k: v for k, v in nonfinite_ref.items() if v}
    if poisoned:
        which = ", ".join(f"{k} ({v} values)" for k, v in poisoned.items())
        raise InputError(
            f"the reference model {ref.ref.name} produces NaN/Inf in {which}{' at ' + label if label else ''}; nothing can be compared",
            hint="check the inputs (--data) and the model itself",
        )
    outputs = [acc.result(tolerance) for acc in (accumulators or {}).values()]
    loaded = list(dict.fromkeys([*ref.notes, *cand.notes]))  # how the runners had to load the models
    return Comparison(label=label, tolerance=tolerance, outputs=outputs, notes=[*loaded, *notes])


def output_kinds(ref: Runner, cand: Runner, pairs: list[tuple[str, str]], ref_out: dict[str, np.ndarray],
                 tolerance: Tolerance) -> dict[str, scores.OutputKind]:
    """Which outputs are class scores (top-1 is computed and judged on those only), from both models' graphs."""
    return scores.decide([r for r, _ in pairs], ref_out, tolerance.classifier_outputs, scores.graphs_of(ref, cand, pairs=pairs))


def resized_feed(specs: list[TensorSpec], dynamic: dict[str, list[tuple[str, int]]], base: Feed, rng: np.random.Generator) -> tuple[Feed, str]:
    """A feed like `base` with every dynamic dim at a second size, to catch an export that froze an axis.

    Batch axes go from n to n+2 (1 -> 3); other axes halve (16 -> 8; smaller stays inside positional limits),
    or grow by 2 when already tiny. Inputs sharing a dim name change together. When one input's batch is fixed
    (`--input image:2x...`), the other inputs' batch stays with it: the model's inputs share one batch.
    """
    batch_axes = {name for axes in dynamic.values() for name, axis in axes if axis == 0}
    pinned = any(name not in batch_axes for name, array in base.items() if array.ndim)
    sizes: dict[str, int] = {}
    for dim, axes in dynamic.items():
        name, axis = axes[0]
        current = base[name].shape[axis]
        if axis == 0 and pinned:
            sizes[dim] = current
        else:
            sizes[dim] = current + 2 if axis == 0 or current < 4 else current // 2
    shapes: dict[str, list[int]] = {k: list(v.shape) for k, v in base.items()}
    for dim, axes in dynamic.items():
        for name, axis in axes:
            shapes[name][axis] = sizes[dim]
    fixed = [TensorSpec(s.name, tuple(shapes[s.name]), s.dtype, s.value_range) for s in specs]
    label = ", ".join(f"{d}={n}" for d, n in sizes.items())
    return random_feed(fixed, rng), label


def _failed_to_run(ref_out: dict[str, np.ndarray], exc: MdeployError, tolerance: Tolerance, label: str) -> Comparison:
    reason = f"the candidate failed to run: {exc.message}"
    outputs = [
        OutputComparison(name, name, list(np.shape(v)), float("inf"), float("inf"), float("inf"), 0.0, int(np.size(v)), int(np.size(v)),
                         0, 0, None, passed=False, reasons=[reason])
        for name, v in ref_out.items()
    ]
    return Comparison(label=label, tolerance=tolerance, outputs=outputs)
