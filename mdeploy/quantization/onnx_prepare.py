"""Getting an ONNX model ready for onnxruntime's quantizers: checks, constant folding, shape inference.

onnxruntime quantizes a MatMul/Conv only when its weight is an initializer. Older exporters (and the torch
TransformerEncoder export) feed weights through Transpose or other constant subgraphs; left as they are,
those weights stay float and `quantize_dynamic` buys almost nothing. onnxruntime's own basic graph
optimizations fold them into initializers, so they run first. Its symbolic shape inference then labels the
activations; it asserts on some exports, and then we fall back to ONNX shape inference and say so.

Memory: a model past protobuf's 2 GB limit (weights in an external data file) is never held twice here. Shape
inference reads only the graph (`structure_of`): onnxruntime's `quant_pre_process` would load the weights, copy them
for its symbolic pass and save and read them back (3.2x the float weight bytes on a 0.7B Llama,
benchmarks/large_model.py), while the shapes need none of their values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdeploy.deps import require
from mdeploy.errors import InputError, ModelLoadError, first_line
from mdeploy.frameworks import onnx_models, ort_sessions
from mdeploy.logs import framework_output
from mdeploy.outputs import working_folder

# Operators that only appear in a model that is already quantized.
QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "MatMulInteger",
        "ConvInteger",
        "QLinearAdd",
        "QLinearMul",
        "QGemm",
        "QAttention",
        "DynamicQuantizeMatMul",
        "MatMulNBits",
        "QLinearSigmoid",
        "QLinearLeakyRelu",
        "QLinearConcat",
        "QLinearAveragePool",
        "QLinearGlobalAveragePool",
        "MatMulIntegerToFloat",
        "DynamicQuantizeLSTM",
        "QOrderedMatMul",
        "MatMulBnb4",
    }
)

# Beyond this many bytes of weights, protobuf's 2 GB limit needs the weights in an external data file.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
SMALL_TENSOR_BYTES = 1 << 20  # shape inference of a large model reads initializers under this size, not the matrices


@dataclass
class Prepared:
    """The model handed to the quantizer, and what preparing it did."""

    path: Path
    notes: list[str] = field(default_factory=list)
    node_names: set[str] = field(default_factory=set)
    op_types: dict[str, str] = field(default_factory=dict)  # node name -> op type, after preparation
    producers: dict[str, tuple[str, str, list[str]]] = field(default_factory=dict)  # tensor -> (node, op, inputs)
    large: bool = False


def quantized_ops(model: Any) -> list[str]:
    """The quantization operators a model already contains (empty for a float model)."""
    return sorted({n.op_type for n in model.graph.node if n.op_type in QUANTIZED_OPS})


def check_not_quantized(model: Any, path: Path) -> None:
    found = quantized_ops(model)
    if found:
        raise InputError(
            f"{path} is already quantized (it contains {', '.join(found[:4])})",
            hint="quantize the float model it came from",
        )


def weight_bytes(model: Any) -> int:
    return sum(weight_bytes_of(init) for init in model.graph.initializer)


def transpose_shared_gemm_weights(model: Any) -> int:
    """Store the weight of every Gemm with transB=1 that shares it with another node already transposed.

    onnxruntime's quantize_dynamic rewrites Gemm as MatMul + Add, transposing a transB=1 weight in place; with
    a weight shared by two Gemms (torch's TorchScript exporter deduplicates equal tensors, e.g. the layers of
    a freshly built TransformerEncoder, or weights tied on purpose) the second rewrite transposes it back and
    corrupts the model (measured with onnxruntime 1.31: cosine 0.92 against the float model with every node
    excluded). Giving each Gemm its own copy avoids that but stores the weight once per Gemm: a 4-layer
    encoder with deduplicated layers then grew from 0.25x to 0.43x of its float size. One transposed copy
    per shared weight, read by all its Gemms with transB=0, is what the rewrite needs and keeps it shared."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    transposed: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type != "Gemm" or len(node.input) < 2:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        name = node.input[1]
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if not (plain and attrs.get("transB", 0) == 1 and name in inits and uses.get(name, 0) > 1):
            continue
        if name not in transposed:
            copy = numpy_helper.from_array(numpy_helper.to_array(inits[name]).T.copy(), f"{name}__transposed")
            model.graph.initializer.append(copy)
            transposed[name] = copy.name
        node.input[1] = transposed[name]
        kept = [a for a in node.attribute if a.name != "transB"]
        del node.attribute[:]
        node.attribute.extend(kept)
    used = {i for node in model.graph.node for i in node.input}
    dropped = [i for i in model.graph.initializer if i.name in transposed and i.name not in used]
    for init in dropped:
        model.graph.initializer.remove(init)
    return len(transposed)


