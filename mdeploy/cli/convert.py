"""`mdeploy convert SRC -o OUT`: convert, then validate the result against the source."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from mdeploy.cli.common import (
    ClassifierOutputOpt,
    ForceOpt,
    InputOpt,
    JsonOpt,
    NoClassifierOpt,
    Output,
    QuietOpt,
    SeedOpt,
    VerboseOpt,
    parse_dynamics,
    parse_inputs,
    show_comparisons,
    stdout,
    verdict,
)

if TYPE_CHECKING:
    from mdeploy.reports.report import Report


def command(
    src: Annotated[str, typer.Argument(help="Model: file, SavedModel folder, or FILE.py:FACTORY / pkg.module:FACTORY.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Where to write the converted model.")],
    src_format: Annotated[str | None, typer.Option("--from", help="Source format, when the name does not tell.")] = None,
    dst_format: Annotated[str | None, typer.Option("--to", help="Target format, when the extension does not tell.")] = None,
    inputs: InputOpt = None,
    dynamic: Annotated[list[str] | None, typer.Option("--dynamic", help="NAME:AXIS[:DIMNAME] axis that stays dynamic (repeatable).", show_default=False)] = None,
    opset: Annotated[int | None, typer.Option("--opset", help="ONNX opset version.")] = None,
    exporter: Annotated[str | None, typer.Option("--exporter", help="PyTorch exporter: auto | dynamo | torchscript (default auto).")] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="TFLite precision: fp32 | fp16 (float16 weights); also picks the validation tolerance.")] = None,
    signature: Annotated[str | None, typer.Option("--signature", help="SavedModel signature to convert (default serving_default).")] = None,
    unsafe_deserialization: Annotated[bool, typer.Option("--unsafe-deserialization", help="Load .keras files with Lambda layers (runs Python code stored in the file; only for files you trust).")] = False,
    weights: Annotated[str | None, typer.Option("--weights", help="state_dict for a FILE.py:FACTORY model (loaded with weights_only=True).")] = None,
    no_validate: Annotated[bool, typer.Option("--no-validate", help="Skip validating the result against the source.")] = False,
    atol: Annotated[float | None, typer.Option("--atol", help="Absolute tolerance for validation.")] = None,
    rtol: Annotated[float | None, typer.Option("--rtol", help="Relative tolerance for validation.")] = None,
    classifier_output: ClassifierOutputOpt = None,
    no_classifier: NoClassifierOpt = False,
    seed: SeedOpt = 0,
    force: ForceOpt = False,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Convert a model to another format and prove the result computes what the source did."""
    from mdeploy import api
    from mdeploy.core import classifier_choice

    out = Output(json_, quiet, verbose)
    report = api.convert(
        src,
        output,
        src_format=src_format,
        dst_format=dst_format,
        weights=weights,
        validate=not no_validate,
        force=force,
        atol=atol,
        rtol=rtol,
        classifier_outputs=classifier_choice(classifier_output, no_classifier),
        seed=seed,
        progress=out.progress,
        inputs=parse_inputs(inputs),
        dynamic=parse_dynamics(dynamic),
        opset=opset,
        exporter=exporter,
        precision=precision,
        signature=signature,
        unsafe_deserialization=unsafe_deserialization,
    )
    out.finish(report, _show)


def _show(report: Report) -> None:
    for step in report.steps:
        if step.name.startswith("convert"):
            stdout.print(f"[bold]{step.name}[/] with {escape(str(step.details.get('converter')))} ({step.seconds:.1f}s)")
    for note in report.notes:
        stdout.print(f"  [dim]{escape(note)}[/]")
    show_comparisons(report)
    if not report.comparisons:
        stdout.print(f"[green]wrote[/] {escape(report.data['output'])} (not validated)")
    else:
        verdict(report, f"wrote {report.data['output']}")
