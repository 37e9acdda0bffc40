"""Weight-only INT4 / INT8 quantization of ONNX models with onnxruntime's MatMulNBits quantizer.

Why weight-only: in a transformer most of the bytes (and, when decoding, most of the time) are the weights of its
MatMuls and its embedding table. Storing them in 4 bits with a scale per block of 32-128 values shrinks the model
about 6x while the activations stay float, so no calibration data is needed and accuracy holds far better than
4-bit activations would. onnxruntime runs the result with its MatMulNBits kernels (and GatherBlockQuantized for
embeddings), the same graph onnxruntime-genai's model builder writes.

`onnxruntime.quantization.matmul_nbits_quantizer` does the work; this module chooses its configuration and records
what it did. Methods:
- `rtn`: round to nearest per block, with onnxruntime's C++ kernels (its `DefaultWeightOnlyQuantConfig`; the
  `RTNWeightOnlyQuantConfig` of the same file is Intel Neural Compressor's slower Python version of the same rounding).
  The only method that also quantizes embedding tables (Gather -> GatherBlockQuantized), and the only one with 8 bits.
- `hqq`: half-quadratic quantization (optimized scales and float zero points; needs torch), MatMul only.
- `k_quant`: llama.cpp's k-quant scale search (Neural Compressor's port), MatMul only.
With hqq and k_quant the embedding tables are still quantized, by round to nearest in a second pass.

The graph is prepared as for INT8 (quantization/onnx_prepare.py: weights reaching a MatMul through a Transpose are
folded into initializers first, or they would stay float). Models over 2 GB are written with external data by the
quantizer's own saving.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mdeploy.core import Format, ModelRef
from mdeploy.deps import require
from mdeploy.errors import ConversionError, InputError, first_line
from mdeploy.logs import framework_output
from mdeploy.progress import ProgressFactory, no_progress
from mdeploy.quantization import onnx_prepare
from mdeploy.quantization.base import Pass, PassResult

VERB = "weight-only quantize"  # the pass's verb: `mdeploy quantize --weights int4|int8`
BITS = {"int4": 4, "int8": 8}
METHODS = ("rtn", "hqq", "k_quant")
BLOCK_SIZES = (16, 32, 64, 128, 256)
ACCURACY_LEVELS = (0, 1, 2, 3, 4)  # MatMulNBits: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 compute
SWITCH = ("auto", "on", "off")
_FLOATS = (1, 10, 16)  # TensorProto FLOAT, FLOAT16, BFLOAT16


@dataclass
class WeightOnlyOptions:
    weights: str = field(default="int4", metadata={"help": "int4 | int8: bits per weight"})
    block_size: int = field(default=32, metadata={"help": "weights per scale: 16, 32, 64, 128 or 256"})
    method: str = field(default="rtn", metadata={"help": "rtn | hqq | k_quant"})
    symmetric: str = field(default="auto", metadata={"help": "auto | on | off (auto: on for rtn; hqq and k_quant "
                                                              "are asymmetric only)"})
    accuracy_level: int | None = field(default=None, metadata={"help": "MatMulNBits compute type: 0 unset, 1 fp32, "
                                                                        "2 fp16, 3 bf16, 4 int8 (default 4: fastest on CPU)"})
    exclude: list[str] = field(default_factory=list, metadata={"help": "node names kept in float"})
    skip_preprocess: bool = field(default=False, metadata={"help": "skip constant folding"})


@dataclass
class Settings:
    bits: int
    block_size: int
    method: str
    symmetric: bool
    accuracy_level: int
    notes: list[str]


def resolve(o: WeightOnlyOptions) -> Settings:
    """Check the options (exit 2 on a bad one, before any work) and resolve `auto`."""
    if o.weights not in BITS:
        raise InputError(f"unknown --weights '{o.weights}'", hint="choose int4 or int8")
    if o.method not in METHODS:
        raise InputError(f"unknown --method '{o.method}'", hint="choose " + " | ".join(METHODS))
    if o.block_size not in BLOCK_SIZES:
        raise InputError(f"--block-size {o.block_size} is not one onnxruntime's MatMulNBits takes",
                         hint="choose " + ", ".join(map(str, BLOCK_SIZES)) + " (32 is the usual choice for int4)")
    if o.symmetric not in SWITCH:
        raise InputError(f"unknown --symmetric '{o.symmetric}'", hint="choose " + " | ".join(SWITCH))
    level = 4 if o.accuracy_level is None else o.accuracy_level
    if level not in ACCURACY_LEVELS:
        raise InputError(f"--accuracy-level {level} is not a MatMulNBits accuracy level",
                         hint="choose 0 (unset), 1 (fp32), 2 (fp16), 3 (bf16) or 4 (int8 compute, the fast one on CPU)")
    bits = BITS[o.weights]
    notes = []
    if o.method != "rtn":
        if bits != 4:
            raise InputError(f"--method {o.method} writes 4-bit weights only", hint="use --weights int4, or --method rtn")
        if o.symmetric == "on":
            raise InputError(f"--method {o.method} is asymmetric only (its zero points are part of the method)",
                             hint="drop --symmetric, or use --method rtn")
        symmetric = False
    else:
        symmetric = o.symmetric != "off"
    if o.accuracy_level is None:
        notes.append("accuracy level 4: MatMulNBits computes with int8 activations (onnxruntime's fast CPU path; "
                     "--accuracy-level 1 computes in float32)")
    return Settings(bits, o.block_size, o.method, symmetric, level, notes)


class OnnxWeightOnly(Pass):
    verb: ClassVar[str] = VERB
    sources: ClassVar[tuple[Format, ...]] = (Format.ONNX,)
    target: ClassVar[Format] = Format.ONNX
    Options: ClassVar[type] = WeightOnlyOptions
    name: ClassVar[str] = "onnxruntime.quantization.matmul_nbits_quantizer"
    progress: ProgressFactory = staticmethod(no_progress)
    producers: dict[str, tuple[str, str, list[str]]] = {}  # of the model last quantized: for the accuracy loop

    def run(self, src: ModelRef, out: Path, options: WeightOnlyOptions) -> PassResult:
        """Prepare, quantize the weights into `out`, and record which nodes were quantized and which stayed float."""
        s = resolve(options)
        with tempfile.TemporaryDirectory(prefix="mdeploy-weights-") as work:
            start = time.perf_counter()
            prepared = onnx_prepare.prepare(src.path, Path(work), not options.skip_preprocess, infer_shapes=False)
            self.producers = prepared.producers
            unknown = sorted(set(options.exclude) - prepared.node_names)
            if unknown:
                raise InputError(f"--exclude names no node of the model: {', '.join(unknown[:5])}",
                                 hint="node names are listed by mdeploy inspect --json")
            onnx = require("onnx", extra="onnx")
            # the graph first, a large model's weights left in their file: planning and the opset move read the
            # structure only (onnx's version converter copies the whole model it is given, and cannot take one past
            # 2 GB); the weights are read once, into the model the quantizer rewrites
            model = onnx.load(str(prepared.path), load_external_data=False)
            rewritten = gemms_as_matmul(model, set(options.exclude), prepared.path.parent)
            plan = plan_nodes(model, s, set(options.exclude))
            model = _opset_for_int4_tables(model, plan)
            onnx.external_data_helper.load_external_data_for_model(model, str(prepared.path.parent))
            prepared_s = round(time.perf_counter() - start, 3)
            start = time.perf_counter()
            quantized_model = _quantize(model, s, plan)
            _save(quantized_model, out, prepared.large)
        done = quantized_ops(out, plan)
        left = [*plan.left_float, *({"node": n, "op_type": op, "reason": "onnxruntime's quantizer left it float"}
                                     for n, op in plan.candidates.items() if n not in done)]
        details: dict[str, Any] = {
            "mode": "weight-only",
            "weights": options.weights,
            "bits": s.bits,
            "block_size": s.block_size,
            "method": s.method,
            "symmetric": s.symmetric,
            "accuracy_level": s.accuracy_level,
            "quantized": {op: sorted(n for n in done if plan.candidates[n] == op) for op in ("MatMul", "Gather")},
            "left_float": left,
            "exclude": list(options.exclude),
            "weight_bytes": {"quantized": sum(plan.bytes[n] for n in done), "total_float": plan.total_float_bytes},
            "preprocess_seconds": prepared_s,
            "quantize_seconds": round(time.perf_counter() - start, 3),
        }
        counts = {op: len(v) for op, v in details["quantized"].items()}
        if rewritten:
            details["gemm_as_matmul"] = rewritten
        if plan.by_rtn:
            details["rounded_to_nearest"] = plan.by_rtn
            s.notes.append(f"{len(plan.by_rtn)} MatMuls rounded to nearest instead of {s.method} (an odd number of "
                           f"blocks per column, which onnxruntime's k_quant cannot pack)")
        notes = s.notes + prepared.notes + ([f"{rewritten} Gemm nodes written as MatMul + Add, so that their weights "
                                              "can be quantized (the quantizer takes MatMul only)"] if rewritten else []) + [
            f"{s.bits}-bit weights ({s.method}, blocks of {s.block_size}, {'symmetric' if s.symmetric else 'asymmetric'}): "
            f"{counts['MatMul']} MatMul and {counts['Gather']} Gather quantized, {len(left)} left float"
            + (f" ({_reasons(left)})" if left else "")
        ]
        return PassResult(ModelRef(out, Format.ONNX), notes=notes, details=details)


def gemms_as_matmul(model: Any, excluded: set[str], base_dir: Path | None = None) -> int:
    """Rewrite each Gemm with a constant 2-D weight (alpha 1, beta 1, A not transposed) as MatMul (+ Add of its bias).

    torch exports a Linear applied to a 2-D input as Gemm, which MatMulNBits does not replace; as MatMul its weight
    is quantized like every other. The MatMul keeps the Gemm's name (so --exclude and the report name the node the
    user sees) and the Add produces the Gemm's output. A weight in external data is read from `base_dir` when it must
    be transposed. Returns how many were rewritten."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes, count = [], 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight = inits.get(node.input[1]) if node.op_type == "Gemm" and len(node.input) > 1 else None
        if (weight is None or node.name in excluded or node.domain not in ("", "ai.onnx") or len(weight.dims) != 2
                or attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0
                or weight.data_type not in _FLOATS):
            nodes.append(node)
            continue
        name = weight.name
        if attrs.get("transB", 0):
            name = f"{weight.name}_transposed_for_{node.name}"
            values = numpy_helper.to_array(weight, str(base_dir) if base_dir else "")
            graph.initializer.append(numpy_helper.from_array(values.T.copy(), name))
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        product = f"{node.output[0]}_matmul" if bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], name], [product], name=node.name))
        if bias:
            nodes.append(helper.make_node("Add", [product, bias], [node.output[0]], name=f"{node.name}_bias"))
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
        used = {i for n in graph.node for i in n.input}
        kept = [i for i in graph.initializer if i.name in used or i.name in {o.name for o in graph.output}]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return count


