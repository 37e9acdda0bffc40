"""PyTorch (ExportedProgram, TorchScript, nn.Module factory) -> ONNX through torch.onnx.export.

`--exporter auto` tries the dynamo exporter (torch.export based, the maintained path) and falls back to
the TorchScript exporter with a note saying why; TorchScript archives go straight to the TorchScript
exporter, which is the only one that accepts them.
"""

from __future__ import annotations

import gc
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mdeploy.converters.base import ConversionResult, Converter
from mdeploy.converters.export_failures import export_error, note
from mdeploy.converters.onnx_writing import check_written as _check
from mdeploy.converters.onnx_writing import save_streamed
from mdeploy.core import Format, ModelRef, TensorSpec
from mdeploy.errors import InputError, first_line
from mdeploy.frameworks import onnx_models, torch_indices, torch_models
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
        laps = _Laps()
        torch_models.torch()
        laps.lap("import torch")
        with framework_output():
            loaded = torch_models.load(src)
        laps.lap("load")
        specs, dynamic, notes, untyped = _plan_inputs(loaded, options)
        specs, examples, feed, reference = _reference(src, loaded, specs, untyped, notes)
        laps.lap("reference run")
        named = torch_models.flatten_outputs(reference)
        output_names = [n for n, _ in named]
        source_run = (feed, {n: v.detach().cpu().numpy() for n, v in named})  # as TorchRunner gives them
        del reference, named
        big = _weight_bytes(loaded.module) > EXTERNAL_DATA_THRESHOLD
        order = _exporter_order(options.exporter, src.format)
        exporters = {"dynamo": _export_dynamo, "torchscript": _export_torchscript}
        failures: list[tuple[str, BaseException]] = []
        for exporter in order:
            try:
                streamed = exporters[exporter](loaded, examples, specs, dynamic, output_names, options.opset, out, big, laps)
                break
            except Exception as exc:
                failures.append((exporter, exc))
                out.unlink(missing_ok=True)
                laps.lap(f"failed {exporter} export")
        else:
            raise export_error(failures)
        for failed, exc in failures:
            notes.append(f"{note(failed, exc)}; used the {exporter} exporter")
        notes.append(f"exported with the {exporter} exporter")
        gc.collect()  # the exporter's graphs hold reference cycles: free them before validation allocates
        laps.lap("free the exporter's graphs")
        if src.format == Format.PYTORCH_MODULE:
            torch_models.hand_over(src, loaded)  # validation runs this module instead of building it again
        dims: dict[str, list[tuple[str, int]]] = {}
        for name, axis, dim in dynamic:
            dims.setdefault(dim, []).append((name, axis))
        return ConversionResult(
            output=ModelRef(out, Format.ONNX),
            notes=notes,
            input_specs=[TensorSpec(s.name, tuple(examples[s.name].shape), s.dtype, s.value_range) for s in specs],
            dynamic_axes=dims,
            details={"exporter": exporter, "outputs": output_names, "external_data": big,
                     "timings": dict(laps)},
            # onnx.checker, left to the caller to run before the result is used: after validation's reference run has
            # released the module kept above (a file the exporter wrote is read whole: 0.8 GB at its peak for BERT-base)
            pending_check=lambda: _check(out, streamed),
            source_run=source_run,
        )


class _Laps(dict):
    """Seconds per stage of one conversion, recorded in the report (benchmarks/convert.py prints them)."""

    def __init__(self) -> None:
        super().__init__()
        self._last = time.perf_counter()

    def lap(self, stage: str | None = None) -> None:
        """Charge the time since the last lap to `stage` (or to nothing)."""
        now = time.perf_counter()
        if stage:
            self[stage] = round(self.get(stage, 0.0) + now - self._last, 3)
        self._last = now


def _exporter_order(choice: str, fmt: Format) -> list[str]:
    """Which exporters to try, in order: the dynamo exporter first, except for TorchScript archives, which
    the TorchScript exporter reads natively (dynamo needs torch's TS2EP conversion for them)."""
    if choice != "auto":
        return [choice]
    if fmt == Format.PYTORCH_EXPORTED:
        return ["dynamo"]
    return ["torchscript", "dynamo"] if fmt == Format.TORCHSCRIPT else ["dynamo", "torchscript"]


