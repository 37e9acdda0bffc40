"""The float16 ONNX model a `--precision fp16` engine is built from, proven on CPU before any GPU is involved.

Why it exists: TensorRT 11 dropped the FP16 builder flag (networks are strongly typed: a tensor's type is the type the
ONNX model gives it), and on 10.x mdeploy builds strongly typed networks too, so fp16 means an ONNX model whose
weights and activations are float16. onnxconverter-common's `float16.convert_float_to_float16` writes it (inputs and
outputs kept float32 by default, Cast nodes at the edges, so callers feed the same arrays). A float16 model can lose
accuracy (overflow past 65504, underflow of small weights), so the converted model is compared with the float32 one on
onnxruntime at the profile's OPT shapes with the fp16 tolerance before TensorRT sees it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mdeploy.core import Format, ModelRef, TensorSpec, tolerance_for
from mdeploy.deps import require
from mdeploy.errors import ConversionError, first_line
from mdeploy.frameworks import onnx_models
from mdeploy.converters.tensorrt_profiles import Profile

_PROTOBUF_LIMIT = 2_000_000_000


def convert_to_float16(src: Path, dst: Path, keep_io_types: bool = True) -> Path:
    """Write `src` as a float16 ONNX model to `dst` (external data beside it when the model is over protobuf's limit)."""
    onnx = require("onnx", extra="onnx")
    float16 = require("onnxconverter_common.float16", extra="tensorrt", purpose="convert the ONNX model to float16")
    model = onnx_models.load_proto(src, with_data=True)
    try:
        converted = float16.convert_float_to_float16(model, keep_io_types=keep_io_types)
    except Exception as exc:
        raise ConversionError(f"onnxconverter-common cannot convert {src.name} to float16: {first_line(exc)}",
                              hint="build the engine with --precision fp32") from None
    del model
    if converted.ByteSize() > _PROTOBUF_LIMIT:
        onnx.save_model(converted, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=dst.name + ".data", size_threshold=1024)
    else:
        onnx.save(converted, str(dst))
    return dst


def validate_float16(fp32: Path, fp16: Path, profiles: list[Profile], seed: int = 0) -> Any:
    """Run both models on onnxruntime (CPU) on random inputs at each profile's OPT shape; the Comparison (truthy when
    every output is within the fp16 tolerance)."""
    from mdeploy import registry
    from mdeploy.validation import inputs as vinputs
    from mdeploy.validation.run import compare

    opt = {p.name: p.opt for p in profiles}
    ref = registry.open_runner(ModelRef(fp32, Format.ONNX))
    cand = registry.open_runner(ModelRef(fp16, Format.ONNX))
    specs = [TensorSpec(s.name, opt.get(s.name, s.shape), s.dtype, s.value_range) for s in ref.input_specs()]
    feed = vinputs.random_feed(specs, np.random.default_rng(seed))
    return compare(ref, cand, [feed], tolerance_for("fp16"), label="float16 ONNX vs float32 ONNX (onnxruntime, CPU)")


def float16_model(src: Path, dst: Path, profiles: list[Profile], seed: int = 0) -> tuple[Path, Any]:
    """Convert, then prove it: the float16 model's path and its Comparison; a ConversionError when it is off."""
    convert_to_float16(src, dst)
    comparison = validate_float16(src, dst, profiles, seed)
    if not comparison:
        worst = "; ".join(f"{o.name}: max abs error {o.max_abs_error:.3g}, cosine {o.cosine:.4f}"
                          for o in comparison.failures()[:3]) or "; ".join(comparison.notes[:2])
        raise ConversionError(f"the float16 ONNX model of {src.name} does not compute what the float32 one does "
                              f"(fp16 tolerance, onnxruntime on CPU): {worst}",
                              hint="build with --precision fp32, or quantize to int8 with mdeploy quantize --target tensorrt")
    return dst, comparison
