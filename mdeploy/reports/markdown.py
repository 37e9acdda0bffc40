"""Markdown: a verb's report for a pull request, and a run's report for `$GITHUB_STEP_SUMMARY`.

GitHub caps a step summary at 1 MiB and refuses the whole summary above it, so a run's Markdown is kept under
MAX_BYTES (a quarter of that): the verdict and every failed gate always come first; long tables are cut with a
line that says how many rows were left out and where to find them (report.html, report.json).
"""

from __future__ import annotations

import re
from typing import Any

from mdeploy.reports import svg, view

MAX_BYTES = 256 * 1024
_TAG = re.compile(r"<(?=[A-Za-z/!?])")  # what could open an HTML tag; `<=` in a gate stays readable
PASS, FAIL = "✅", "❌"

COLUMNS = [
    ("output", "name"),
    ("max abs", "max_abs_error"),
    ("mean abs", "mean_abs_error"),
    ("max rel", "max_rel_error"),
    ("cosine", "cosine"),
    ("top-1", "top1_agreement"),
    ("NaN/Inf", None),
    ("result", None),
]


def _fmt(value: Any, key: str = "") -> str:
    if isinstance(value, float):
        return f"{value:.6f}" if key in ("cosine", "top1_agreement") else f"{value:.3g}"
    return "-" if value is None else str(value)


def comparison_rows(comparison: Any) -> list[list[str]]:
    """One row per output (the COLUMNS), from a Comparison or its dict."""
    d = comparison if isinstance(comparison, dict) else comparison.to_dict()
    rows = []
    for out in d.get("outputs", []):
        row = [_fmt(out.get(key), key) for _, key in COLUMNS if key]
        row.append(f"{out.get('ref_nonfinite', 0)}/{out.get('cand_nonfinite', 0)}")
        verdict = "pass" if out.get("passed") else "FAIL: " + "; ".join(out.get("reasons", []))
        row.append(verdict + "".join(f" (warning: {w})" for w in out.get("warnings", [])))
        rows.append(row)
    return rows