def _plan_inputs(
    loaded: torch_models.LoadedTorchModel, options: TorchToOnnxOptions
) -> tuple[list[TensorSpec], list[tuple[str, int, str]], list[str], set[str]]:
    """Example input specs (from --input over what the source carries), the dynamic axes, notes on dtypes taken
    from the source, and the inputs whose dtype nobody gave (float32 until the model's use says otherwise)."""
    given = {s.name: s for s in options.inputs}
    if loaded.exported_program is not None:
        if given:
            raise InputError("a .pt2 ExportedProgram carries its own inputs; --input does not apply",
                             hint="its dynamic dimensions were fixed when it was exported")
        if options.dynamic:
            raise InputError("a .pt2 ExportedProgram keeps the dynamic axes it was exported with; --dynamic does not apply")
        dynamic = [(n, a, d) for d, axes in (loaded.dynamic_axes or {}).items() for n, a in axes]
        return loaded.specs, dynamic, [], set()
    names = loaded.input_names or list(given)
    known = {s.name: s for s in loaded.specs}
    unknown = sorted(set(given) - set(names)) if names else []
    if unknown:
        raise InputError(f"--input names {', '.join(unknown)}, which is not an input of the model",
                         hint="its inputs are: " + ", ".join(names))
    specs, notes, untyped = [], [], set()
    for name in names:
        if name in given:
            dtype = given[name].dtype
            if not given[name].dtype_given and name in known:
                dtype = known[name].dtype
                if dtype != given[name].dtype:
                    notes.append(f"--input {name} named no dtype: {dtype}, as example_inputs() gives it")
            elif not given[name].dtype_given:
                untyped.add(name)
            specs.append(TensorSpec(name, given[name].shape, dtype, known.get(name, given[name]).value_range))
        elif name in known:
            specs.append(known[name])
        elif given:
            break  # trailing optional forward() arguments the user did not give
        else:
            raise InputError("the model does not carry example inputs",
                             hint="give --input NAME:SHAPE[:DTYPE] for each of: " + ", ".join(names)
                             + " (or define example_inputs() beside the factory)")
    specs = torch_indices.with_index_ranges(specs, loaded.module)
    dynamic = []
    spec_names = {s.name for s in specs}
    for name, axis, dim in options.dynamic:
        if name not in spec_names:
            raise InputError(f"--dynamic names '{name}', which is not an input", hint="inputs are: " + ", ".join(spec_names))
        rank = len(next(s for s in specs if s.name == name).shape)
        if not -rank <= axis < rank:
            raise InputError(f"--dynamic {name}:{axis}: the input has {rank} axes")
        dynamic.append((name, axis % rank, dim))
    return _widen_unit_axes(specs, dynamic), dynamic, notes, untyped


def _reference(
    src: ModelRef, loaded: torch_models.LoadedTorchModel, specs: list[TensorSpec], untyped: set[str], notes: list[str]
) -> tuple[list[TensorSpec], dict[str, Any], dict[str, np.ndarray], Any]:
    """Run the source once on the example inputs (the outputs name the ONNX outputs; validation reuses them).
    Returns the specs, the example tensors, a copy of them as numpy arrays taken before the run, and the outputs.

    An input given without a dtype that the model uses as indices (token ids into an embedding, gather indices)
    becomes int64, with a note: from the TorchScript graph, or watched during this run, which then runs again
    with integer ids. Only when nothing says so does a failure stay an error.
    """
    t = torch_models.torch()
    found: dict[str, str] = {}
    if untyped and isinstance(loaded.module, t.jit.ScriptModule):
        found = torch_indices.script_index_inputs(loaded.module, loaded.input_names, untyped)
        specs = _as_indices(specs, found, loaded.module)
    examples = _example_tensors(loaded, specs)
    feed = _snapshot(examples)
    watch = torch_indices.IndexWatch(examples) if untyped and not found else None
    failure = None
    try:
        with t.inference_mode(), framework_output(), watch or nullcontext():
            reference = loaded.call(examples)
    except Exception as exc:
        failure = exc
    if watch is not None and watch.found:
        found = watch.found
        specs = _as_indices(specs, found, loaded.module)
        examples = _example_tensors(loaded, specs)
        feed = _snapshot(examples)
        failure = None
        try:
            with t.inference_mode(), framework_output():
                reference = loaded.call(examples)
        except Exception as exc:
            failure = exc
    notes.extend(f"--input {name} named no dtype: int64, as the model uses it as indices ({op})" for name, op in found.items())
    if failure is not None:
        raise InputError(
            f"{src.name} fails on the example inputs ({_shapes(specs)}): {first_line(failure)}",
            hint=integer_hint(failure, specs) or _untyped_hint(specs, untyped - set(found)),
        ) from None
    return specs, examples, feed, reference