@dataclass
class NodePlan:
    """Which MatMul / Gather nodes can be quantized (name -> op), which stay float and why, and their weight bytes."""

    candidates: dict[str, str] = field(default_factory=dict)
    left_float: list[dict[str, str]] = field(default_factory=list)
    bytes: dict[str, int] = field(default_factory=dict)
    dims: dict[str, list[int]] = field(default_factory=dict)
    total_float_bytes: int = 0
    by_rtn: list[str] = field(default_factory=list)  # MatMuls the chosen method cannot take, rounded to nearest instead


def plan_nodes(model: Any, s: Settings, excluded: set[str]) -> NodePlan:
    """Every MatMul and every Gather on a float table, sorted into those the quantizer will take and those it would
    leave float (with the reason), from the rules of onnxruntime 1.31's MatMulNBits quantizer."""
    inits = {i.name: i for i in model.graph.initializer}
    plan = NodePlan(total_float_bytes=sum(_nbytes(i) for i in inits.values() if i.data_type in _FLOATS))
    for node in model.graph.node:
        if node.op_type == "Gemm" and len(node.input) > 1 and node.input[1] in inits:  # not rewritten as MatMul
            why = "excluded (--exclude)" if node.name in excluded else "a Gemm with alpha, beta or transA set"
            plan.left_float.append({"node": node.name, "op_type": "Gemm", "reason": why})
        if node.op_type not in ("MatMul", "Gather") or node.domain not in ("", "ai.onnx"):
            continue
        weight = inits.get(node.input[1] if node.op_type == "MatMul" else node.input[0])
        if node.op_type == "Gather" and (weight is None or weight.data_type not in _FLOATS):
            continue  # shape arithmetic, or a lookup in an activation: not an embedding table
        reason = _why_float(node, weight, s, excluded)
        if reason:
            plan.left_float.append({"node": node.name, "op_type": node.op_type, "reason": reason})
        else:
            plan.candidates[node.name] = node.op_type
            plan.bytes[node.name] = _nbytes(weight)
            plan.dims[node.name] = list(weight.dims)
    return plan