def share_identical_initializers(model: Any, min_elements: int = 1024) -> int:
    """Make nodes that read equal weights read one initializer, and drop the copies; returns how many were dropped.

    A weight used by several nodes reaches the quantizer as several equal initializers when constant folding
    materialises each node's Transpose of it separately (TorchScript exports of deduplicated or tied weights),
    and onnxruntime then stores an int8 copy per initializer. Sharing them again stores each weight once.
    Initializers that are also graph inputs or outputs, or that subgraphs read by name, are left alone."""
    import hashlib

    from onnx import numpy_helper

    graph = model.graph
    pinned = {i.name for i in graph.input} | {o.name for o in graph.output} | _subgraph_reads(graph)
    groups: dict[tuple, list[Any]] = {}
    for init in graph.initializer:
        size = 1
        for d in init.dims:
            size *= int(d)
        if size >= min_elements and init.name not in pinned:
            groups.setdefault((init.data_type, tuple(init.dims)), []).append(init)
    canonical: dict[str, str] = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        seen: dict[bytes, str] = {}
        for init in members:
            data = init.raw_data or numpy_helper.to_array(init).tobytes()
            digest = hashlib.blake2b(data, digest_size=20).digest()
            if digest in seen:
                canonical[init.name] = seen[digest]
            else:
                seen[digest] = init.name
    if not canonical:
        return 0
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in canonical:
                node.input[k] = canonical[name]
    kept = [i for i in graph.initializer if i.name not in canonical]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return len(canonical)


def _subgraph_reads(graph: Any) -> set[str]:
    """Names read by nodes inside subgraphs (If/Loop/Scan bodies), which may refer to outer initializers."""
    from onnx import AttributeProto

    names: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            subs = [attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs)
            for sub in subs:
                names |= {i for n in sub.node for i in n.input} | _subgraph_reads(sub)
    return names


def save(model: Any, path: Path, large: bool) -> None:
    onnx = require("onnx", extra="onnx")
    if large:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=path.name + ".data")
    else:
        onnx.save_model(model, str(path))


def fold_constants(src: Path, dst: Path, large: bool) -> None:
    """onnxruntime's basic graph optimizations: constant folding and redundant-node elimination, standard ops only."""
    ort = require("onnxruntime", extra="onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(dst)
    options.log_severity_level = 3
    if large:
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", dst.name + ".data")
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])


