"""A self-contained HTML page for a report: one file that opens anywhere, fetches nothing, runs no script.

Plots are inline SVG (reports/svg.py): per model, size and latency bars over its artifacts, the latency
distribution of each artifact on a shared axis, and the abs-error histogram of each validated output. A
Content-Security-Policy of `default-src 'none'` makes "nothing is fetched" a rule the browser enforces, not
only a property of today's template. Every text from the report is escaped.
"""

from __future__ import annotations

import re
from html import escape
from typing import Any

from mdeploy.reports import svg, view

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;margin:0;background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:0 0 8px}h3{font-size:15px;margin:18px 0 6px;color:#333}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600;font-size:13px;vertical-align:2px}
.pass{background:#2e7d32}.fail{background:#c62828}
.mark-pass{color:#2e7d32;font-weight:700}.mark-fail{color:#c62828;font-weight:700}
section.model{background:#fff;border:1px solid #ddd;border-radius:6px;padding:14px 18px;margin:16px 0}
table{border-collapse:collapse;margin:4px 0 8px;font-size:13px}
th,td{border-bottom:1px solid #e3e3e3;padding:3px 10px;text-align:left;vertical-align:top}
th{background:#f3f3f3;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.failed td{background:#fdecea}
.plots{display:flex;flex-wrap:wrap;gap:8px 24px}.plot-box{margin:2px 0}.plot-box p{margin:2px 0;font-size:12px;color:#444}
code{font-size:12px;background:#f1f1f1;padding:0 3px;border-radius:3px}.muted{color:#666;font-size:12px}
details{margin:8px 0}
"""


def _e(value: Any) -> str:
    return escape("-" if value is None else str(value))


def _mark(passed: Any) -> str:
    return '<span class="mark-pass">✔ pass</span>' if passed else '<span class="mark-fail">✘ FAIL</span>'


def _table(header: list[str], rows: list[list[str]], failed: list[bool] | None = None, numeric: set[int] = frozenset()) -> str:
    """Cells are HTML already (escaped by the caller)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for k, row in enumerate(rows):
        cls = ' class="failed"' if failed and failed[k] else ""
        cells = "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _bar(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name) or "model"


def _gates(model: dict[str, Any]) -> str:
    gates = model.get("gates") or []
    if not gates:
        return ""
    rows = [[_mark(g.get("passed")), f"<code>{_e(g.get('gate'))}</code>",
             _e(svg.number(view.as_float(g.get("measured")), 4) if g.get("measured") is not None else "not measured"),
             _e(f"{g.get('op', '')} {_bar(g.get('bar'))}"), _e(g.get("reason") or "")] for g in gates]
    return "<h3>Gates</h3>" + _table(["", "gate", "measured", "bar", "note"], rows, [not g.get("passed") for g in gates], {2})


def _bars(model: dict[str, Any]) -> str:
    rows = model.get("benchmark") or []
    if not rows:
        return ""
    labels = [view.label(model, r.get("model")) for r in rows]
    sizes = [(n, view.as_float(r.get("size_bytes")), None) for n, r in zip(labels, rows)]
    lat = [(n, view.as_float((r.get("latency_ms") or {}).get("p50")), view.as_float((r.get("latency_ms") or {}).get("p99")))
           for n, r in zip(labels, rows)]
    name = model.get("name")
    size_plot = svg.bars(sizes, label=f"{name}: size per artifact", formatter=svg.size)
    latency_plot = svg.bars(lat, label=f"{name}: latency per artifact", formatter=lambda v: svg.number(v) + " ms",
                            whisker_name="p99")
    return ("<h3>Size and latency</h3><div class=\"plots\">"
            f'<div class="plot-box"><p>size on disk</p>{size_plot}</div>'
            f'<div class="plot-box"><p>latency p50, whisker to p99 (ms)</p>{latency_plot}</div></div>')


def _latency(model: dict[str, Any]) -> str:
    rows = [r for r in model.get("benchmark") or [] if r.get("latencies_ms")]
    if not rows:
        return ""
    samples = [s for r in rows for s in r["latencies_ms"]]
    # one axis for every artifact; a few slow outliers would squeeze the rest into one bin, so the axis ends at
    # 1.5x the highest p99 and slower runs are counted in the last bin (the caption says how many)
    p99s = [view.as_float((r.get("latency_ms") or {}).get("p99")) for r in rows]
    lo, hi = min(samples), max(samples)
    if all(p is not None for p in p99s):
        hi = min(hi, 1.5 * max(p99s))
    pad = (hi - lo) * 0.02 or max(hi * 0.02, 1e-3)
    lo, hi = max(lo - pad, 0.0), hi + pad
    plots = []
    for k, r in enumerate(rows):
        edges, counts = svg.linear_bins(r["latencies_ms"], lo, hi)
        lat = r.get("latency_ms") or {}
        name = view.label(model, r.get("model"))
        plot = svg.histogram(edges, counts, label=f"{model.get('name')}: latency of {name}", log_x=False, x_range=(lo, hi),
                             color=svg.PALETTE[k % len(svg.PALETTE)], unit="ms",
                             markers=[(m, view.as_float(lat.get(m))) for m in ("p50", "p99")])
        beyond = sum(1 for v in r["latencies_ms"] if v > hi)
        note = f"; {beyond} slower than {svg.number(hi)} ms counted in the last bin" if beyond else ""
        plots.append(f'<div class="plot-box"><p>{_e(name)}: {len(r["latencies_ms"])} of {_e(r.get("iterations"))} timed runs'
                     f"{_e(note)}</p>{plot}</div>")
    return "<h3>Latency distribution</h3><div class=\"plots\">" + "".join(plots) + "</div>"


def _errors(model: dict[str, Any]) -> str:
    parts = []
    for comparison in model.get("comparisons") or []:
        where = " ".join(p for p in (comparison.get("step"), comparison.get("label")) if p)
        if comparison.get("reference") and comparison.get("candidate"):
            where += f": {view.label(model, comparison['candidate'])} against {view.label(model, comparison['reference'])}"
        tolerance = comparison.get("tolerance") or {}
        atol = view.as_float(tolerance.get("atol"))
        plots = []
        for out in comparison.get("outputs") or []:
            hist = out.get("abs_error_histogram")
            max_abs, cosine = view.as_float(out.get("max_abs_error")), view.as_float(out.get("cosine"))
            caption = (f"{_e(out.get('name'))}: {_mark(out.get('passed'))} max abs {_e(svg.number(max_abs))}, "
                       f"cosine {_e(svg.number(cosine, 6))}")
            if not hist:
                plots.append(f'<div class="plot-box"><p>{caption}</p><p class="muted">no histogram recorded</p></div>')
                continue
            markers = [("max", view.as_float(out.get("max_abs_error")))] + ([("atol", atol)] if atol else [])
            plot = svg.histogram(hist["edges"], hist["counts"], label=f"{model.get('name')}: abs error of {out.get('name')}",
                                 log_x=True, markers=[(n, v) for n, v in markers if v], unit="|reference - candidate|")
            plots.append(f'<div class="plot-box"><p>{caption}</p>{plot}</div>')
        reasons = [f"<li>{_e(o.get('name'))}: {_e('; '.join(o.get('reasons', [])))}</li>"
                   for o in comparison.get("outputs") or [] if not o.get("passed")]
        notes = "".join(f"<li>{_e(n)}</li>" for n in comparison.get("notes", []))
        parts.append(f"<p>{_e(where or 'outputs')} — {_e(tolerance.get('text', ''))}</p>"
                     + (f"<ul>{''.join(reasons)}{notes}</ul>" if reasons or notes else "")
                     + '<div class="plots">' + "".join(plots) + "</div>")
    return "<h3>Output error (|reference - candidate| per validated output)</h3>" + "".join(parts) if parts else ""


def _changes(model: dict[str, Any]) -> str:
    rows = view.changes(model)
    if not rows:
        return ""
    return "<h3>What changed since the baseline</h3>" + _table(["", "baseline", "current", "change"],
                                                               [[_e(c) for c in row] for row in rows], numeric={1, 2, 3})


def _steps(model: dict[str, Any]) -> str:
    steps = model.get("steps") or []
    if not steps:
        return ""
    rows = [[_e(s.get("name")), _e(s.get("verb", "")), _e(s.get("status")), _e(svg.number(view.as_float(s.get("seconds")))),
             _e(s.get("error") or "")] for s in steps]
    return "<h3>Steps</h3>" + _table(["step", "verb", "status", "seconds", "error"], rows,
                                     [s.get("status") in ("failed", "error") for s in steps], {3})


def _generation(model: dict[str, Any]) -> str:
    """Each proof by generation: its totals and a row per prompt, a prompt whose tokens diverged marked."""
    out = ""
    for g in model.get("generation") or []:
        ppl = view.perplexity_line(g)
        rows = view.generation_rows(g, width=80)
        out += (f"<h3>Generation: {_e(g.get('step'))} ({_e(g.get('precision') or '-')})</h3>"
                f"<p>token match {_e(svg.number(view.as_float(g.get('token_match')), 3))}{_e('; ' + ppl if ppl else '')}</p>"
                + _table(view.GENERATION_COLUMNS, [[_e(c) for c in r] for r in rows],
                         [p.get("first_divergence") is not None for p in g.get("prompts") or []], {1, 2, 3, 4}))
    return out


def _model(model: dict[str, Any]) -> str:
    name = str(model.get("name"))
    head = f'<h2>{_mark(model.get("passed"))} {_e(name)}</h2>'
    if model.get("baseline"):
        head += f'<p class="muted">baseline: <code>{_e(model["baseline"])}</code></p>'
    body = (_gates(model) + _bars(model) + _latency(model) + _errors(model) + _generation(model) + _changes(model)
            + _steps(model))
    return f'<section class="model" id="model-{_e(_slug(name))}">{head}{body}</section>'


def _summary(d: dict[str, Any], models: list[dict[str, Any]]) -> str:
    if d.get("command") != "run":
        return ""
    rows = []
    for m in models:
        gates = m.get("gates") or []
        base, current = view.baseline_and_current(m)
        ratio = (current or {}).get("ratio_to_first") or {}
        rows.append([_mark(m.get("passed")), f'<a href="#model-{_e(_slug(str(m.get("name"))))}">{_e(m.get("name"))}</a>',
                     _e(f"{sum(1 for g in gates if g.get('passed'))} / {len(gates)}"),
                     _e(svg.number(view.as_float(ratio.get("size")))), _e(svg.number(view.as_float(ratio.get("latency_p50"))))])
    return "<h3>Models</h3>" + _table(["", "model", "gates passed", "size ratio", "p50 ratio"], rows,
                                      [not m.get("passed") for m in models], {2, 3, 4})


def page(d: dict[str, Any]) -> str:
    """The whole page for a report's JSON form."""
    models = view.models(d)
    passed = d.get("passed")
    verdict = "PASSED" if passed else "FAILED"
    title = f"mdeploy {d.get('command')}: {verdict}"
    pipeline = d.get("pipeline") or {}
    meta = []
    if pipeline:
        digest = str(pipeline.get("sha256") or "")[:16]
        meta.append(f"pipeline <code>{_e(pipeline.get('path'))}</code> (sha256 <code>{_e(digest)}</code>)")
    if d.get("run_dir"):
        meta.append(f"run folder <code>{_e(d['run_dir'])}</code>")
    notes = "".join(f"<li>{_e(n)}</li>" for n in d.get("notes", []))
    env = d.get("environment") or {}
    versions = ", ".join(f"{k} {v}" for k, v in {**(d.get("versions") or {}), **env.get("versions", {})}.items())
    hashes = d.get("inputs_sha256")
    hash_rows = ([[f"<code>{_e(p)}</code>", f"<code>{_e(h)}</code>"] for p, h in hashes.items()]
                 if isinstance(hashes, dict) else [])
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>"
        f'<h1>mdeploy {_e(d.get("command"))} <span class="badge {"pass" if passed else "fail"}">{verdict}</span></h1>'
        + (f"<p>{' · '.join(meta)}</p>" if meta else "")
        + (f"<ul>{notes}</ul>" if notes else "")
        + _summary(d, models)
        + "".join(_model(m) for m in models)
        + f'<h3>Environment</h3><p class="muted">{_e(versions)}<br>{_e(env.get("platform", ""))}</p>'
        + (f"<details><summary>Input files (sha256)</summary>{_table(['file', 'sha256'], hash_rows)}</details>"
           if hash_rows else "")
        + "</main></body></html>\n"
    )