def _why_float(node: Any, weight: Any, s: Settings, excluded: set[str]) -> str | None:
    if node.name in excluded:
        return "excluded (--exclude)"
    if weight is None:
        return "its weight is computed at run time (a product of two activations, such as attention scores)"
    if weight.data_type not in _FLOATS:
        return "its weight is not float"
    dims = list(weight.dims)
    if node.op_type == "MatMul":
        if len(dims) < 2 or any(d != 1 for d in dims[:-2]):
            return f"its weight has shape {dims}: MatMulNBits takes a 2-D weight"
        return None
    if s.bits != 4:
        return "GatherBlockQuantized (quantized embeddings) takes 4-bit data only"
    if len(dims) < 2:
        return f"its table has shape {dims}: blocks are taken along the second axis"
    if dims[1] % s.block_size:
        return f"its rows ({dims[1]} values) do not split into blocks of {s.block_size}"
    return None


def _opset_for_int4_tables(model: Any, plan: NodePlan) -> Any:
    """The model at ai.onnx opset 21 when embedding tables are to be stored as int4 (a type opset 21 introduced).

    onnxruntime's quantizer only rewrites the opset number, which leaves nodes whose schema changed since (ReduceMean's
    axes became an input at 18) invalid; onnx's version converter moves them properly. Where it cannot, the tables
    stay float and the report says why."""
    gathers = [n for n, op in plan.candidates.items() if op == "Gather"]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if not gathers or opset is None or opset >= 21:
        return model
    from onnx import version_converter

    try:
        with framework_output():
            converted = version_converter.convert_version(model, 21)
        converted.ir_version = max(converted.ir_version, 10)
        return converted
    except Exception as exc:
        why = f"int4 tables need ai.onnx opset 21, and onnx cannot move this model from {opset}: {first_line(exc)[:120]}"
        for name in gathers:
            del plan.candidates[name]
            plan.left_float.append({"node": name, "op_type": "Gather", "reason": why})
        return model


