"""`mdeploy validate REF CAND`: prove two models compute the same thing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mdeploy.cli.common import show_comparisons, stdout, verdict
from mdeploy.cli.generate import command as _command
from mdeploy.verbs import validate as verb

if TYPE_CHECKING:
    from mdeploy.reports.report import Report


def _show(report: Report) -> None:
    show_comparisons(report)
    acc = report.data.get("accuracy")
    if acc:
        stdout.print(f"accuracy on {acc['samples']} labelled samples: reference {acc['reference']:.4f}, candidate "
                     f"{acc['candidate']:.4f} (drop {acc['drop'] * 100:+.2f} points)")
    data = report.data
    verdict(report, f"{data['candidate']}{_on(report, 'candidate')} against {data['reference']}{_on(report, 'reference')}")


def _on(report: Report, side: str) -> str:
    """` (cuda)` after a model's name when the two sides did not both run on the CPU."""
    ref, cand = report.data.get("reference_device", "cpu"), report.data.get("candidate_device", "cpu")
    return "" if ref == cand == "cpu" else f" ({report.data[side + '_device']})"


def _show_layerwise(report: Report) -> None:
    from rich.table import Table

    result = report.data["layerwise"]
    table = Table(title=f"layer by layer — {result['tolerance']}", title_justify="left")
    for column in ("#", "node", "op", "tensor", "cosine", "max abs", "rel L2", "result"):
        table.add_column(column, justify="right" if column in ("#", "cosine", "max abs", "rel L2") else "left")
    for layer in result["layers"]:
        table.add_row(str(layer["index"]), layer["node"], layer["op_type"], layer["tensor"], f"{float(layer['cosine']):.6f}",
                      f"{float(layer['max_abs_error']):.4g}", f"{float(layer['rel_l2_error']):.4g}",
                      "pass" if layer["passed"] else "FAIL: " + "; ".join(layer["reasons"]), style=None if layer["passed"] else "red")
    stdout.print(table)
    for note in report.notes:
        stdout.print(f"[yellow]note:[/] {note}")
    first = result["first_failure"]
    if first:
        stdout.print(f"[red]FAILED[/] first layer beyond tolerance: {first['node']} ({first['op_type']}) -> {first['tensor']}: "
                     + "; ".join(first["reasons"]))
    else:
        stdout.print(f"[green]PASSED[/] {result['compared']} shared layers of {report.data['candidate']} within tolerance")


def _show_generation(report: Report) -> None:
    from mdeploy.cli.generation import show_generation

    show_generation(report)
    for note in report.notes:
        stdout.print(f"[yellow]note:[/] {note}")
    verdict(report, f"{report.data['candidate']} generates as {report.data['reference']} does")


def _render(report: Report) -> None:
    if "generation" in report.data:
        _show_generation(report)
    else:
        (_show_layerwise if "layerwise" in report.data else _show)(report)


command = _command(verb, _render)
