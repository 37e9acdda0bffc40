"""Running two models on the same inputs and comparing what they produce."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mdeploy.core import ModelRef, TensorSpec, Tolerance
from mdeploy.errors import InputError, MdeployError
from mdeploy.lazy import numpy as np
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


def candidate_feed(feed: Feed, ref: Runner | ReferenceOutputs, cand: Runner) -> Feed:
    """Rename a reference feed for the candidate: by name, or by position when the names differ."""
    pairs = input_pairs(ref.input_specs(), cand.input_specs())
    if all(r == c for r, c in pairs):
        return feed
    return {c: feed[r] for r, c in pairs}


def input_pairs(ref_specs: list[TensorSpec], cand_specs: list[TensorSpec]) -> list[tuple[str, str]]:
    """(reference input, candidate input) name pairs: by name, or by position when only the names differ (one model
    in several formats: `input_layer`, `keras_tensor`, `serving_default_keras_tensor:0`).

    Two models that take different inputs (their number, or an input's dtype or rank) are an error before anything
    runs: no data, random or given, may stand in for a signature mismatch and turn it into a failed comparison.
    """
    by_name = {s.name: s for s in cand_specs}
    if {s.name for s in ref_specs} == set(by_name):
        pairs = [(s, by_name[s.name]) for s in ref_specs]
    elif len(ref_specs) == len(cand_specs):
        pairs = list(zip(ref_specs, cand_specs))
    else:
        pairs = []
    if len(pairs) != len(ref_specs) or len(pairs) != len(cand_specs) or any(
            r.dtype != c.dtype or len(r.shape) != len(c.shape) for r, c in pairs):
        def signature(specs: list[TensorSpec]) -> str:
            return "[" + ", ".join(f"{s.name}{s.shape_text()}:{s.dtype}" for s in specs) + "]"

        raise InputError(
            f"the models take different inputs: reference {signature(ref_specs)}, candidate {signature(cand_specs)}",
            hint="compare two models that take the same inputs (matched by name, or by position when only the names "
                 "differ, with the same dtype and rank)",
        )
    return [(r.name, c.name) for r, c in pairs]


def compare(
    ref: Runner,
    cand: Runner,
    feeds: list[Feed],
    tolerance: Tolerance,
    label: str = "",
    progress: Callable[[], None] | None = None,
    data: str | None = None,
) -> Comparison:
    """Run both models on every feed; metrics accumulate per output, and the verdict comes at the end.

    `data`: the user's data file the feeds come from (None: random inputs). NaN/Inf the reference computes on random
    inputs mean mdeploy fed it values outside its domain (the log of a negative): an input error. On the user's data
    they are what the model computes there (a causal mask's -inf, a max over an empty set): compared as values (the
    candidate must compute the same ones), with a note.
    """
    return _compare(ref, cand, ((feed, ref.infer(feed)) for feed in feeds), tolerance, label, progress, data)


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
    reused: int = 0  # how many of the outputs came from a run made before (run_reference's `known`)

    def input_specs(self) -> list[TensorSpec]:
        return self.specs


def run_reference(ref: Runner, feeds: list[Feed],
                  known: tuple[Feed, dict[str, np.ndarray]] | None = None) -> ReferenceOutputs:
    """Run the reference on every feed and keep what it computed (the runner can then be dropped).

    `known`: a feed the same model already ran on and what it computed there (convert's converter ran the source at
    the example inputs): a feed equal to it, array for array (names, dtypes, shapes, values), takes those outputs
    instead of running again.
    """
    outputs, reused = [], 0
    for feed in feeds:
        if known is not None and same_feed(feed, known[0]):
            ref.check_feed(feed)
            outputs.append(dict(known[1]))
            reused += 1
        else:
            outputs.append(ref.infer(feed))
    return ReferenceOutputs(ref.ref, list(ref.input_specs()), list(ref.notes), list(feeds), outputs, reused)


def same_feed(a: Feed, b: Feed) -> bool:
    """Whether two feeds hold the same arrays (names, dtypes, shapes and every value)."""
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and np.array_equal(a[k], b[k]) for k in a)


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
    data: str | None = None,
) -> Comparison:
    """The candidate on every feed against the reference's outputs for it (computed as `runs` is iterated)."""
    accumulators: dict[str, OutputAccumulator] | None = None
    inputs = input_pairs(ref.input_specs(), cand.input_specs())  # before anything runs: an error, not a failed check
    renamed = ", ".join(f"{r}->{c}" for r, c in inputs if r != c)
    notes: list[str] = [f"input names differ; matched by position ({renamed})"] if renamed else []
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
            pairs, matched = match_outputs(list(ref_out), list(cand_out))
            kinds = output_kinds(ref, cand, pairs, ref_out, tolerance)
            notes += matched + scores.notes(kinds, tolerance.min_top1 is not None)
            accumulators = {r: OutputAccumulator(r, c, kinds[r]) for r, c in pairs}
        for r, c in pairs:
            update(accumulators[r], ref_out[r], cand_out[c], tolerance)
            bad = sum(int(np.size(t) - np.isfinite(t).sum()) for t in tensors(ref_out[r]) if t.dtype.kind == "f")
            nonfinite_ref[r] = nonfinite_ref.get(r, 0) + bad
        if progress:
            progress()
    poisoned = {k: v for k, v in nonfinite_ref.items() if v}
    which = ", ".join(f"{k} ({v} values)" for k, v in poisoned.items())
    if poisoned and data:
        notes.append(f"the reference computes NaN/Inf on {data} in {which}: compared as values (the candidate must "
                     "compute the same ones there)")
    elif poisoned:
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
    arrays = {k: v for k, v in ref_out.items() if isinstance(v, np.ndarray)}  # a sequence is not class scores
    return scores.decide([r for r, _ in pairs], arrays, tolerance.classifier_outputs, scores.graphs_of(ref, cand, pairs=pairs))


def tensors(value: object) -> list[np.ndarray]:
    """The tensors of one output: itself, the elements of a sequence (ONNX SplitToSequence), none for an optional
    output without a value."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors(v)]
    return [np.asarray(value)]


def update(acc: OutputAccumulator, ref: object, cand: object, tolerance: Tolerance) -> None:
    """Add one run of an output to its metrics: a tensor, or a sequence element by element (a sequence of another
    length, or a value on one side only, is a shape that differs)."""
    kind = {type(None): "no value", list: "a sequence", tuple: "a sequence"}
    ref_kind, cand_kind = kind.get(type(ref), "a tensor"), kind.get(type(cand), "a tensor")
    if ref_kind != cand_kind:
        acc.shape_problem = f"{cand_kind} where the reference has {ref_kind}"
    elif ref_kind == "a sequence":
        assert isinstance(ref, (list, tuple)) and isinstance(cand, (list, tuple))
        if len(ref) != len(cand):
            acc.shape_problem = f"a sequence of {len(cand)} tensors where the reference's has {len(ref)}"
        for r, c in zip(ref, cand):
            update(acc, r, c, tolerance)
    elif ref_kind == "a tensor":
        acc.update(np.asarray(ref), np.asarray(cand), tolerance)


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
        OutputComparison(name, name, list(np.shape(v)) if isinstance(v, np.ndarray) else [], float("inf"), float("inf"),
                         float("inf"), 0.0, size, size, 0, 0, None, passed=False, reasons=[reason])
        for name, v in ref_out.items()
        for size in [sum(int(t.size) for t in tensors(v))]
    ]
    return Comparison(label=label, tolerance=tolerance, outputs=outputs)