def prepare(src: Path, workdir: Path, preprocess: bool = True, infer_shapes: bool = True) -> Prepared:
    """Load, check, fold and shape-infer `src` into `workdir`; never touches `src`. `infer_shapes=False`: no shape
    inference (weight-only quantization needs none, and onnxruntime's symbolic pass imports torch and sympy)."""
    onnx = require("onnx", extra="onnx")
    model = onnx_models.load_proto(src, with_data=True)
    check_not_quantized(model, src)
    large = weight_bytes(model) > EXTERNAL_DATA_THRESHOLD
    notes: list[str] = []
    fitted = ort_sessions.fit(model)  # every step after this one has onnxruntime read the working copy
    if fitted.too_new:
        raise ort_sessions.too_new_error(model, src, fitted)
    if fitted.ir_version:
        notes.append(ort_sessions.lowered_note(model, fitted, src))
        model.ir_version = fitted.ir_version
    named = onnx_models.name_nodes(model)
    if named:
        notes.append(f"named {named} unnamed nodes (<op>_<index>) so they can be excluded")
    base = workdir / "named.onnx"
    save(model, base, large)
    del model
    current = base
    if preprocess:
        folded = workdir / "folded.onnx"
        try:
            with framework_output():
                fold_constants(base, folded, large)
            current = folded
            notes.append("pre-processing: constant folding and basic graph optimizations (onnxruntime)")
        except Exception as exc:
            notes.append(f"pre-processing: constant folding failed ({first_line(exc)}); quantizing the model as it is")
        if infer_shapes:
            current = _infer_shapes(current, workdir, large, notes)
    else:
        notes.append("pre-processing skipped (--no-preprocess): weights fed by constant subgraphs stay float")
    try:
        final = onnx.load(str(current), load_external_data=False)
    except Exception as exc:  # pragma: no cover - onnxruntime wrote it
        raise ModelLoadError(f"cannot read the pre-processed model: {first_line(exc)}") from None
    renamed = onnx_models.name_nodes(final)  # the optimizer may add unnamed nodes
    # large: weights are external (not loaded here), left as they are
    shared = 0 if large else share_identical_initializers(final)
    if shared:
        notes.append(f"{shared} weights equal to another one now share it (quantized and stored once)")
    transposed = 0 if large else transpose_shared_gemm_weights(final)
    if transposed:
        notes.append(
            f"stored {transposed} shared Gemm weights transposed once (onnxruntime's in-place Gemm rewrite corrupts shared ones)"
        )
    if renamed or shared or transposed:
        onnx.save_model(final, str(current))
    return Prepared(
        path=current,
        notes=notes,
        node_names={n.name for n in final.graph.node},
        op_types={n.name: n.op_type for n in final.graph.node},
        producers={o: (n.name, n.op_type, [i for i in n.input if i]) for n in final.graph.node for o in n.output if o},
        large=large,
    )


def _infer_shapes(current: Path, workdir: Path, large: bool, notes: list[str]) -> Path:
    """onnxruntime's quant_pre_process without its optimizer (already done): symbolic, then ONNX shape
    inference; when the symbolic pass fails, ONNX shape inference alone; when that fails too, none. A large model
    (weights in an external file) gets the same two passes on its graph alone (`_shape_passes`)."""
    from_ort = require("onnxruntime.quantization.shape_inference", extra="onnx")
    workdir = workdir.resolve()
    shaped = workdir / "shaped.onnx"
    attempts = [
        ({}, "symbolic and ONNX shape inference"),
        ({"skip_symbolic_shape": True}, "ONNX shape inference only: onnxruntime's symbolic shape inference failed ({error})"),
    ]
    first_error = ""
    current = current.resolve()  # the shape passes run in `workdir`, where a failed symbolic pass leaves its file
    for kwargs, what in attempts:
        try:
            with framework_output(), working_folder(workdir):
                if large:
                    _shape_passes(current, shaped, symbolic=not kwargs)
                else:
                    from_ort.quant_pre_process(
                        str(current),
                        str(shaped),
                        skip_optimization=True,
                        save_as_external_data=large,
                        all_tensors_to_one_file=True,
                        external_data_location=shaped.name + ".data",
                        **kwargs,
                    )
            notes.append("pre-processing: " + what.format(error=first_error))
            return shaped
        except Exception as exc:
            first_error = first_error or first_line(exc)[:160]
    notes.append(f"pre-processing: shape inference failed ({first_error}); quantizing without it")
    return current


