"""Plots as inline SVG, drawn by hand: the HTML report stays one self-contained file (no scripts, no fonts, no fetches).

Three kinds are enough for a report: a histogram over fixed bins (abs error on a log axis, latency on a linear one),
and horizontal bars with an optional whisker (size, latency p50 with p99). Every mark carries a `<title>`, which
browsers show as a tooltip without any script. Text is escaped; numbers are formatted here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

# Colours readable on white and by the common colour-blind types; the page's CSS refers to the same classes.
PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756", "#72b7b2", "#9d755d", "#bab0ac")
FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif" font-size="11"'


def number(value: float | None, digits: int = 3) -> str:
    """Short human form: 0.000123 -> 1.23e-04, 1234.5 -> 1.23e+03, 12.3456 -> 12.3."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if value == 0:
        return "0"
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude < 1e-3 or magnitude >= 1e5:
        return f"{value:.{digits - 1}e}"
    text = f"{value:.{digits}g}"
    while float(text) in (1.0, -1.0) and float(text) != value and digits < 17:  # a cosine of 0.9999996 is not "1"
        digits += 1
        text = f"{value:.{digits}g}"
    return text


def size(value: float | None) -> str:
    """Bytes as B / KiB / MiB / GiB."""
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return "-"  # pragma: no cover


def _svg(width: int, height: int, label: str, body: list[str]) -> str:
    return (
        f'<svg class="plot" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}" {FONT}>'
        f"<title>{escape(label)}</title>" + "".join(body) + "</svg>"
    )


