"""Loading SavedModels and Keras files safely, and reading what they take and return.

- A SavedModel is called through one of its signatures (`serving_default` unless `--signature` names
  another); a missing signature is an error that lists the ones that exist.
- A `.keras` file is loaded with Keras' safe mode ON: a Lambda layer stores Python bytecode, and loading it
  would run code from the file. Such a model is refused unless the user passes `--unsafe-deserialization`.

TensorFlow and Keras are imported inside these functions only (through mdeploy.deps), so that ONNX-only
commands never pay for them.
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mdeploy.core import ModelRef, TensorSpec
from mdeploy.deps import require
from mdeploy.errors import InputError, ModelLoadError, first_line
from mdeploy.logs import framework_output, quiet_loggers

DEFAULT_SIGNATURE = "serving_default"
UNSAFE_FLAG = "--unsafe-deserialization"

def tf() -> Any:
    """The tensorflow module (quiet), or a MissingDependencyError naming the extra."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    with framework_output():  # TensorFlow's C++ start-up lines go to fd 2 before any log level applies
        module = require("tensorflow", extra="tensorflow", purpose="load TensorFlow models")
    quiet_loggers()
    return module


def keras() -> Any:
    tf()
    module = require("keras", extra="tensorflow", purpose="load Keras models")
    quiet_loggers()
    return module


