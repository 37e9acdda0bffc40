"""`mdeploy quantize SRC -o OUT`: INT8 quantization, proved on data, repaired to a bar with --max-error."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

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
    parse_inputs,
    show_comparisons,
    stdout,
    verdict,
)

if TYPE_CHECKING:
    from mdeploy.reports.report import Report


def _switch(value: bool | None) -> str | None:
    return None if value is None else ("on" if value else "off")


def command(
    src: Annotated[
        str, typer.Argument(help="Float model: .onnx (SavedModel / .keras go to TFLite when that pass is installed).")
    ],
    output: Annotated[str, typer.Option("--output", "-o", help="Where to write the quantized model (.onnx, or .tflite).")],
    src_format: Annotated[str | None, typer.Option("--from", help="Source format, when the name does not tell.")] = None,
    mode: Annotated[
        str | None, typer.Option("--mode", help="auto | dynamic | static. auto: static with calibration data, else dynamic.")
    ] = None,
    calib_data: Annotated[
        str | None, typer.Option("--calib-data", help=".npz (or .npy / folder of .npy) of real inputs for static calibration.")
    ] = None,
    calib_method: Annotated[
        str | None, typer.Option("--calib-method", help="minmax | entropy | percentile (default minmax).")
    ] = None,
    calib_samples: Annotated[
        int | None, typer.Option("--calib-samples", help="Calibrate on N RANDOM samples (no real data; rarely accurate).")
    ] = None,
    calib_batch: Annotated[
        int | None, typer.Option("--calib-batch", help="Samples per calibration batch (default 16; a fixed model batch wins).")
    ] = None,
    per_channel: Annotated[
        bool | None,
        typer.Option(
            "--per-channel/--per-tensor", help="Weight scales per output channel (default: on for static).", show_default=False
        ),
    ] = None,
    quant_format: Annotated[str | None, typer.Option("--format", help="qdq | qoperator (default qdq).")] = None,
    activation_type: Annotated[
        str | None, typer.Option("--activation-type", help="uint8 | int8 (default: uint8 on x86, the fast one; int8 on ARM).")
    ] = None,
    weight_type: Annotated[str | None, typer.Option("--weight-type", help="int8 | uint8 (default int8).")] = None,
    reduce_range: Annotated[
        bool | None,
        typer.Option("--reduce-range/--full-range", help="7-bit weights (default: on for x86 without VNNI).", show_default=False),
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", help="Node name kept in float (repeatable).", show_default=False)
    ] = None,
    exclude_op: Annotated[
        list[str] | None,
        typer.Option("--exclude-op", help="Operator type kept in float, e.g. Softmax (repeatable).", show_default=False),
    ] = None,
    op_types: Annotated[
        list[str] | None, typer.Option("--op-type", help="Quantize only these operator types (repeatable).", show_default=False)
    ] = None,
    no_preprocess: Annotated[bool, typer.Option("--no-preprocess", help="Skip constant folding and shape inference.")] = False,
    int8_io: Annotated[bool, typer.Option("--int8-io", help="TFLite: int8 model inputs and outputs.")] = False,
    allow_float_fallback: Annotated[
        bool, typer.Option("--allow-float-fallback", help="TFLite: keep ops without int8 kernels in float.")
    ] = False,
    signature: Annotated[str | None, typer.Option("--signature", help="TFLite: the SavedModel signature to convert.")] = None,
    inputs: InputOpt = None,
    eval_data: Annotated[
        str | None, typer.Option("--eval-data", help="Data to prove the result on (default: the calibration data).")
    ] = None,
    labels: Annotated[
        str | None, typer.Option("--labels", help=".npy of class ids for the data: reports task accuracy before and after.")
    ] = None,
    max_error: Annotated[
        str | None,
        typer.Option("--max-error", help="The bar, e.g. cosine>=0.995, top1>=0.99, accuracy-drop<=0.01 (comma-separated)."),
    ] = None,
    eval_samples: Annotated[
        int | None,
        typer.Option("--eval-samples", help="Random samples to validate on when no data is given (default 16).", min=1),
    ] = None,
    no_validate: Annotated[bool, typer.Option("--no-validate", help="Skip proving the result (not recommended).")] = False,
    classifier_output: ClassifierOutputOpt = None,
    no_classifier: NoClassifierOpt = False,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda, for validation.")] = "cpu",
    seed: SeedOpt = 0,
    force: ForceOpt = False,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Quantize a model to INT8 and prove on data what accuracy it kept. Exit 1 when it did not keep enough."""
    from mdeploy import api  # lazily: `mdeploy --help` stays light
    from mdeploy.core import classifier_choice

    out = Output(json_, quiet, verbose)
    report = api.quantize(
        src,
        output,
        src_format=src_format,
        eval_data=eval_data,
        labels=labels,
        max_error=max_error,
        eval_samples=eval_samples,
        classifier_outputs=classifier_choice(classifier_output, no_classifier),
        validate=not no_validate,
        force=force,
        device=device,
        seed=seed,
        progress=out.progress,
        mode=mode,
        calib_data=calib_data,
        calib_method=calib_method,
        calib_samples=calib_samples,
        calib_batch=calib_batch,
        per_channel=_switch(per_channel),
        quant_format=quant_format,
        activation_type=activation_type,
        weight_type=weight_type,
        reduce_range=_switch(reduce_range),
        exclude=exclude,
        exclude_op=exclude_op,
        op_types=op_types,
        skip_preprocess=no_preprocess,
        int8_io=int8_io,
        allow_float_fallback=allow_float_fallback,
        signature=signature,
        inputs=parse_inputs(inputs),
    )
    out.finish(report, _show)


def _show(report: Report) -> None:
    d = report.data
    step = next((s for s in report.steps if s.name == "quantize"), None)
    stdout.print(
        f"[bold]quantized[/] {d['source']} -> {d['output']} ({d.get('mode') or 'int8'}, {d['quantizer']}"
        + (f", {step.seconds:.1f}s)" if step and step.seconds else ")")
    )
    for note in report.notes:
        style = "bold red" if note.startswith("WARNING") else "dim"
        stdout.print(f"  [{style}]{note}[/]")
    size = d.get("size")
    if size:
        ratio = f" ({size['ratio']:.2f}x)" if size.get("ratio") else ""
        stdout.print(f"size: {_mib(size['before_bytes'])} -> {_mib(size['after_bytes'])}{ratio}")
    acc = d.get("accuracy")
    if acc:
        stdout.print(
            f"accuracy on {acc['samples']} labelled samples: float {acc['float']:.4f} -> int8 {acc['quantized']:.4f} "
            f"(drop {acc['drop'] * 100:+.2f} points)"
        )
    bar = d.get("max_error")
    if bar:
        for s in bar.get("kept_in_float", []):
            stdout.print(f"  kept in float: {', '.join(s['nodes'])} ({s['op_type']}, added error {s['cost_rel_l2']:.4g})")
        if bar.get("exclude_args"):
            stdout.print(f"  reuse with: {bar['exclude_args']}")
    show_comparisons(report)
    verdict(report, f"wrote {d['output']}")


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"
