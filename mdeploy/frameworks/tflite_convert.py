"""Building a tf.lite.TFLiteConverter for a SavedModel signature, shared by the fp32/fp16 converter and the
INT8 quantization pass, and running it with its noise captured and its failures as one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdeploy.core import TensorSpec
from mdeploy.errors import ConversionError, clean_framework_text, first_line
from mdeploy.frameworks import tf_models
from mdeploy.logs import framework_output


@dataclass
class Prepared:
    converter: Any
    signature: str
    specs: list[TensorSpec]  # the signature's inputs, with --input dims applied
    outputs: list[str]


def prepare(path: Path, signature: str | None, inputs: list[TensorSpec]) -> Prepared:
    """A converter for one signature; with `inputs`, unknown dims are fixed through a concrete function."""
    t = tf_models.tf()
    loaded = tf_models.load_savedmodel(path)
    name, fn = tf_models.signature(loaded, path, signature)
    sig_specs, outputs = tf_models.signature_io(fn)
    specs = tf_models.fix_dims(sig_specs, inputs)
    with framework_output():
        if inputs:
            names = [s.name for s in specs]
            wrapper = t.function(lambda *args: fn(**dict(zip(names, args))), input_signature=tf_models.tf_specs(specs), autograph=False)
            converter = t.lite.TFLiteConverter.from_concrete_functions([wrapper.get_concrete_function()], loaded)
        else:
            converter = t.lite.TFLiteConverter.from_saved_model(str(path), signature_keys=[name])
    return Prepared(converter, name, specs, outputs)


def run(converter: Any, what: str) -> bytes:
    try:
        with framework_output():
            return converter.convert()
    except Exception as exc:
        raise ConversionError(f"the TFLite converter failed on {what}: {_summary(exc)}",
                              hint="run with --debug for the converter's full message") from None


def _summary(exc: BaseException) -> str:
    """The converter's MLIR errors are long; keep the first line that says what went wrong."""
    for line in str(exc).splitlines():
        if "error:" in line:
            return clean_framework_text(line.split("error:", 1)[1]).strip()[:300]
    return first_line(exc)[:300]