def _cell(text: Any) -> str:
    """A table cell: one line, pipes escaped, and no HTML (a name from a model file is text, not markup)."""
    return _TAG.sub("&lt;", " ".join(str(text).split()).replace("|", "\\|"))


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def _bar(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def _times(ratio: float | None) -> str:
    return f"{ratio:.2f}x" if ratio is not None else "-"


def runtime(record: dict[str, Any]) -> list[str]:
    """quantize's and inspect --runtime's census (what onnxruntime executes) and speed against the int8 bound."""
    census, speed = record.get("census"), record.get("speed")
    if not census:
        return []
    s = census["shares"]
    lines = ["", f"## What onnxruntime runs ({census['mode']}, {census.get('threads') or 'all'} thread(s))", "",
             f"Integer kernels: {s['integer']:.1%} of the time, {census['integer_mac_share']:.1%} of the MACs; "
             f"float {s['float']:.1%}, Q/DQ {s['q/dq']:.1%}, Cast {s['cast']:.1%}.", ""]
    lines += _table(["op", "kind", "nodes", "time", "MACs"],
                    [[r["op"], r["kind"], r["count"], f"{r['time_share']:.1%}", f"{r['mac_share']:.1%}" if r["macs"] else ""]
                     for r in census["ops"]])
    for f in census.get("float_nodes", []):
        lines.append(f"- float: `{f['node']}` ({f['op']}, {f['time_share']:.1%} of the time): {f['reason']}")
    if speed:
        bound = (f"; the int8 kernels allow {speed['bound_speedup']:.2f}x (reached {speed['of_bound']:.0%})"
                 if speed.get("bound_speedup") else "")
        lines += ["", f"Speed-up over float: {speed['speedup']:.2f}x ({speed['float_ms']:.3g} ms -> {speed['int8_ms']:.3g} ms "
                  f"at {speed.get('threads') or 'all'} thread(s)){bound}."]
    return lines


def generation(entries: list[dict[str, Any]]) -> list[str]:
    """Each proof by generation of a language model: its totals, and a row per prompt (view.generation_rows)."""
    lines: list[str] = []
    for g in entries:
        ppl = view.perplexity_line(g)
        lines += ["", f"## Generation: {g.get('step')} ({g.get('precision') or '-'}): token match "
                  f"{svg.number(view.as_float(g.get('token_match')), 3)}" + (f"; {ppl}" if ppl else ""), ""]
        lines += _table(view.GENERATION_COLUMNS, view.generation_rows(g))
    return lines


def verb(d: dict[str, Any]) -> str:
    """A single verb's report (validate --report x.md)."""
    lines = [f"# mdeploy {d['command']}: {'PASSED' if d.get('passed') else 'FAILED'}", ""]
    for key in ("reference", "candidate", "source", "output", "seed", "inputs_sha256"):
        if key in d:
            lines.append(f"- **{key}**: `{d[key]}`")
    for step in d.get("steps", []):
        lines.append(f"- step **{step['name']}**: {step['status']}")
    for comparison in d.get("comparisons", []):
        tolerance = (comparison.get("tolerance") or {}).get("text", "")
        lines += ["", f"## {comparison.get('label') or 'outputs'} ({tolerance})", ""]
        lines += _table([c for c, _ in COLUMNS], comparison_rows(comparison))
        for note in comparison.get("notes", []):
            lines.append(f"\n> {note}")
    lines += runtime(d.get("runtime") or {})
    lines += generation(view.models(d)[0]["generation"])
    for note in d.get("notes", []):
        lines.append(f"\n> {note}")
    versions = d.get("environment", {}).get("versions", {})
    lines += ["", "## Environment", "", ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    return "\n".join(lines)


class _Budget:
    """Lines added while they fit in MAX_BYTES (with room kept for the closing lines)."""

    def __init__(self, limit: int) -> None:
        self.lines: list[str] = []
        self.left = limit

    def add(self, *lines: str) -> bool:
        cost = sum(len(line.encode()) + 1 for line in lines)
        if cost > self.left:
            return False
        self.lines.extend(lines)
        self.left -= cost
        return True

    def table(self, header: list[str], rows: list[list[Any]], where: str) -> None:
        head = _table(header, [])
        if not self.add(*head):
            return
        for k, row in enumerate(rows):
            if not self.add(_table(header, [row])[2]):
                self.lines.append(f"\n_{len(rows) - k} more rows left out to stay under GitHub's summary limit; see {where}._")
                return


def run(d: dict[str, Any], limit: int = MAX_BYTES) -> str:
    """A run's report: verdict, gates table with pass/fail marks, figures per model, what changed since the baseline."""
    models = view.models(d)
    gates = [(m, g) for m in models for g in m.get("gates", [])]
    failed_gates = [(m, g) for m, g in gates if not g.get("passed")]
    failed_models = [m for m in models if not m.get("passed")]
    out = _Budget(limit - 512)
    pipeline = d.get("pipeline") or {}
    out.add(f"# mdeploy run: {PASS + ' PASSED' if d.get('passed') else FAIL + ' FAILED'}", "")
    out.add(f"Pipeline `{pipeline.get('path', '-')}` (sha256 `{str(pipeline.get('sha256', ''))[:12]}`): "
            f"{len(models)} model(s), {len(models) - len(failed_models)} passed; "
            f"{len(gates)} gate(s), {len(failed_gates)} failed.", "")
    errors = [(m, s) for m in models for s in view.failed_steps(m)]
    if errors:
        out.add("## Steps that failed", "")
        out.table(["model", "step", "status", "error"],
                  [[m["name"], s.get("name"), s.get("status"), s.get("error") or "-"] for m, s in errors], "report.json")
        out.add("")
    if gates:
        out.add("## Gates", "")
        ordered = failed_gates + [(m, g) for m, g in gates if g.get("passed")]  # failures first: they survive a cut
        out.table(["", "model", "gate", "measured", "bar", "note"],
                  [[PASS if g.get("passed") else FAIL, m["name"], f"`{g.get('gate')}`",
                    svg.number(view.as_float(g.get("measured")), 4) if g.get("measured") is not None else "not measured",
                    f"{g.get('op', '')} {_bar(g.get('bar'))}", g.get("reason") or ""] for m, g in ordered], "report.html")
        out.add("")
    figure_rows = []
    for m in models:
        base, _ = view.baseline_and_current(m)
        w = view.worst(view.judged(m))
        accuracy = (m.get("accuracy") or {}).get("candidate")
        for row in m.get("benchmark") or [{}]:
            lat = row.get("latency_ms") or {}
            is_base = row is base
            figure_rows.append([
                PASS if m.get("passed") else FAIL, m["name"],
                view.label(m, row.get("model")) + (" (baseline)" if is_base else ""),
                row.get("format", "-"), svg.size(view.as_float(row.get("size_bytes"))), svg.number(view.as_float(lat.get("p50"))),
                svg.number(view.as_float(lat.get("p99"))),
                _times(view.as_float((row.get("ratio_to_first") or {}).get("latency_p50"))) if not is_base else "-",
                "-" if is_base else svg.number(w["cosine"], 6), "-" if is_base else svg.number(w["max_abs"]),
                "-" if is_base or accuracy is None else svg.number(view.as_float(accuracy), 4),
            ])
    if figure_rows:
        out.add("## Figures per model", "")
        out.table(["", "model", "artifact", "format", "size", "p50 ms", "p99 ms", "p50 vs baseline", "cosine", "max abs",
                   "accuracy"], figure_rows, "report.html")
        out.add("")
    change_rows = [[m["name"], what, b, c, ch] for m in models for what, b, c, ch in view.changes(m)]
    if change_rows:
        out.add("## What changed since the baseline", "")
        out.table(["model", "", "baseline", "current", "change"], change_rows, "report.html")
        out.add("")
    generation_rows = [[m["name"], g.get("step"), *row] for m in models for g in m.get("generation") or []
                       for row in view.generation_rows(g, width=40)]
    if generation_rows:
        out.add("## Generation per prompt", "")
        out.table(["model", "step", *view.GENERATION_COLUMNS], generation_rows, "report.html")
        out.add("")
    step_rows = [[m["name"], s.get("name"), s.get("verb", ""), s.get("status"), svg.number(view.as_float(s.get("seconds")))]
                 for m in models for s in m.get("steps", [])]
    if step_rows and out.add("<details><summary>Steps</summary>", ""):
        out.table(["model", "step", "verb", "status", "seconds"], step_rows, "report.json")
        out.lines += ["", "</details>", ""]
    versions = {**(d.get("versions") or {}), **(d.get("environment") or {}).get("versions", {})}
    out.lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items())[:600], ""]
    return "\n".join(out.lines)
