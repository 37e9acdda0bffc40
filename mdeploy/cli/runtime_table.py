"""The short terminal form of a precision census and speed check (report.data["runtime"]), for quantize and
`inspect --runtime`; --json and the reports carry the whole record."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from mdeploy.cli.common import stdout

TOP_OPS = 6
TOP_FLOAT = 3


def show(record: dict[str, Any] | None) -> None:
    if not record:
        return
    c = record.get("census") or {}
    if c:
        s = c["shares"]
        stdout.print(
            f"[bold]what onnxruntime runs[/] ({c['mode']}, {c['threads'] or 'all'} thread(s), {c['runs']} profiled runs): "
            f"integer {s['integer']:.0%} of the time and {c['integer_mac_share']:.0%} of the MACs; float {s['float']:.0%}, "
            f"Q/DQ {s['q/dq']:.0%}, Cast {s['cast']:.0%}"
        )
        table = Table(show_edge=False, pad_edge=False, box=None)
        for column in ("op", "kind", "nodes", "time", "MACs"):
            table.add_column(column, justify="left" if column in ("op", "kind") else "right")
        for row in c["ops"][:TOP_OPS]:
            macs = f"{row['mac_share']:.0%}" if row["macs"] else ""
            table.add_row(escape(row["op"]), row["kind"], str(row["count"]), f"{row['time_share']:.0%}", macs)
        stdout.print(table)
        for f in c["float_nodes"][:TOP_FLOAT]:
            stdout.print(f"  float: {escape(f['node'])} ({f['op']}, {f['time_share']:.0%} of the time): {escape(f['reason'])}")
        if len(c["float_nodes"]) > TOP_FLOAT:
            stdout.print(f"  ... and {len(c['float_nodes']) - TOP_FLOAT} more float GEMM/Conv nodes (--json lists them)")
        for note in c.get("notes") or []:
            stdout.print(f"  [yellow]{escape(note)}[/]")
    speed = record.get("speed")
    if speed:
        line = (f"speed at {speed['threads'] or 'all'} thread(s): float {speed['float_ms']:.3g} ms, {speed.get('kind', 'int8')} {speed['int8_ms']:.3g} ms: "
                f"{speed['speedup']:.2f}x")
        if speed.get("bound_speedup"):
            line += (f"; this CPU's int8 kernels allow {speed['bound_speedup']:.2f}x for this model "
                     f"(reached {speed['of_bound']:.0%})")
        stdout.print(line)
    cpu = record.get("cpu")
    if cpu:
        stdout.print(f"[dim]int8 on this CPU: {escape(cpu['int8_path'])}: {escape(cpu['implies'])}[/]")
