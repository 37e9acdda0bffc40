"""PyTorch (ExportedProgram, TorchScript, nn.Module factory) -> ONNX through torch.onnx.export.

`--exporter auto` tries the dynamo exporter (torch.export based, the maintained path) and falls back to
the TorchScript exporter with a note saying why; TorchScript archives go straight to the TorchScript
exporter, which is the only one that accepts them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mdeploy.converters.base import ConversionResult, Converter
from mdeploy.core import Format, ModelRef, TensorSpec
from mdeploy.errors import ConversionError, InputError, first_line
from mdeploy.frameworks import onnx_models, torch_models
from mdeploy.logs import framework_output
from mdeploy.runners.torch_runner import integer_hint
from mdeploy.validation.inputs import random_feed

# Above this many bytes of weights, ONNX's 2 GB protobuf limit needs the weights in an external file.
# MDEPLOY_EXTERNAL_DATA_BYTES lowers it (the tests use it to exercise the external-data path on tiny models).
EXTERNAL_DATA_THRESHOLD = int(os.environ.get("MDEPLOY_EXTERNAL_DATA_BYTES", 1_800_000_000))


@dataclass
class TorchToOnnxOptions:
    inputs: list[TensorSpec] = field(default_factory=list, metadata={"help": "example input NAME:SHAPE[:DTYPE] where the source has none"})
    dynamic: list[tuple[str, int, str]] = field(default_factory=list, metadata={"help": "NAME:AXIS[:DIMNAME] axes that stay dynamic"})
    opset: int | None = field(default=None, metadata={"help": "ONNX opset (default: the exporter's recommended one)"})
    exporter: str = field(default="auto", metadata={"help": "auto | dynamo | torchscript"})


class TorchToOnnx(Converter):
    sources: ClassVar[tuple[Format, ...]] = (Format.PYTORCH_EXPORTED, Format.TORCHSCRIPT, Format.PYTORCH_MODULE)
    target: ClassVar[Format] = Format.ONNX
    Options: ClassVar[type] = TorchToOnnxOptions
    name: ClassVar[str] = "torch.onnx.export"

    def convert(self, src: ModelRef, out: Path, options: TorchToOnnxOptions) -> ConversionResult:
        if options.exporter not in ("auto", "dynamo", "torchscript"):
            raise InputError(f"unknown --exporter '{options.exporter}'", hint="choose auto, dynamo or torchscript")
        t = torch_models.torch()
        with framework_output():
            loaded = torch_models.load(src)
        specs, dynamic = _plan_inputs(loaded, options)
        examples = _example_tensors(loaded, specs)
        try:
            with t.inference_mode(), framework_output():
                reference = loaded.call(examples)
        except Exception as exc:
            raise InputError(
                f"{src.name} fails on the example inputs ({_shapes(specs)}): {first_line(exc)}",
                hint=integer_hint(exc, specs) or "check --input names, shapes and dtypes against the model's forward()",
            ) from None
        output_names = [n for n, _ in torch_models.flatten_outputs(reference)]
        big = _weight_bytes(loaded.module) > EXTERNAL_DATA_THRESHOLD
        notes: list[str] = []
        order = _exporter_order(options.exporter, src.format)
        exporters = {"dynamo": _export_dynamo, "torchscript": _export_torchscript}
        failures: list[tuple[str, BaseException]] = []
        for exporter in order:
            try:
                exporters[exporter](loaded, examples, specs, dynamic, output_names, options.opset, out, big)
                break
            except Exception as exc:
                failures.append((exporter, exc))
                out.unlink(missing_ok=True)
        else:
            raise _export_error(failures)
        for failed, exc in failures:
            notes.append(f"{_note(failed, exc)}; used the {exporter} exporter")
        notes.append(f"exported with the {exporter} exporter")
        _check(out)
        dims: dict[str, list[tuple[str, int]]] = {}
        for name, axis, dim in dynamic:
            dims.setdefault(dim, []).append((name, axis))
        return ConversionResult(
            output=ModelRef(out, Format.ONNX),
            notes=notes,
            input_specs=[TensorSpec(s.name, tuple(examples[s.name].shape), s.dtype, s.value_range) for s in specs],
            dynamic_axes=dims,
            details={"exporter": exporter, "outputs": output_names, "external_data": big},
        )


def _exporter_order(choice: str, fmt: Format) -> list[str]:
    """Which exporters to try, in order: the dynamo exporter first, except for TorchScript archives, which
    the TorchScript exporter reads natively (dynamo needs torch's TS2EP conversion for them)."""
    if choice != "auto":
        return [choice]
    if fmt == Format.PYTORCH_EXPORTED:
        return ["dynamo"]
    return ["torchscript", "dynamo"] if fmt == Format.TORCHSCRIPT else ["dynamo", "torchscript"]


def _plan_inputs(loaded: torch_models.LoadedTorchModel, options: TorchToOnnxOptions) -> tuple[list[TensorSpec], list[tuple[str, int, str]]]:
    """Example input specs (from --input over what the source carries) and the dynamic axes."""
    given = {s.name: s for s in options.inputs}
    if loaded.exported_program is not None:
        if given:
            raise InputError("a .pt2 ExportedProgram carries its own inputs; --input does not apply",
                             hint="its dynamic dimensions were fixed when it was exported")
        if options.dynamic:
            raise InputError("a .pt2 ExportedProgram keeps the dynamic axes it was exported with; --dynamic does not apply")
        dynamic = [(n, a, d) for d, axes in (loaded.dynamic_axes or {}).items() for n, a in axes]
        return loaded.specs, dynamic
    names = loaded.input_names or list(given)
    known = {s.name: s for s in loaded.specs}
    unknown = sorted(set(given) - set(names)) if names else []
    if unknown:
        raise InputError(f"--input names {', '.join(unknown)}, which is not an input of the model",
                         hint="its inputs are: " + ", ".join(names))
    specs = []
    for name in names:
        if name in given:
            specs.append(TensorSpec(name, given[name].shape, given[name].dtype, known.get(name, given[name]).value_range))
        elif name in known:
            specs.append(known[name])
        elif given:
            break  # trailing optional forward() arguments the user did not give
        else:
            raise InputError("the model does not carry example inputs",
                             hint="give --input NAME:SHAPE[:DTYPE] for each of: " + ", ".join(names)
                             + " (or define example_inputs() beside the factory)")
    specs = torch_models.with_index_ranges(specs, loaded.module)
    dynamic = []
    spec_names = {s.name for s in specs}
    for name, axis, dim in options.dynamic:
        if name not in spec_names:
            raise InputError(f"--dynamic names '{name}', which is not an input", hint="inputs are: " + ", ".join(spec_names))
        rank = len(next(s for s in specs if s.name == name).shape)
        if not -rank <= axis < rank:
            raise InputError(f"--dynamic {name}:{axis}: the input has {rank} axes")
        dynamic.append((name, axis % rank, dim))
    return _widen_unit_axes(specs, dynamic), dynamic


def _widen_unit_axes(specs: list[TensorSpec], dynamic: list[tuple[str, int, str]]) -> list[TensorSpec]:
    """torch.export specializes axes of size 0 or 1 to constants, so a dynamic axis needs an example of 2+."""
    widen = {(n, a) for n, a, _ in dynamic}
    return [
        TensorSpec(s.name, tuple(2 if (s.name, a) in widen and d == 1 else d for a, d in enumerate(s.shape)), s.dtype, s.value_range)
        for s in specs
    ]


def _example_tensors(loaded: torch_models.LoadedTorchModel, specs: list[TensorSpec]) -> dict[str, Any]:
    """The source's own examples where they fit the specs, random ones (seeded) otherwise."""
    own = loaded.examples or {}
    feed = random_feed(specs, np.random.default_rng(0))
    tensors = torch_models.to_torch(feed)
    for spec in specs:
        example = own.get(spec.name)
        if example is not None and tuple(example.shape) == tuple(tensors[spec.name].shape):
            tensors[spec.name] = example
    return tensors


def _export_dynamo(loaded, examples, specs, dynamic, output_names, opset, out: Path, big: bool) -> None:  # noqa: ANN001
    t = torch_models.torch()
    names = [s.name for s in specs]
    kwargs: dict[str, Any] = {"dynamo": True, "opset_version": opset, "output_names": output_names, "optimize": True}
    if loaded.exported_program is not None:
        model, args = loaded.exported_program, ()
    else:
        model = loaded.module
        if isinstance(model, t.jit.ScriptModule):
            model = _script_to_graph_module(model, tuple(examples[n] for n in names))
        shapes: dict[str, dict[int, str]] = {}
        for name, axis, dim in dynamic:
            shapes.setdefault(name, {})[axis] = dim
        if loaded.by_keyword:
            args = ()
            kwargs["kwargs"] = {n: examples[n] for n in names}
            kwargs["dynamic_shapes"] = {n: shapes.get(n) for n in names} if shapes else None
        else:
            args = tuple(examples[n] for n in names)
            kwargs["dynamic_shapes"] = tuple(shapes.get(n) for n in names) if shapes else None
        kwargs["input_names"] = names
    with framework_output():
        program = t.onnx.export(model, args, None, **kwargs)
        program.save(str(out), external_data=big)


def _script_to_graph_module(module: Any, args: tuple) -> Any:
    """torch.export cannot trace a ScriptModule; torch's TS2EP converter turns it into an ExportedProgram whose
    module re-exports with dynamic shapes like any nn.Module. (A private torch API: failures fall back to the
    TorchScript exporter.)"""
    from torch._export.converter import TS2EPConverter

    return TS2EPConverter(module, args).convert().module()


def _export_torchscript(loaded, examples, specs, dynamic, output_names, opset, out: Path, big: bool) -> None:  # noqa: ANN001
    t = torch_models.torch()
    if loaded.exported_program is not None:
        raise InputError("a .pt2 ExportedProgram can only be exported with the dynamo exporter", hint="use --exporter dynamo (or auto)")
    names = [s.name for s in specs]
    axes: dict[str, dict[int, str]] = {}
    for name, axis, dim in dynamic:
        axes.setdefault(name, {})[axis] = dim
    with t.inference_mode(False), t.no_grad(), framework_output():
        t.onnx.export(
            loaded.module,
            tuple(examples[n] for n in names),
            str(out),
            dynamo=False,
            input_names=names,
            output_names=output_names,
            opset_version=opset or 17,
            dynamic_axes=axes or None,
        )
    if big and not onnx_models.external_data_files(onnx_models.load_proto(out)):
        onnx_models.move_weights_to_external_data(out)


def _check(out: Path) -> None:
    from mdeploy.deps import require

    onnx = require("onnx", extra="onnx")
    try:
        onnx.checker.check_model(str(out))
    except Exception as exc:
        raise ConversionError(f"the exported model fails onnx.checker: {first_line(exc)}") from None


_OP = re.compile(r"(aten[.:]{1,2}[A-Za-z_0-9]+(?:\.[A-Za-z_0-9]+)?|torch\.ops\.[\w.]+|prim::\w+|onnx::\w+)")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _clean(text: str) -> str:
    return _ANSI.sub("", text).strip()


def _failure_summary(exc: BaseException) -> tuple[str, str]:
    """Where an exporter failed (the operator, else the module) and its own explanation."""
    text = _clean(f"{exc}\n{exc.__cause__ or ''}")
    ops = [m for m in _OP.findall(text) if not m.startswith("onnx::")] or _OP.findall(text)
    module = re.search(r"(?:module|Module) [`']?([\w.]+)[`']?", text)
    where = f"operator {ops[0]}" if ops else (f"module {module.group(1)}" if module else "")
    return where, _reason(text)


def _reason(text: str) -> str:
    """The exporter's own explanation: its exception summary when it has one, else its first line."""
    summary = re.search(r"## Exception summary\s+(.+)", text)
    line = summary.group(1) if summary else text.splitlines()[0] if text else "unknown error"
    return line if len(line) <= 300 else line[:297] + "..."


def _note(exporter: str, exc: BaseException) -> str:
    where, reason = _failure_summary(exc)
    return f"the {exporter} exporter failed{' at ' + where if where else ''} ({reason})"


def _export_error(failures: list[tuple[str, BaseException]]) -> ConversionError:
    """One line naming the operator or module that failed; the exporters' own messages follow as the hint."""
    exporter, exc = failures[0]
    where, reason = _failure_summary(exc)
    message = f"the {exporter} exporter failed{' at ' + where if where else ''}"
    hints = [reason] + [_note(e, x) for e, x in failures[1:]]
    return ConversionError(message, hint=" | ".join(hints) + " (--debug shows the traceback)")


def _weight_bytes(module: Any) -> int:
    try:
        return sum(v.numel() * v.element_size() for v in module.state_dict().values())
    except Exception:
        return 0


def _shapes(specs: list[TensorSpec]) -> str:
    return ", ".join(f"{s.name}{s.shape_text()}:{s.dtype}" for s in specs)
