"""`quantize --goal latency`: try the INT8 forms that can be fast on this CPU and keep the fastest that clears the bar.

Why a search: which INT8 form runs fastest depends on the CPU and the model, and nobody can say it in advance. QDQ
and QOperator graphs fuse into different kernels; per-tensor weights skip a per-channel rescale; onnxruntime's x86
kernels take u8 activations, its ARM kernels s8; dynamic quantization wins on transformers whose activations vary,
static on CNNs; and some nodes (depthwise convolutions on x86) are slower as INT8 than as float, so a model can be
faster with them left in float. Each candidate is quantized by the same pass (onnxruntime.quantization), proved on
the same data by the same proof as every quantize (validation/proof.py, judged by validation/bar.py), and timed in
turns with the float model (measuring/latency.time_runs), so that every speed-up is a ratio from one run. Timing
uses one intra-op thread, like the verb's speed check and the int8 bound: at more threads on a shared machine the
ranking is decided by other processes (seen: a 2x faster dynamic form measured as a tie at 2 threads).

The candidate forms, and why some are not tried on this CPU, are in quantization/int8_forms.py.

The search starts from the model the verb already wrote with its defaults (candidate 1, at no cost), then tries one
change at a time from each mode's base form, plus the fastest form with the nodes its profile shows slower in INT8
than in float left in float (quantization/slow_nodes.py). It stops when the next candidate would not fit in the
budget, then re-times the fastest passing candidates together with the float model, and keeps the fastest.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mdeploy import machine, registry
from mdeploy.core import Format, ModelRef
from mdeploy.errors import InputError, MdeployError, first_line
from mdeploy.lazy import numpy as np
from mdeploy.measuring.latency import time_runs
from mdeploy.progress import ProgressFactory
from mdeploy.quantization import slow_nodes
from mdeploy.quantization.calibration import fixed_batch
from mdeploy.quantization.int8_forms import Form, cpu_isa, form_of, forms
from mdeploy.quantization.speed_check import feed_for_timing
from mdeploy.reports.report import Report, Step
from mdeploy.validation.bar import Bar

GOALS = ("accuracy", "latency")
DEFAULT_BUDGET = 300.0
RUNOFF = 3  # the fastest passing candidates re-timed together at the end


@dataclass
class Candidate:
    form: Form
    status: str = "not tried"  # kept | passed | missed bar | failed | not tried
    reason: str = ""
    latency_ms: float | None = None
    float_ms: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    margin: float | None = None  # the bar's worst margin (>= 0: met); without a bar 0 / -1 for passed / failed
    seconds: float = 0.0
    path: Path | None = None
    result: Any = None
    proof: Any = None
    options: Any = None

    @property
    def speedup(self) -> float | None:
        return self.float_ms / self.latency_ms if self.latency_ms and self.float_ms else None

    @property
    def accurate(self) -> bool:
        return self.margin is not None and self.margin >= 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.form.name, **self.form.to_dict(), "status": self.status, "reason": self.reason,
                "latency_ms": _round(self.latency_ms), "float_ms": _round(self.float_ms),
                "speedup": _round(self.speedup), "accuracy": {k: _round(v, 6) for k, v in self.metrics.items()},
                "seconds": round(self.seconds, 2)}


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def check(pass_cls: Any, options: Any, validate: bool) -> None:
    """What --goal latency needs, checked before any work: an ONNX INT8 pass for the CPU, and the proof it keeps by."""
    if not validate or pass_cls.verb != "quantize" or pass_cls.target != Format.ONNX:
        raise InputError("--goal latency needs an ONNX model and validation (it keeps the fastest form that is "
                         "proven accurate)", hint="drop --no-validate (and --weights); quantize an .onnx model")
    if getattr(options, "target", "cpu") != "cpu":
        raise InputError("--goal latency searches the forms that run fast on this CPU; --target tensorrt has one "
                         "INT8 form", hint="drop --goal latency for --target tensorrt")


@dataclass
class Setup:
    """What the verb hands the search: its pass, the model it already wrote with its defaults and that model's
    proof, and the proof itself (evaluate: a model path -> Proof on the verb's data)."""

    quantizer: Any
    ref: ModelRef
    options: Any
    first_path: Path
    first_result: Any
    first_proof: Any
    evaluate: Callable[[Path], Any]
    feeds: list[dict[str, Any]]
    bar: Bar | None
    budget: float | None
    progress: ProgressFactory
    threads: int | None = 1  # as the verb's speed check: one intra-op thread is reproducible on a busy machine


def search(setup: Setup, report: Report) -> tuple[Any, Any]:
    """Try the candidates, write the kept one over `setup.first_path`, record the table in `report`; the kept one's
    proof and pass options (what the model written was made with)."""
    budget = setup.budget if setup.budget is not None else DEFAULT_BUDGET
    start = time.perf_counter()
    isa = cpu_isa()
    tried_forms, pruned = forms(setup.options, bool(setup.options.calib_data or setup.options.calib_samples), isa)
    bases = {f for f in tried_forms if f.mode not in {g.mode for g in tried_forms[: tried_forms.index(f)]}}
    form = replace(form_of(setup.first_result.details), preprocess=not setup.options.skip_preprocess)
    first = Candidate(form, path=setup.first_path, result=setup.first_result,
                      proof=setup.first_proof, options=setup.options, reason="the defaults")
    todo = [Candidate(f) for f in tried_forms if f != first.form]
    float_runner = registry.open_runner(setup.ref, "cpu", None, setup.threads)
    feed = feed_for_timing(setup.feeds[0], fixed_batch(float_runner.input_specs()))  # batch 1 unless fixed
    per_timing = min(4.0, max(0.3, 0.04 * budget))
    # what the default candidate cost the verb (quantize + proof): the estimate for the next one until one is measured
    steps = {s.name: s.seconds or 0.0 for s in report.steps}
    first_cost = steps.get("quantize", 0.0) + steps.get("validate", 0.0)
    # a dynamic form needs no calibration: until one is measured, preparing + proving + timing is its estimate
    no_calibration = steps.get("validate", 0.0) + float(setup.first_result.details.get("preprocess_seconds") or 0.0)
    stopped = ""
    with tempfile.TemporaryDirectory(prefix="mdeploy-goal-") as work, \
            setup.progress(f"latency search (budget {budget:g}s)", len(todo) + 2) as advance:
        _judge(first, setup.bar)
        _time(first, float_runner, feed, setup.threads, per_timing)
        timing = time.perf_counter() - start
        first.seconds = timing + first_cost
        done = [first]
        advance()
        slow_added = False
        while todo or not slow_added:
            if not slow_added and not any(c.form in bases for c in todo):
                slow_added = True  # once every mode's base form is timed: it starts from the fastest of them
                extra = _slow_form(done, setup, feed)
                if extra is not None and extra not in [c.form for c in done + todo]:
                    todo.insert(0, Candidate(extra))
                advance()
            if not todo:
                break
            left = budget - (time.perf_counter() - start)
            cand = next((c for c in todo if _estimate(c.form, done, 1.5 * (no_calibration + timing)) <= left), None)
            if cand is None:  # not even the cheapest kind of candidate fits in what is left
                stopped = (f"stopped early: the budget ({budget:g}s) would be exceeded; {len(done)} candidate(s) tried, "
                           f"{len(todo)} not tried (give a larger --budget to try them)")
                for c in todo:
                    c.reason = "budget reached"
                done += todo
                break
            todo.remove(cand)
            _try(cand, setup, Path(work) / f"candidate{len(done)}.onnx", float_runner, feed, per_timing)
            done.append(cand)
            advance()
        left = budget - (time.perf_counter() - start)
        _runoff(done, float_runner, feed, setup.threads, min(left * 0.6, 3 * per_timing))
        kept = _keep(done)
        if kept.path != setup.first_path:
            from mdeploy.validation.repair import install

            install(kept.path, setup.first_path)
    _record(report, setup, done, kept, isa, pruned, stopped, time.perf_counter() - start, budget)
    return kept.proof, kept.options


def _estimate(form: Form, done: list[Candidate], dynamic_guess: float) -> float:
    """Seconds a candidate of this form will take: the mean of those of its mode tried so far; for a first dynamic
    one (no calibration) `dynamic_guess`; else the mean of all."""
    same = [c.seconds for c in done if c.form.mode == form.mode and c.seconds]
    if same:
        return sum(same) / len(same)
    if form.mode == "dynamic":
        return dynamic_guess
    return sum(c.seconds for c in done) / len(done)


def _try(cand: Candidate, setup: Setup, path: Path, float_runner: Any, feed: dict, seconds: float) -> None:
    start = time.perf_counter()
    cand.options = replace(setup.options, **cand.form.changes(list(setup.options.exclude)))
    try:
        cand.result = setup.quantizer.run(setup.ref, path, cand.options)
        cand.path = path
        cand.proof = setup.evaluate(path)
        _judge(cand, setup.bar)
        _time(cand, float_runner, feed, setup.threads, seconds)
    except MdeployError as exc:  # a form onnxruntime cannot write for this model is a row of the table, not the end
        cand.status, cand.reason, cand.path = "failed", exc.message, None
    except Exception as exc:  # noqa: BLE001 - e.g. onnxruntime refusing to load a form it wrote: that form is out
        cand.status, cand.reason, cand.path = "failed", f"{type(exc).__name__}: {first_line(exc)}", None
    cand.seconds = time.perf_counter() - start


def _judge(cand: Candidate, bar: Bar | None) -> None:
    """The bar's accuracy terms on the candidate's proof (a speed-up term is judged on the model kept, by the verb's
    speed check); without them, the proof's own per-output tolerance, as every quantize judges it."""
    proof = cand.proof
    cand.metrics = {m: v for m in ("cosine", "top1", "accuracy-drop") if (v := proof.metric(m)) is not None}
    if bar is not None and bar.accuracy_criteria:
        cand.margin, missed = bar.check(proof)
        why = "; ".join(missed)
    else:
        cand.margin = 0.0 if bool(proof.comparison) else -1.0
        why = "outputs beyond the int8 tolerance"
    cand.status = "passed" if cand.accurate else "missed bar"
    if not cand.accurate:
        cand.reason = why


def _time(cand: Candidate, float_runner: Any, feed: dict, threads: int | None, seconds: float) -> None:
    """Median ms of the candidate and of the float model, run in turns (time_runs), at least 5 runs each."""
    runner = registry.open_runner(ModelRef(cand.path, Format.ONNX), "cpu", None, threads)
    pair = [(float_runner, feed), (runner, feed)]
    once = sum(sum(t) for t in time_runs(pair, warmup=1, runs=1))
    runs = max(5, min(500, int(seconds / max(once, 1e-6))))
    f, c = time_runs(pair, warmup=0, runs=runs)
    cand.float_ms, cand.latency_ms = float(np.median(f)) * 1000, float(np.median(c)) * 1000


def _slow_form(done: list[Candidate], setup: Setup, feed: dict) -> Form | None:
    """The fastest form tried so far with the weight nodes its profile shows slower in INT8 than in float kept float."""
    timed = [c for c in done if c.latency_ms and c.path is not None and not c.form.exclude]
    if not timed:
        return None
    best = max(timed, key=lambda c: (c.accurate, c.speedup or 0.0))
    try:
        slow = slow_nodes.slower_in_int8(setup.ref.path, best.path, feed, setup.threads)
    except Exception:  # noqa: BLE001 - a profile that cannot be read only means no such candidate
        return None
    names = tuple(s["node"] for s in slow)
    return replace(best.form, exclude=names) if names else None


def _runoff(done: list[Candidate], float_runner: Any, feed: dict, threads: int | None, seconds: float) -> None:
    """The fastest passing candidates, and the fastest of each mode (static and dynamic kernels differ most, and
    bursts of other work can reorder them in their separate timings), timed together with the float model, so that
    the one kept is chosen on figures from one run; skipped when the budget has no time left for it."""
    ranked = sorted((c for c in done if c.accurate and c.speedup), key=lambda c: -(c.speedup or 0))
    best = ranked[:RUNOFF] + [c for mode in ("static", "dynamic") for c in
                              [next((c for c in ranked if c.form.mode == mode), None)] if c and c not in ranked[:RUNOFF]]
    if len(best) < 2 or seconds < 0.5:
        return
    runners = [registry.open_runner(ModelRef(c.path, Format.ONNX), "cpu", None, threads) for c in best]
    models = [(float_runner, feed)] + [(r, feed) for r in runners]
    once = sum(sum(t) for t in time_runs(models, warmup=1, runs=1))
    runs = max(5, min(1000, int(seconds / max(once, 1e-6))))
    times = time_runs(models, warmup=0, runs=runs)
    float_ms = float(np.median(times[0])) * 1000
    for c, t in zip(best, times[1:]):
        c.float_ms, c.latency_ms = float_ms, float(np.median(t)) * 1000


def _keep(done: list[Candidate]) -> Candidate:
    """The fastest candidate that clears the bar; when none does, the one closest to it (written: the verb's accuracy
    repair starts from it when there is a bar to meet, else the report fails)."""
    written = [c for c in done if c.path is not None and c.proof is not None]
    passing = [c for c in written if c.accurate and c.speedup]
    kept = max(passing, key=lambda c: c.speedup or 0.0) if passing else max(written, key=lambda c: c.margin or -math.inf)
    for c in done:
        if c is kept:
            c.status = "kept"
            c.reason = "fastest that clears the bar" if passing else "no candidate clears the bar: the closest one"
        elif c.accurate and c.speedup and kept.speedup:
            c.status, c.reason = "passed", f"slower than the kept one ({c.speedup:.3f}x vs {kept.speedup:.3f}x)"
    return kept


def _record(report: Report, setup: Setup, done: list[Candidate], kept: Candidate, isa: dict[str, bool],
            pruned: list[str], stopped: str, seconds: float, budget: float) -> None:
    """The table, the kept form's details and notes in place of the defaults', the verdict, the recommendation."""
    for note in setup.first_result.notes:
        if note in report.notes:
            report.notes.remove(note)
    report.notes.extend(n for n in kept.result.notes if n not in report.notes)
    step = next(s for s in report.steps if s.name == "quantize")
    step.details = dict(kept.result.details)
    report.data["mode"] = kept.result.details.get("mode")
    speedup = kept.speedup or 0.0
    recommendation = "int8"
    repair = not kept.accurate and setup.bar is not None and bool(setup.bar.accuracy_criteria)
    if repair:  # the verb's accuracy repair takes over from here, and judges the bar on what it writes
        report.notes.append(f"no INT8 form tried clears the accuracy bar: the accuracy repair keeps the costliest nodes "
                            f"of the closest one ({kept.form.name}) in float")
    elif not kept.accurate:
        recommendation = "float"
        report.notes.append("WARNING: no INT8 form tried clears the accuracy bar: keep the float model "
                            "(or give --max-error: the accuracy repair keeps the costliest nodes in float until it holds)")
    elif speedup < 1.0:
        recommendation = "float"
        depthwise = " (its depthwise convolutions have no fast int8 kernel on x86)" if _has_depthwise(setup.ref.path) \
            and not isa["arm"] else ""
        report.notes.append(f"WARNING: no INT8 form beats the float model on this CPU{depthwise}: the fastest that "
                            f"clears the bar runs at {speedup:.2f}x of float; keep the float model")
    if stopped:
        report.notes.append(stopped)
    report.data["goal"] = {
        "goal": "latency", "budget_s": budget, "seconds": round(seconds, 2), "threads": setup.threads,
        "cpu": {"name": machine.cpu_name(), **machine.int8_isa()}, "pruned": pruned,
        "stopped_early": bool(stopped), "kept": kept.form.name, "speedup": _round(kept.speedup),
        "recommendation": recommendation, "repaired": repair, "candidates": [c.to_dict() for c in done],
    }
    if setup.bar is not None and setup.bar.accuracy_criteria and not repair:  # speed terms: the verb's speed check
        verdict = setup.bar.judge(kept.proof)
        report.data["max_error"] = verdict.to_dict()
        report.steps.append(verdict.step())
    report.steps.append(Step("goal latency", "done" if repair else "passed" if kept.accurate else "failed",
                             {"kept": kept.form.name, "speedup": _round(kept.speedup), "candidates": len(done),
                              **({"then": "accuracy repair"} if repair else {})}, seconds))


def _has_depthwise(path: Path) -> bool:
    from mdeploy.frameworks import onnx_models

    graph = onnx_models.load_proto(path).graph
    return any(n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute) for n in graph.node)
