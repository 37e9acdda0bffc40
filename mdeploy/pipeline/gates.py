"""Pipeline gates: `metric <= bar` / `metric >= bar`, judged per model against the baseline (the first artifact).

A gate is a CI verdict, so it is never quietly passed: every gate is evaluated even when an earlier one failed, and
a gate whose metric no step measured FAILS with a reason that names the step that would measure it (Olive's goals
only filter candidates and Optimum downgrades a failed validation to a warning; here both are failures).

Gates read the run report's model entry (plain JSON, see execute.py), not live objects, so that the same verdict
can be recomputed from a saved report.
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any

from mdeploy.errors import InputError, shown
from mdeploy.pipeline.plan import Gate

# metric -> (what it is, the step that measures it)
METRICS: dict[str, tuple[str, str]] = {
    "accuracy-drop": ("task accuracy of the quantized model's source minus its own, against labels",
                      "a quantize step whose eval (or calib) data holds a `labels` array, or with labels:"),
    "accuracy": ("task accuracy of the current artifact against labels",
                 "a quantize step whose eval (or calib) data holds a `labels` array, or with labels:"),
    "cosine": ("worst output's cosine similarity, current artifact vs the baseline",
               "a validate step after the last step that writes a model"),
    "top1": ("worst class-score output's top-1 agreement, current artifact vs the baseline",
             "a validate step after the last step that writes a model (on an output that is class scores)"),
    "max-abs": ("worst absolute error of any output value, current artifact vs the baseline",
                "a validate step after the last step that writes a model"),
    "latency-ratio": ("benchmark p50 latency of the current artifact / the baseline's",
                      "a benchmark step after the last step that writes a model"),
    "size-ratio": ("size on disk of the current artifact / the baseline's", "any step that writes a model"),
    "p50-ms": ("median latency of the current artifact, milliseconds",
               "a benchmark step after the last step that writes a model"),
    "p99-ms": ("99th-percentile latency of the current artifact, milliseconds",
               "a benchmark step after the last step that writes a model"),
    "token-match": (("language models: share of greedily generated tokens the current artifact agrees on with the "
                     "baseline, position by position"),
                    ("a validate step with generate: true after the last step that writes a model (or convert's own "
                     "proof of a language model)")),
    "perplexity-ratio": ("language models: perplexity of the current artifact / the baseline's on a text",
                         "a validate step with generate: true and text: after the last step that writes a model"),
    "decode-tokens-per-s": ("language models: tokens per second the current artifact generates after the prompt",
                            "a benchmark step after the last step that writes a model"),
}
OPS = ("<=", ">=")
Measured = tuple[float | None, str | None, str | None]  # (value, the step that measured it, why it is missing)
_GATE = re.compile(r"^\s*(?P<metric>[A-Za-z0-9_-]+)\s*(?P<op><=|>=|=<|=>|<|>|==|=)\s*(?P<bar>\S+)\s*$")


def parse(text: str, where: str = "") -> Gate:
    """`accuracy-drop <= 0.01` as a Gate; an InputError naming `where`, the nearest metric, or the operators allowed."""
    at = f"{where}: " if where else ""
    if not isinstance(text, str):
        raise InputError(f"{at}expected a gate such as 'cosine >= 0.99', got {shown(text)}")
    match = _GATE.match(text)
    if not match:
        raise InputError(f"{at}expected METRIC <= BAR or METRIC >= BAR, got {shown(text)}",
                         hint="metrics: " + ", ".join(METRICS))
    metric, op, raw = match["metric"].lower().replace("_", "-"), match["op"], match["bar"]
    if metric not in METRICS:
        near = difflib.get_close_matches(metric, list(METRICS), n=1)
        raise InputError(f"{at}unknown gate metric '{match['metric']}'" + (f"; did you mean '{near[0]}'?" if near else ""),
                         hint="metrics: " + ", ".join(METRICS))
    if op not in OPS:
        raise InputError(f"{at}gates compare with <= or >=, got '{op}' in {shown(text)}")
    try:
        bar = float(raw.rstrip("%")) / (100.0 if raw.endswith("%") else 1.0)
    except ValueError:
        raise InputError(f"{at}the bar of {shown(text)} is not a number: {shown(raw)}") from None
    if not math.isfinite(bar):
        raise InputError(f"{at}the bar of {shown(text)} must be a finite number")
    return Gate(text=text.strip(), metric=metric, op=op, bar=bar, where=where)


def holds(op: str, measured: float, bar: float) -> bool:
    return measured <= bar if op == "<=" else measured >= bar


def evaluate(gates: list[Gate], model: dict[str, Any]) -> list[dict[str, Any]]:
    """Every gate against one model's entry of the run report (`baseline`, `artifacts`, `comparisons`, `accuracy`,
    `benchmark`); one dict per gate, in order: gate, metric, op, bar, measured, passed, reason, step."""
    results = []
    for gate in gates:
        measured, step, reason = measure(gate.metric, model)
        entry: dict[str, Any] = {"gate": gate.text, "metric": gate.metric, "op": gate.op, "bar": gate.bar,
                                 "measured": measured, "passed": False, "reason": reason, "step": step}
        if measured is not None and not math.isfinite(measured):
            entry.update(measured=None, reason=f"{gate.metric} measured {measured} (not a finite number)")
        elif measured is not None:
            entry["passed"] = holds(gate.op, measured, gate.bar)
            if not entry["passed"]:
                entry["reason"] = f"{gate.metric} {_fmt(measured)} does not meet {gate.op} {_fmt(gate.bar)}" + (
                    f" (measured by {step})" if step else "")
        results.append(entry)
    return results


def measure(metric: str, model: dict[str, Any]) -> Measured:
    """(value, the step that measured it, why it is missing) for one metric of one model entry."""
    artifacts = model.get("artifacts") or []
    if not artifacts:
        return None, None, f"not measured: no step wrote a model to judge; {metric} needs {METRICS[metric][1]}"
    baseline, current = artifacts[0], artifacts[-1]
    if metric == "size-ratio":
        if not baseline.get("size_bytes") or current.get("size_bytes") is None:
            return None, None, "not measured: the artifact sizes are unknown"
        return current["size_bytes"] / baseline["size_bytes"], current.get("step"), None
    if metric in ("accuracy", "accuracy-drop"):
        acc = model.get("accuracy")
        if not acc:
            return None, None, f"not measured: no step measured task accuracy; add {METRICS[metric][1]}"
        value = acc.get("candidate") if metric == "accuracy" else acc.get("drop")
        return (None if value is None else float(value)), acc.get("step"), None
    if metric in ("cosine", "top1", "max-abs"):
        return _from_comparisons(metric, model, baseline, current)
    if metric in ("token-match", "perplexity-ratio"):
        return _from_generation(metric, model, baseline, current)
    return _from_benchmark(metric, model, baseline, current)


def _from_comparisons(metric: str, model: dict[str, Any], baseline: dict, current: dict) -> Measured:
    """The last comparison of the current artifact against the baseline. With a single artifact (the baseline is the
    thing being judged), its last comparison against anything counts: convert's own validation against the source,
    or a validate step against the source."""
    single = len(model.get("artifacts") or []) == 1
    chosen: list[dict] = []
    for comparison in model.get("comparisons") or []:
        against_baseline = single or _same(comparison.get("reference"), baseline["path"])
        if _same(comparison.get("candidate"), current["path"]) and against_baseline:
            if chosen and chosen[0].get("step") != comparison.get("step"):
                chosen = []
            chosen.append(comparison)
    if not chosen:
        return None, None, (f"not measured: no step compared the current artifact ({Path(current['path']).name}) with the "
                            f"baseline; add {METRICS[metric][1]}")
    outputs = [o for c in chosen for o in c.get("outputs") or []]
    step = chosen[0].get("step")
    if metric == "cosine":
        values = [_num(o.get("cosine")) for o in outputs]
        return (min(values), step, None) if values else (None, step, "not measured: the comparison has no outputs")
    if metric == "max-abs":
        values = [_num(o.get("max_abs_error")) for o in outputs]
        return (max(values), step, None) if values else (None, step, "not measured: the comparison has no outputs")
    values = [_num(o["top1_agreement"]) for o in outputs if o.get("top1_agreement") is not None]
    if not values:
        return None, step, (f"not measured: {step} compared no output that is class scores; name one with "
                            "classifier-output in the validate step")
    return min(values), step, None


def _from_generation(metric: str, model: dict[str, Any], baseline: dict, current: dict) -> Measured:
    """The last proof by generation of the current artifact against the baseline (with a single artifact, against
    anything: convert's own proof against the source, or a validate step's)."""
    single = len(model.get("artifacts") or []) == 1
    found = [g for g in model.get("generation") or [] if _same(g.get("candidate"), current["path"])
             and (single or _same(g.get("reference"), baseline["path"]))]
    if not found:
        return None, None, (f"not measured: no step compared what the current artifact ({Path(current['path']).name}) "
                            f"generates with the baseline; add {METRICS[metric][1]}")
    last = found[-1]
    if metric == "token-match":
        return float(last["token_match"]), last.get("step"), None
    ratio = (last.get("perplexity") or {}).get("ratio")
    if ratio is None:
        return None, last.get("step"), f"not measured: {last.get('step')} was given no text; add {METRICS[metric][1]}"
    return float(ratio), last.get("step"), None


def _from_benchmark(metric: str, model: dict[str, Any], baseline: dict, current: dict) -> Measured:
    rows = model.get("benchmark") or []
    cur = next((r for r in reversed(rows) if _same(r.get("model"), current["path"])), None)
    if cur is None:
        return None, None, (f"not measured: no benchmark measured the current artifact ({Path(current['path']).name}); "
                            f"add {METRICS[metric][1]}")
    step = cur.get("step")
    if metric == "decode-tokens-per-s":
        if cur.get("decode_tokens_per_s") is None:
            return None, step, (f"not measured: {step} timed {Path(current['path']).name} as one forward pass; "
                                "decode speed is measured on language-model folders (onnxruntime-genai)")
        return float(cur["decode_tokens_per_s"]), step, None
    if metric in ("p50-ms", "p99-ms"):
        return float(cur["latency_ms"][metric[:3]]), step, None
    base = next((r for r in rows if _same(r.get("model"), baseline["path"]) and r.get("step") == step), None)
    if base is None:
        return None, step, f"not measured: {step} did not benchmark the baseline ({Path(baseline['path']).name}) beside it"
    if not base["latency_ms"]["p50"]:
        return None, step, "not measured: the baseline's p50 latency is 0"
    return cur["latency_ms"]["p50"] / base["latency_ms"]["p50"], step, None


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, ValueError):
        return str(a) == str(b)


def _num(value: Any) -> float:
    return float(value)  # "nan"/"inf" strings (compare._json_number) become floats that fail every bar


def _fmt(value: float) -> str:
    return f"{value:.6g}"


__all__ = ["METRICS", "OPS", "parse", "evaluate", "measure", "holds"]