def _snapshot(tensors: dict[str, Any]) -> dict[str, np.ndarray]:
    """numpy copies of the example tensors, as they are before the source runs on them (a forward() may write them)."""
    return {name: np.array(tensor.numpy(force=True)) for name, tensor in tensors.items()}


def _untyped_hint(specs: list[TensorSpec], untyped: set[str]) -> str:
    if not untyped:
        return "check --input names, shapes and dtypes against the model's forward()"
    forms = " ".join(f"--input {s.name}:{'x'.join(map(str, s.shape))}:int64" for s in specs if s.name in untyped)
    names = ", ".join(sorted(untyped))
    return f"nothing shows which dtype {names} must be (float32 when --input names none): give it, e.g. {forms}"


def _as_indices(specs: list[TensorSpec], found: dict[str, str], module: Any) -> list[TensorSpec]:
    """int64 for the inputs `found` used as indices, drawn below the module's smallest embedding table."""
    if not found:
        return specs
    specs = [TensorSpec(s.name, s.shape, "int64") if s.name in found else s for s in specs]
    return torch_indices.with_index_ranges(specs, module)


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
        ours = tensors[spec.name]
        if example is not None and tuple(example.shape) == tuple(ours.shape) and example.dtype == ours.dtype:
            tensors[spec.name] = example
    return tensors


def _export_dynamo(loaded, examples, specs, dynamic, output_names, opset, out: Path, big: bool, laps) -> set[str]:  # noqa: ANN001
    """Export with the dynamo exporter and save; the names of the weights save_streamed wrote (see check_written)."""
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
        laps.lap("torch.onnx.export (dynamo)")
        streamed: set[str] = set()
        if big:
            program.save(str(out), external_data=True)
        else:
            streamed = save_streamed(program.model, out)
        laps.lap("save")
    _drop_weights(program.model.graph)
    return streamed


def _drop_weights(graph: Any) -> None:
    """Detach the saved graph from the module's parameters.

    onnxscript's rewrite rules are module-level objects whose matchers keep the last graph they matched (this
    one) for the life of the process; its initializers wrap the module's parameters, or numpy views of them that
    the optimizer folded (transposed weights). Without this, releasing the module after validation's reference run
    frees nothing (0.44 GB for BERT-base).
    """
    for value in graph.initializers.values():
        value.const_value = None
    graph.initializers.clear()


def _script_to_graph_module(module: Any, args: tuple) -> Any:
    """torch.export cannot trace a ScriptModule; torch's TS2EP converter turns it into an ExportedProgram whose
    module re-exports with dynamic shapes like any nn.Module. (A private torch API: failures fall back to the
    TorchScript exporter.)"""
    from torch._export.converter import TS2EPConverter

    return TS2EPConverter(module, args).convert().module()


def _export_torchscript(loaded, examples, specs, dynamic, output_names, opset, out: Path, big: bool, laps) -> None:  # noqa: ANN001
    t = torch_models.torch()
    if loaded.exported_program is not None:
        raise InputError("a .pt2 ExportedProgram can only be exported with the dynamo exporter", hint="use --exporter dynamo (or auto)")
    names = [s.name for s in specs]
    axes: dict[str, dict[int, str]] = {}
    for name, axis, dim in dynamic:
        axes.setdefault(name, {})[axis] = dim
    # Without grad, nn.TransformerEncoderLayer and nn.MultiheadAttention take their fused inference kernels
    # (aten::_transformer_encoder_layer_fwd, _native_multi_head_attention), which this exporter cannot write: torch's
    # switch for that fast path is off while it traces (the dynamo exporter decomposes them itself).
    mha = t.backends.mha
    fast_path = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
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
    finally:
        mha.set_fastpath_enabled(fast_path)
    laps.lap("torch.onnx.export (torchscript)")
    if big and not onnx_models.external_data_files(onnx_models.load_proto(out)):
        onnx_models.move_weights_to_external_data(out)
        laps.lap("save")


def _weight_bytes(module: Any) -> int:
    try:
        return sum(v.numel() * v.element_size() for v in module.state_dict().values())
    except Exception:
        return 0


def _shapes(specs: list[TensorSpec]) -> str:
    return ", ".join(f"{s.name}{s.shape_text()}:{s.dtype}" for s in specs)
