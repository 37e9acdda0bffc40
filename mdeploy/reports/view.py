"""What the renderings of a report read: the models of a run (or one pseudo-model for a single verb's report), the
baseline and current artifact's figures, and what changed between them. Works on the report's JSON form, so that a
report read back from disk (a merge) renders exactly like one just made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mdeploy.reports import svg


def models(d: dict[str, Any]) -> list[dict[str, Any]]:
    """The models of a run report; for a single verb's report, one model holding its comparisons and benchmark rows."""
    if d.get("command") == "run":
        return list(d.get("models") or [])
    name = d.get("candidate") or d.get("output") or d.get("model") or d.get("command", "report")
    return [{
        "name": str(name),
        "passed": d.get("passed"),
        "baseline": d.get("reference") or d.get("source"),
        "artifacts": [],
        "steps": d.get("steps", []),
        "comparisons": d.get("comparisons", []),
        "accuracy": d.get("accuracy") if isinstance(d.get("accuracy"), dict) else None,
        "benchmark": d.get("models", []) if d.get("command") == "benchmark" else [],
        "generation": [{"step": "generate", **generation_summary(d["generation"])}] if d.get("generation") else [],
        "gates": [],
    }]


def generation_summary(g: dict[str, Any]) -> dict[str, Any]:
    """What the renderings show of a proof by generation (validation/generation.py's record): the totals and, per
    prompt, its token match, first divergence, the logits' cosine at prefill and its worst over the decode steps, and
    both continuations' text (a run report keeps this summary, not every step's figures)."""
    prompts = []
    for p in g.get("prompts") or []:
        cosines = [s.get("cosine") for s in p.get("steps") or []]
        prompts.append({"prompt": p.get("prompt") if p.get("prompt") is not None else " ".join(map(str, p.get("prompt_ids") or [])),
                        "token_match": p.get("token_match"), "first_divergence": p.get("first_divergence"),
                        "prefill_cosine": cosines[0] if cosines else None,
                        "decode_cosine": min(cosines[1:]) if len(cosines) > 1 else None,
                        "source_text": p.get("source_text"), "candidate_text": p.get("candidate_text")})
    return {"token_match": g.get("token_match"), "perplexity": g.get("perplexity"), "precision": g.get("precision"),
            "prompts": prompts}


GENERATION_COLUMNS = ["prompt", "token match", "first divergence", "prefill cosine", "worst decode cosine", "source says",
                      "candidate says"]


def generation_rows(entry: dict[str, Any], width: int = 60) -> list[list[str]]:
    """A row per prompt of a generation summary, the texts cut to `width` characters."""
    def cut(text: Any) -> str:
        text = "" if text is None else " ".join(str(text).split())
        return text if len(text) <= width else text[: width - 1] + "…"

    return [[cut(p["prompt"]), svg.number(as_float(p["token_match"]), 3),
             "-" if p["first_divergence"] is None else str(p["first_divergence"]),
             svg.number(as_float(p["prefill_cosine"]), 6), svg.number(as_float(p["decode_cosine"]), 6),
             cut(p["source_text"]), cut(p["candidate_text"])] for p in entry.get("prompts") or []]


def perplexity_line(entry: dict[str, Any]) -> str:
    ppl = entry.get("perplexity")
    if not ppl:
        return ""
    return (f"perplexity on {ppl.get('tokens')} tokens: source {svg.number(as_float(ppl.get('source')), 4)}, candidate "
            f"{svg.number(as_float(ppl.get('candidate')), 4)} (ratio {svg.number(as_float(ppl.get('ratio')), 4)})")