def _text(x: float, y: float, text: str, anchor: str = "start", cls: str = "", extra: str = "", tip: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    title = f"<title>{escape(tip)}</title>" if tip else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{klass}{extra}>{escape(text)}{title}</text>'


def _nice_max(value: float) -> float:
    """The smallest 1/2/5 x 10^k at or above `value` (the top of a count or time axis)."""
    if value <= 0:
        return 1.0
    base = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * base >= value:
            return step * base
    return 10 * base  # pragma: no cover


def histogram(
    edges: Sequence[float],
    counts: Sequence[int],
    *,
    label: str,
    log_x: bool,
    color: str = PALETTE[0],
    markers: Sequence[tuple[str, float]] = (),
    x_range: tuple[float, float] | None = None,
    unit: str = "",
    width: int = 560,
    height: int = 170,
) -> str:
    """Bars over bins `edges[i]..edges[i+1]`. With `log_x`, a first bin starting at 0 is drawn as its own "0" slot
    left of the log axis, and the axis is trimmed to the bins that hold anything. `markers` are labelled vertical
    lines (p50, p99). `x_range` fixes a linear axis so that several plots share it."""
    left, right, top, bottom = 44, 12, 18, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    n = len(counts)
    if n == 0 or len(edges) != n + 1:
        return _svg(width, 40, label, [_text(left, 24, "no data")])
    filled = [i for i, c in enumerate(counts) if c]
    if log_x:
        first = min(filled, default=0)
        last = max(filled, default=n - 1)
        zero_slot = edges[0] <= 0 and first == 0
        lo_bin = max(1, first - 1) if edges[0] <= 0 else max(0, first - 1)
        hi_bin = min(n - 1, last + 1)
        lo, hi = math.log10(edges[lo_bin]), math.log10(edges[hi_bin + 1])
        slot = plot_w / (hi_bin - lo_bin + 1 + (1 if zero_slot else 0)) if hi > lo else plot_w
        x0 = left + (slot if zero_slot else 0)
        span = (plot_w - (slot if zero_slot else 0)) / (hi - lo) if hi > lo else 1.0

        def x_of(v: float) -> float:
            return x0 + (math.log10(v) - lo) * span

        bins = [(i, x_of(edges[i]), x_of(edges[i + 1])) for i in range(lo_bin, hi_bin + 1)]
        if zero_slot:
            bins.insert(0, (0, float(left), float(left) + slot))
        ticks = [(x_of(10.0**k), f"1e{k}") for k in range(math.ceil(lo), math.floor(hi) + 1)]
        if zero_slot:  # the "0" slot's label, and no decade label crowding it
            ticks = [(x, t) for x, t in ticks if x - (left + slot / 2) > 28]
            ticks.insert(0, (left + slot / 2, "0"))
    else:
        lo, hi = x_range if x_range is not None else (edges[0], edges[-1])
        span = plot_w / (hi - lo) if hi > lo else 1.0

        def x_of(v: float) -> float:
            return left + (v - lo) * span

        bins = [(i, x_of(edges[i]), x_of(edges[i + 1])) for i in range(n)]
        ticks = [(x_of(lo + (hi - lo) * k / 4), number(lo + (hi - lo) * k / 4)) for k in range(5)]
    top_count = _nice_max(max(counts))
    body = [f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#555"/>',
            f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#555"/>',
            _text(left - 4, top + 4, number(top_count), "end"), _text(left - 4, top + plot_h, "0", "end"),
            _text(left + plot_w, top - 6, f"{sum(counts)} values", "end", extra=' fill="#555"')]
    for x, text in ticks:
        body.append(f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 4}" stroke="#555"/>')
        body.append(_text(x, top + plot_h + 15, text, "middle"))
    if unit:
        body.append(_text(left + plot_w, height - 2, unit, "end", extra=' fill="#555"'))
    for i, x1, x2 in bins:
        if not counts[i]:
            continue
        h = max(plot_h * counts[i] / top_count, 1.0)
        tip = f"{number(edges[i])} .. {number(edges[i + 1])}{(' ' + unit) if unit else ''}: {counts[i]}"
        body.append(f'<rect class="bar" x="{x1 + 0.5:.1f}" y="{top + plot_h - h:.1f}" width="{max(x2 - x1 - 1, 1):.1f}" '
                    f'height="{h:.1f}" fill="{color}"><title>{escape(tip)}</title></rect>')
    for name, value in markers:
        if value is None or not lo <= (math.log10(value) if log_x and value > 0 else value) <= hi:
            continue
        x = x_of(value)
        body.append(f'<line class="marker" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#222" '
                    f'stroke-dasharray="3 2"><title>{escape(f"{name} {number(value)} {unit}")}</title></line>')
        near_end = x > left + plot_w * 0.7  # label on the left of the line, so that it stays inside the plot
        body.append(_text(x - 3 if near_end else x + 3, top + 9, f"{name} {number(value)}", "end" if near_end else "start",
                          extra=' fill="#222"'))
    return _svg(width, height, label, body)


def linear_bins(samples: Sequence[float], lo: float, hi: float, bins: int = 40) -> tuple[list[float], list[int]]:
    """Edges and counts of `samples` over `bins` equal bins from lo to hi (values outside go to the end bins)."""
    if hi <= lo:
        hi = lo + max(abs(lo) * 1e-3, 1e-6)
    width = (hi - lo) / bins
    edges = [lo + i * width for i in range(bins + 1)]
    counts = [0] * bins
    for s in samples:
        counts[min(max(int((s - lo) / width), 0), bins - 1)] += 1
    return edges, counts


def bars(
    rows: Sequence[tuple[str, float | None, float | None]],
    *,
    label: str,
    formatter=number,
    whisker_name: str = "",
    width: int = 560,
) -> str:
    """Horizontal bars, one per (name, value, whisker) row; the whisker (e.g. p99 beside p50) is a thin line to it."""
    name_w, value_w, row_h, top = 200, 170, 22, 6
    plot_w = width - name_w - value_w
    height = top * 2 + row_h * max(len(rows), 1)
    scale_max = max([v for _, v, _ in rows if v is not None] + [w for _, _, w in rows if w is not None] + [0.0])
    scale = plot_w / scale_max if scale_max > 0 else 0.0
    body = []
    for k, (name, value, whisker) in enumerate(rows):
        y = top + k * row_h
        short = name if len(name) <= 30 else "…" + name[-29:]
        body.append(_text(name_w - 6, y + 15, short, "end", extra=' fill="#222"', tip=name))
        if value is None:
            body.append(_text(name_w + 4, y + 15, "not measured", extra=' fill="#888"'))
            continue
        w = max(value * scale, 1.0)
        body.append(f'<rect class="bar" x="{name_w}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" '
                    f'fill="{PALETTE[k % len(PALETTE)]}"><title>{escape(f"{name}: {formatter(value)}")}</title></rect>')
        text = formatter(value)
        end = w
        if whisker is not None and whisker > value:
            wx = name_w + whisker * scale
            body.append(f'<line class="whisker" x1="{name_w + w:.1f}" y1="{y + row_h / 2:.1f}" x2="{wx:.1f}" '
                        f'y2="{y + row_h / 2:.1f}" stroke="#222"/>'
                        f'<line x1="{wx:.1f}" y1="{y + 6}" x2="{wx:.1f}" y2="{y + row_h - 6}" stroke="#222"/>')
            text += f" ({whisker_name} {formatter(whisker)})"
            end = whisker * scale
        body.append(_text(name_w + end + 5, y + 15, text, extra=' fill="#222"'))
    return _svg(width, height, label, body)