def _shape_passes(src: Path, dst: Path, symbolic: bool) -> None:
    """quant_pre_process's shape passes (onnxruntime's symbolic shape inference, then ONNX's) on the graph of `src`
    with its weights left in their external data file, written to `dst` beside `src`, which still reads that file.

    Both passes read an initializer's type and dims; the symbolic pass also reads the values of the inputs of the
    elementwise ops it follows (a norm's scale vector), so initializers under 1 MiB are read in (0.7 MB on a 0.7B
    Llama) and the weight matrices stay on disk. quant_pre_process given the same file loads every weight, and its
    symbolic pass and the save and reload after it copy them (3.2x the weights at the peak on a 0.7B Llama)."""
    onnx = require("onnx", extra="onnx")
    from onnx.external_data_helper import ExternalDataInfo, load_external_data_for_tensor, uses_external_data
    from onnxruntime.quantization.quant_utils import add_pre_process_metadata

    model = onnx.load(str(src), load_external_data=False)
    for init in model.graph.initializer:
        if uses_external_data(init) and int(ExternalDataInfo(init).length or 0) < SMALL_TENSOR_BYTES:
            load_external_data_for_tensor(init, str(src.parent))
            init.data_location = onnx.TensorProto.DEFAULT
            del init.external_data[:]
    if symbolic:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        model = SymbolicShapeInference.infer_shapes(model)  # quant_pre_process's defaults
        if model is None:
            raise ValueError("symbolic shape inference needs opset 7 or later")
    model = onnx.shape_inference.infer_shapes(model)
    add_pre_process_metadata(model)
    onnx.save_model(model, str(dst))


def structure_of(model: Any) -> Any:
    """A copy of `model` without the values of its large initializers (name, type and dims kept, marked external):
    what onnx's whole-model passes (shape inference, the version converter) read, at a few kilobytes instead of the
    weights' size. Initializers under 1024 bytes (shapes, axes: values those passes may read) are copied whole."""
    onnx = require("onnx", extra="onnx")
    light = onnx.ModelProto()
    for desc, value in model.ListFields():
        if desc.name != "graph":
            _copy_field(light, desc, value)
    for desc, value in model.graph.ListFields():
        if desc.name != "initializer":
            _copy_field(light.graph, desc, value)
    for init in model.graph.initializer:
        copy = light.graph.initializer.add()
        if init.ByteSize() < 1024 or init.data_type == onnx.TensorProto.STRING:
            copy.CopyFrom(init)
            continue
        copy.name, copy.data_type, copy.doc_string = init.name, init.data_type, init.doc_string
        copy.dims.extend(init.dims)
        copy.data_location = onnx.TensorProto.EXTERNAL
        copy.external_data.add(key="location", value="not-loaded.data")
    return light


def infer_shapes_in_place(model: Any) -> Any:
    """ONNX shape inference run on `structure_of(model)`, its result written into `model` itself (value_info, outputs,
    onnxruntime's "inferred" mark); returns `model`. What onnxruntime's `save_and_reload_model_with_shape_infer` gives
    (that function deep-copies the model with its weights, saves and reloads it: see onnx_quantize), without a copy."""
    onnx = require("onnx", extra="onnx")
    from onnxruntime.quantization.quant_utils import add_infer_metadata

    inferred = onnx.shape_inference.infer_shapes(structure_of(model))
    for name in ("value_info", "output"):
        field = getattr(model.graph, name)
        del field[:]
        field.extend(getattr(inferred.graph, name))
    add_infer_metadata(model)
    return model


def _copy_field(dst: Any, desc: Any, value: Any) -> None:
    if desc.is_repeated:
        getattr(dst, desc.name).extend(value)
    elif desc.message_type is not None:
        getattr(dst, desc.name).CopyFrom(value)
    else:
        setattr(dst, desc.name, value)


def weight_bytes_of(init: Any) -> int:
    n = 1
    for d in init.dims:
        n *= int(d)
    return n * onnx_models._BYTES.get(init.data_type, 4)


def cpu_has_vnni() -> bool:
    """Whether this x86 CPU has the VNNI dot-product instructions (no saturation risk for u8*s8 products)."""
    from mdeploy import machine

    return machine.has_vnni()


def is_arm() -> bool:
    from mdeploy import machine

    return machine.is_arm()