# --- SavedModel ------------------------------------------------------------------------------------------
def load_savedmodel(path: Path) -> Any:
    t = tf()
    if not path.is_dir() or not ((path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file()):
        raise InputError(f"{path} is not a SavedModel (no saved_model.pb inside)")
    try:
        with framework_output():
            return t.saved_model.load(str(path))
    except Exception as exc:
        raise ModelLoadError(f"cannot load the SavedModel {path}: {first_line(exc)}",
                             hint="the folder may be corrupt or incomplete (variables/ missing?)") from None


def signature(loaded: Any, path: Path, name: str | None = None) -> tuple[str, Any]:
    """The signature to call: `name`, else serving_default (or the only one there is)."""
    available = list(getattr(loaded, "signatures", {}) or {})
    if not available:
        raise ModelLoadError(
            f"the SavedModel {path} has no signatures, so there is nothing to call",
            hint="export it with signatures (Keras 3: model.export(path); TF: tf.saved_model.save(obj, path, signatures=fn))",
        )
    wanted = name
    if wanted is None:
        wanted = DEFAULT_SIGNATURE if DEFAULT_SIGNATURE in available or len(available) != 1 else available[0]
    if wanted not in available:
        raise InputError(f"the SavedModel {path} has no signature '{wanted}'",
                         hint="its signatures are: " + ", ".join(available) + "; choose one with --signature NAME")
    return wanted, loaded.signatures[wanted]


def signature_io(fn: Any) -> tuple[list[TensorSpec], list[str]]:
    """Input specs (None dims named) and output names of a signature function."""
    _, kwargs = fn.structured_input_signature
    specs = [_spec(name, spec.shape, spec.dtype) for name, spec in kwargs.items()]
    outputs = fn.structured_outputs
    names = sorted(outputs, key=_natural) if isinstance(outputs, dict) else [f"output_{i}" for i in range(len(outputs))]
    return specs, names


def _natural(name: str) -> tuple:
    """output_2 before output_10: signature outputs come back in no useful order."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _spec(name: str, shape: Any, dtype: Any) -> TensorSpec:
    dims = list(shape.as_list()) if hasattr(shape, "as_list") and shape.rank is not None else list(shape)
    named = tuple(d if d is not None else ("batch" if axis == 0 else f"dim{axis}") for axis, d in enumerate(dims))
    return TensorSpec(name, named, np.dtype(getattr(dtype, "as_numpy_dtype", dtype)).name)


# --- Keras -----------------------------------------------------------------------------------------------
def load_keras(path: Path, unsafe: bool = False) -> Any:
    """keras.saving.load_model with safe_mode on, unless the user explicitly allowed unsafe loading."""
    k = keras()
    if not path.is_file() or path.stat().st_size == 0 or not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path} is not a Keras archive (corrupt, truncated or another format)",
                             hint="save Keras 3 models with model.save('model.keras')")
    try:
        with framework_output():
            return k.saving.load_model(str(path), compile=False, safe_mode=not unsafe)
    except Exception as exc:
        text = str(exc)
        if "safe_mode" in text or "unsafe" in text.lower() or "lambda" in text.lower():
            raise ModelLoadError(
                f"{path} contains a Lambda layer (Python bytecode); loading it would run code from the file, "
                "which Keras' safe mode refuses",
                hint=f"only if you trust the file, pass {UNSAFE_FLAG}",
            ) from None
        raise ModelLoadError(f"cannot load the Keras model {path}: {first_line(exc)}",
                             hint="the file may be corrupt, or need custom objects this process does not define") from None


@dataclass
class KerasIO:
    """How a Keras model is called: its input specs (in model.inputs order), output names, input structure."""

    specs: list[TensorSpec]
    outputs: list[str]
    structure: str  # "dict" | "list" | "single"


def keras_io(model: Any) -> KerasIO:
    inputs = list(model.inputs)
    specs = [_spec(_keras_name(i), i.shape, i.dtype) for i in inputs]
    structure = "dict" if isinstance(model.input, dict) else ("list" if len(inputs) > 1 else "single")
    outputs = list(getattr(model, "output_names", None) or [])
    n_out = len(model.outputs)
    if len(outputs) != n_out:
        outputs = [f"output_{i}" for i in range(n_out)]
    return KerasIO(specs, outputs, structure)


def _keras_name(tensor: Any) -> str:
    name = str(tensor.name)
    return name.split(":")[0]


def keras_call(model: Any, io: KerasIO, feed: dict[str, Any]) -> dict[str, Any]:
    """Call a Keras model on named inputs; outputs keyed by output name (tensors, not yet numpy)."""
    if io.structure == "dict":
        args: Any = {s.name: feed[s.name] for s in io.specs}
    elif io.structure == "list":
        args = [feed[s.name] for s in io.specs]
    else:
        args = feed[io.specs[0].name]
    result = model(args, training=False)
    if isinstance(result, dict):
        return dict(result)
    if isinstance(result, (list, tuple)):
        return dict(zip(io.outputs, result))
    return {io.outputs[0]: result}


def keras_function(model: Any, io: KerasIO, specs: list[TensorSpec] | None = None) -> tuple[Any, list[Any]]:
    """A tf.function over the model with named inputs and a dict of named outputs, for tf2onnx."""
    t = tf()
    specs = specs or io.specs
    signature_specs = [t.TensorSpec(_tf_shape(s.shape), s.dtype, name=s.name) for s in specs]
    names = [s.name for s in specs]

    @t.function(input_signature=signature_specs)
    def call(*args: Any) -> dict[str, Any]:
        return keras_call(model, io, dict(zip(names, args)))

    return call, signature_specs


def _tf_shape(shape: tuple) -> list[int | None]:
    return [d if isinstance(d, int) and d >= 0 else None for d in shape]


def tf_specs(specs: list[TensorSpec]) -> list[Any]:
    t = tf()
    return [t.TensorSpec(_tf_shape(s.shape), s.dtype, name=s.name) for s in specs]


def fix_dims(specs: list[TensorSpec], given: list[TensorSpec]) -> list[TensorSpec]:
    """Model specs with unknown dims replaced by `--input` ones (which must fit the known dims)."""
    by_name = {s.name: s for s in given}
    unknown = sorted(set(by_name) - {s.name for s in specs})
    if unknown:
        raise InputError(f"--input names {', '.join(unknown)}, which is not an input of the model",
                         hint="its inputs are: " + ", ".join(s.name for s in specs))
    out = []
    for spec in specs:
        g = by_name.get(spec.name)
        if g is None:
            out.append(spec)
            continue
        if len(g.shape) != len(spec.shape) or any(isinstance(m, int) and m != d for m, d in zip(spec.shape, g.shape)):
            raise InputError(f"--input {g.name}{g.shape_text()} does not fit the model's {spec.shape_text()}",
                             hint="--input fixes unknown dimensions; the known ones must stay as they are")
        out.append(TensorSpec(spec.name, g.shape, spec.dtype))
    return out


def example_specs(specs: list[TensorSpec]) -> tuple[list[TensorSpec], dict[str, list[tuple[str, int]]]]:
    """Concrete example shapes for validation (unknown dims: batch 1, others 16) and the axes left dynamic."""
    examples, dynamic = [], {}
    for spec in specs:
        shape = []
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int) and dim >= 0:
                shape.append(dim)
            else:
                shape.append(1 if axis == 0 else 16)
                dynamic.setdefault("batch" if axis == 0 else f"{spec.name}:{axis}", []).append((spec.name, axis))
        examples.append(TensorSpec(spec.name, tuple(shape), spec.dtype, spec.value_range))
    return examples, dynamic


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def describe_savedmodel(ref: ModelRef) -> dict[str, Any]:
    loaded = load_savedmodel(ref.path)
    available = list(getattr(loaded, "signatures", {}) or {})
    signatures = {}
    for name in available:
        specs, outputs = signature_io(loaded.signatures[name])
        out_specs = loaded.signatures[name].structured_outputs
        signatures[name] = {
            "inputs": [_spec_dict(s) for s in specs],
            "outputs": [
                _spec_dict(_spec(n, out_specs[n].shape, out_specs[n].dtype)) if isinstance(out_specs, dict) else {"name": n}
                for n in outputs
            ],
        }
    variables = list(getattr(loaded, "variables", []) or [])
    info: dict[str, Any] = {"format": "savedmodel", "path": str(ref.path), "signatures": signatures}
    chosen = DEFAULT_SIGNATURE if DEFAULT_SIGNATURE in signatures else (available[0] if available else None)
    if chosen:
        info["default_signature"] = chosen
        info["inputs"] = signatures[chosen]["inputs"]
        info["outputs"] = signatures[chosen]["outputs"]
    info["variables"] = len(variables)
    info["parameters"] = int(sum(int(np.prod(v.shape)) for v in variables))
    info["parameter_bytes"] = int(sum(int(np.prod(v.shape)) * v.dtype.size for v in variables))
    info["size_bytes"] = folder_bytes(ref.path)
    if not available:
        info["notes"] = ["no signatures: nothing can call this SavedModel"]
    return info


def describe_keras(ref: ModelRef) -> dict[str, Any]:
    model = load_keras(ref.path, ref.allow_unsafe)
    io = keras_io(model)
    layers = [{"name": layer.name, "class": type(layer).__name__, "parameters": int(layer.count_params())} for layer in model.layers]
    from collections import Counter

    kinds = Counter(layer["class"] for layer in layers)
    out_specs = [_spec(n, o.shape, o.dtype) for n, o in zip(io.outputs, model.outputs)]
    return {
        "format": "keras",
        "path": str(ref.path),
        "model_name": model.name,
        "inputs": [_spec_dict(s) for s in io.specs],
        "outputs": [_spec_dict(s) for s in out_specs],
        "layers": len(layers),
        "operators": dict(kinds.most_common()),
        "parameters": int(model.count_params()),
        "trainable_parameters": int(sum(int(np.prod(w.shape)) for w in model.trainable_weights)),
        "size_bytes": ref.path.stat().st_size,
        "layer_table": layers,
    }


def _spec_dict(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "shape": list(spec.shape), "dtype": spec.dtype}
