"""`mdeploy validate REF CAND`: prove two models compute the same thing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from mdeploy.cli.common import (
    ClassifierOutputOpt,
    InputOpt,
    JsonOpt,
    Output,
    QuietOpt,
    SeedOpt,
    NoClassifierOpt,
    VerboseOpt,
    parse_inputs,
    show_comparisons,
    stdout,
    verdict,
)

if TYPE_CHECKING:
    from mdeploy.reports.report import Report


def command(
    reference: Annotated[str, typer.Argument(help="The reference model (the source of truth).")],
    candidate: Annotated[str, typer.Argument(help="The model to check against it.")],
    data: Annotated[str | None, typer.Option("--data", help=".npz of arrays keyed by input name (or .npy / a folder of .npy).")] = None,
    samples: Annotated[int | None, typer.Option("--samples", help="Number of random inputs built from the input specs (default 1).", min=1)] = None,
    inputs: InputOpt = None,
    atol: Annotated[float | None, typer.Option("--atol", help="Absolute tolerance (default per precision).")] = None,
    rtol: Annotated[float | None, typer.Option("--rtol", help="Relative tolerance (default per precision).")] = None,
    precision: Annotated[str, typer.Option("--precision", help="Default tolerances for fp32, fp16 or int8 candidates.")] = "fp32",
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    seed: SeedOpt = 0,
    ref_format: Annotated[str | None, typer.Option("--ref-from", help="Format of the reference, when its name does not tell.")] = None,
    cand_format: Annotated[str | None, typer.Option("--cand-from", help="Format of the candidate, when its name does not tell.")] = None,
    weights: Annotated[str | None, typer.Option("--weights", help="state_dict for a FILE.py:FACTORY reference.")] = None,
    report_path: Annotated[str | None, typer.Option("--report", help="Also write the report: .json, .md or .xml (JUnit).")] = None,
    layerwise: Annotated[bool, typer.Option("--layerwise", help="ONNX: compare every intermediate tensor both models share; name the first layer beyond tolerance.")] = False,
    classifier_output: ClassifierOutputOpt = None,
    no_classifier: NoClassifierOpt = False,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run two models on the same inputs and compare every output. Exit 1 on a mismatch."""
    from mdeploy import api
    from mdeploy.core import classifier_choice

    out = Output(json_, quiet, verbose)
    report = api.validate(
        reference,
        candidate,
        data=data,
        samples=samples,
        inputs=parse_inputs(inputs),
        atol=atol,
        rtol=rtol,
        precision=precision,
        device=device,
        seed=seed,
        ref_format=ref_format,
        cand_format=cand_format,
        ref_weights=weights,
        report_path=report_path,
        progress=out.progress,
        layerwise=layerwise,
        classifier_outputs=classifier_choice(classifier_output, no_classifier),
    )
    out.finish(report, _show_layerwise if layerwise else _show)


def _show(report: Report) -> None:
    show_comparisons(report)
    verdict(report, f"{report.data['candidate']} against {report.data['reference']}")


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
