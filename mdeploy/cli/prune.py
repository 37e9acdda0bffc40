"""`mdeploy prune SRC -o OUT.onnx`: structured pruning (or masks), recovered by distillation, proved on data."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape

from mdeploy.cli.common import show_comparisons, stdout, verdict
from mdeploy.cli.generate import command as _command
from mdeploy.verbs import prune as verb

if TYPE_CHECKING:
    from mdeploy.reports.report import Report


def _show(report: Report) -> None:
    d = report.data
    stdout.print(f"[bold]pruned[/] {escape(d['source'])} -> {escape(d['output'])} ({d['method']})")
    for note in report.notes:
        style = "bold red" if note.startswith("WARNING") else "dim"
        stdout.print(f"  [{style}]{escape(note)}[/]")
    rows = []
    if d.get("parameters"):
        p = d["parameters"]
        rows.append(("parameters", f"{p['before']:,}", f"{p['after']:,} ({p['nonzero_after']:,} nonzero)", p["ratio"]))
    if d.get("macs"):
        m = d["macs"]
        rows.append(("MACs / sample", f"{m['before']:,}", f"{m['after']:,}", m["ratio"]))
    if d.get("size") and "before_bytes" in d["size"]:
        s = d["size"]
        rows.append((f"{s['format']} file", f"{s['before_bytes'] / 1024:.1f} KiB", f"{s['after_bytes'] / 1024:.1f} KiB",
                     s["ratio"]))
    if d.get("latency"):
        lat = d["latency"]
        rows.append((f"latency (ort, batch 1, {lat['threads']} threads)", f"{lat['before_ms']:.3f} ms", f"{lat['after_ms']:.3f} ms",
                     lat["ratio"]))
    for name, before, after, ratio in rows:
        stdout.print(f"  {name:<36} {before:>16} -> {after:<28} {ratio:.3f}x")
    if d.get("heads"):
        stdout.print("  attention heads: " + ", ".join(f"{name} {h['before']}->{h['after']}" for name, h in d["heads"].items()))
    if d.get("layers_changed"):
        stdout.print("  layers changed (in, out): " + ", ".join(
            f"{c['layer']} {c['before']}->{c['after']}" for c in d["layers_changed"]))
    acc = d.get("accuracy")
    if acc:
        stdout.print(f"accuracy on {acc['samples']} labelled samples: unpruned {acc['before']:.4f} -> pruned {acc['after']:.4f} "
                     f"(drop {acc['drop'] * 100:+.2f} points)")
    proof = d.get("proof")
    if proof:
        for o in proof["comparison"]["outputs"]:
            top1 = f", top-1 agreement {o['top1_agreement']:.4f}" if o.get("top1_agreement") is not None else ""
            stdout.print(f"vs unpruned on {escape(proof['data'])}: {escape(o['name'])} cosine {o['cosine']:.5f}{top1}")
    show_comparisons(report)
    verdict(report, f"wrote {d['output']}" + (f" and {d['weights']}" if d.get("weights") else ""))


command = _command(verb, _show)