def _same(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    return a == b or Path(a).resolve() == Path(b).resolve()


def label(model: dict[str, Any], path: str | None) -> str:
    """An artifact's short name: the step that wrote it and its file name (`02-quantize tiny_int8.onnx`)."""
    if not path:
        return "-"
    for artifact in model.get("artifacts", []):
        if _same(artifact.get("path"), path):
            step, name = artifact.get("step", ""), Path(path).name
            return name if not step or name.startswith(step) else f"{step} {name}"
    return Path(path).name


def baseline_and_current(model: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The benchmark rows of the baseline (the first artifact) and of the current (last measured) artifact."""
    rows = model.get("benchmark") or []
    if not rows:
        return None, None
    base = next((r for r in rows if _same(r.get("model"), model.get("baseline"))), rows[0])
    current = rows[-1] if len(rows) > 1 else None
    return base, current


def as_float(value: Any) -> float | None:
    """JSON numbers, and the strings "inf"/"nan" the reports use for non-finite values."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def judged(model: dict[str, Any]) -> list[dict[str, Any]]:
    """The comparisons that say how far the current artifact is from the baseline: the last step's comparisons of the
    current artifact against the baseline, chosen as the gates choose them (pipeline/gates.py), so a later comparison
    of something else (a package step's server against the artifact it serves: 0 error by design) never shows as the
    model's error. A single verb's report (no artifacts) has one subject: its last step's comparisons."""
    comparisons = [c for c in model.get("comparisons") or [] if isinstance(c, dict)]
    artifacts = model.get("artifacts") or []
    if not artifacts:
        return comparisons[-1:]
    baseline, current = artifacts[0].get("path"), artifacts[-1].get("path")
    chosen: list[dict[str, Any]] = []
    for c in comparisons:
        if _same(c.get("candidate"), current) and (len(artifacts) == 1 or _same(c.get("reference"), baseline)):
            if chosen and chosen[0].get("step") != c.get("step"):
                chosen = []
            chosen.append(c)
    return chosen


def worst(comparison: dict[str, Any] | list[dict[str, Any]]) -> dict[str, float | None]:
    """Worst output of one comparison (or of several): the lowest cosine and top-1, the highest max abs error."""
    group = comparison if isinstance(comparison, list) else [comparison]
    outs = [o for c in group for o in c.get("outputs") or []]
    cos = [v for v in (as_float(o.get("cosine")) for o in outs) if v is not None]
    err = [v for v in (as_float(o.get("max_abs_error")) for o in outs) if v is not None]
    top = [v for v in (as_float(o.get("top1_agreement")) for o in outs) if v is not None]
    return {"cosine": min(cos, default=None), "max_abs": max(err, default=None), "top1": min(top, default=None)}


def _ratio(current: float | None, base: float | None) -> str:
    return f"{current / base:.2f}x" if current is not None and base else "-"


def changes(model: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(what, baseline, current, change) rows: size, latency, accuracy, and output agreement since the baseline."""
    rows: list[tuple[str, str, str, str]] = []
    base, current = baseline_and_current(model)
    if base is not None and current is not None:
        b_size, c_size = as_float(base.get("size_bytes")), as_float(current.get("size_bytes"))
        rows.append(("size", svg.size(b_size), svg.size(c_size), _ratio(c_size, b_size)))
        for key in ("p50", "p99"):
            b = as_float((base.get("latency_ms") or {}).get(key))
            c = as_float((current.get("latency_ms") or {}).get(key))
            rows.append((f"latency {key}", f"{svg.number(b)} ms", f"{svg.number(c)} ms", _ratio(c, b)))
    accuracy = model.get("accuracy")
    if accuracy:
        drop = as_float(accuracy.get("drop"))
        rows.append((f"accuracy ({accuracy.get('samples', '?')} samples)", svg.number(as_float(accuracy.get("reference")), 4),
                     svg.number(as_float(accuracy.get("candidate")), 4), f"{0.0 - drop + 0.0:+.4f}" if drop is not None else "-"))
    comparisons = judged(model)
    if comparisons:
        w = worst(comparisons)
        rows.append(("outputs: lowest cosine", "1", svg.number(w["cosine"], 6), "-"))
        rows.append(("outputs: max abs error", "0", svg.number(w["max_abs"]), "-"))
        if w["top1"] is not None:
            rows.append(("outputs: top-1 agreement", "1", svg.number(w["top1"], 4), "-"))
    return rows


def failed_steps(model: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in model.get("steps", []) if s.get("status") in ("failed", "error")]