def _quantize(model: Any, s: Settings, plan: NodePlan) -> Any:
    """Run onnxruntime's quantizer: MatMuls with the chosen method, embedding tables by round to nearest."""
    q = require("onnxruntime.quantization.matmul_nbits_quantizer", extra="onnx")
    matmuls = {n for n, op in plan.candidates.items() if op == "MatMul"}
    gathers = {n for n, op in plan.candidates.items() if op == "Gather"}
    if s.method == "hqq":
        require("torch", extra="torch", purpose="quantize with --method hqq")
    rtn_ops = ("MatMul", "Gather") if s.method == "rtn" and gathers else ("MatMul",)
    passes: list[tuple[Any, set[str]]] = []
    if s.method == "rtn":
        config = q.DefaultWeightOnlyQuantConfig(block_size=s.block_size, is_symmetric=s.symmetric,
                                                accuracy_level=s.accuracy_level, op_types_to_quantize=rtn_ops,
                                                bits=s.bits)
        passes.append((config, matmuls | (gathers if "Gather" in rtn_ops else set())))
    else:
        config = (q.HQQWeightOnlyQuantConfig(block_size=s.block_size, bits=s.bits, op_types_to_quantize=("MatMul",))
                  if s.method == "hqq" else q.KQuantWeightOnlyQuantConfig(op_types_to_quantize=("MatMul",)))
        if s.method == "k_quant":
            # onnxruntime 1.31's k_quant packs the zero points of two columns into one byte when a column has an odd
            # number of blocks and then fails to reshape them: those MatMuls are rounded to nearest instead
            plan.by_rtn = sorted(n for n in matmuls if -(-plan.dims[n][-2] // s.block_size) % 2)
        passes.append((config, matmuls - set(plan.by_rtn)))
        # hqq and k_quant cover MatMul only: the embedding tables (and the MatMuls above) by round to nearest
        rest = gathers | set(plan.by_rtn)
        passes.append((q.DefaultWeightOnlyQuantConfig(block_size=s.block_size, is_symmetric=s.symmetric,
                                                      accuracy_level=s.accuracy_level, bits=4,
                                                      op_types_to_quantize=("MatMul", "Gather")), rest))
    for config, chosen in passes:
        if not chosen:
            continue
        names = {n.name for n in model.graph.node}
        quantizer = q.MatMulNBitsQuantizer(model, bits=s.bits, block_size=s.block_size, is_symmetric=s.symmetric,
                                           accuracy_level=s.accuracy_level,
                                           nodes_to_exclude=sorted(names - chosen), algo_config=config)
        try:
            with framework_output():
                quantizer.process()
        except Exception as exc:
            raise ConversionError(f"onnxruntime's MatMulNBits quantizer failed ({s.method}): {first_line(exc)}",
                                  hint="try --method rtn, or --exclude the node it names") from None
        model = quantizer.model.model
    return model


def _save(model: Any, out: Path, large: bool) -> None:
    """Write the quantized model; over protobuf's 2 GB limit with its weights in one external file beside it."""
    from onnxruntime.quantization.onnx_model import ONNXModel

    large = large or onnx_prepare.weight_bytes(model) > onnx_prepare.EXTERNAL_DATA_THRESHOLD
    with framework_output():
        ONNXModel(model).save_model_to_file(str(out), use_external_data_format=large)


def quantized_ops(path: Path, plan: NodePlan) -> set[str]:
    """The candidates really replaced in the written model (their MatMul / Gather node is gone)."""
    from mdeploy.frameworks import onnx_models

    model = onnx_models.load_proto(path)
    present = {(n.name, n.op_type) for n in model.graph.node}
    return {n for n, op in plan.candidates.items() if (n, op) not in present}


def _reasons(left: list[dict[str, str]]) -> str:
    counts: dict[str, int] = {}
    for item in left:
        counts[item["reason"]] = counts.get(item["reason"], 0) + 1
    return "; ".join(f"{n}x {reason}" for reason, n in counts.items())


def _nbytes(tensor: Any) -> int:
    from mdeploy.frameworks import onnx_models

    n = 1
    for d in tensor.dims:
        n *= int(d)
    return n * onnx_models._BYTES.get(tensor.data_type, 4)
