"""The small value types every layer shares: formats, model handles, tensor specs, tolerances.

Only paths, these types and numpy arrays cross module boundaries; framework objects never do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from mdeploy.errors import InputError
from mdeploy.lazy import numpy as np


class Format(StrEnum):
    """A model format mdeploy can read or write."""

    ONNX = "onnx"
    PYTORCH_EXPORTED = "pytorch-exported"
    TORCHSCRIPT = "torchscript"
    PYTORCH_MODULE = "pytorch-module"
    SAVEDMODEL = "savedmodel"
    KERAS = "keras"
    TFLITE = "tflite"
    TENSORRT = "tensorrt"
    HF_MODEL = "hf-model"  # a Hugging Face model folder: config.json + safetensors (save_pretrained)
    GENAI = "genai"  # an onnxruntime-genai folder: genai_config.json + model.onnx, a language model with its KV cache

    @classmethod
    def parse(cls, text: str) -> Format:
        try:
            return cls(text.lower())
        except ValueError:
            known = ", ".join(f.value for f in cls)
            raise InputError(f"unknown format '{text}'", hint=f"known formats: {known}") from None

    @property
    def suffix(self) -> str:
        """The extension mdeploy writes this format with: "" for a folder (SavedModel) or code (a pytorch-module).
        The one format -> suffix table: convert's hops, quantize's output check and the pipeline's step files read it."""
        return _WRITTEN[self]


# what each format is written as; _SUFFIXES below also reads the other extensions a format comes with
_WRITTEN = {
    Format.ONNX: ".onnx",
    Format.PYTORCH_EXPORTED: ".pt2",
    Format.TORCHSCRIPT: ".pt",
    Format.PYTORCH_MODULE: "",
    Format.SAVEDMODEL: "",
    Format.KERAS: ".keras",
    Format.TFLITE: ".tflite",
    Format.TENSORRT: ".engine",
    Format.HF_MODEL: "",
    Format.GENAI: "",
}
_SUFFIXES = {
    **{suffix: fmt for fmt, suffix in _WRITTEN.items() if suffix},
    ".ts": Format.TORCHSCRIPT,
    ".plan": Format.TENSORRT,
}
# `file.py:factory` or `package.module:factory`
_FACTORY = re.compile(r"^(?P<target>[^:]+\.py|[A-Za-z_][\w.]*):(?P<attr>[A-Za-z_]\w*)$")


# what a folder output is, by the source's format (a SavedModel otherwise): a language model goes to onnxruntime-genai
_FOLDER_OUTPUT = {Format.HF_MODEL: Format.GENAI}


def format_for_output(path: Path, source: Format | None = None) -> Format:
    """The format an output path asks for, by its extension; a folder is a SavedModel, or an onnxruntime-genai folder
    for a Hugging Face language model `source`."""
    if path.suffix in _SUFFIXES:
        return _SUFFIXES[path.suffix]
    if path.suffix == "":
        return _FOLDER_OUTPUT.get(source, Format.SAVEDMODEL) if source is not None else Format.SAVEDMODEL
    known = ", ".join(sorted(_SUFFIXES))
    raise InputError(
        f"cannot tell the output format from '{path.name}'",
        hint=f"use one of the extensions {known}, or give --to FORMAT",
    )


@dataclass(frozen=True)
class ModelRef:
    """A handle to a model on disk (never a loaded model).

    For a pytorch-module the handle is the factory spec (`file.py:factory` or `pkg.mod:factory`)
    and the optional state_dict file given with `--weights`.
    """

    path: Path
    format: Format
    factory: str | None = None
    weights: Path | None = None
    signature: str | None = None  # the SavedModel signature to call (`--signature`)
    allow_unsafe: bool = False  # Keras: the user explicitly allowed unsafe deserialization

    @property
    def name(self) -> str:
        return self.factory or str(self.path)

    @property
    def is_code(self) -> bool:
        """True for a module built by code (`FILE.py:FACTORY`, `pkg.module:FACTORY`), not read from a file."""
        return self.factory is not None

    @staticmethod
    def code_parts(spec: str) -> tuple[str, str] | None:
        """(target, FACTORY) when `spec` is written as code: target is FILE.py of `FILE.py:FACTORY` or pkg.module of
        `pkg.module:FACTORY`; None otherwise. Only the text is read (the pipeline resolves FILE relative to its own
        file, and importing pkg.module to check it would load its framework); a caller decides whether an existing
        path of that shape is a file instead. The one place the pattern is written."""
        match = _FACTORY.match(spec)
        return (match["target"], match["attr"]) if match else None

    def with_load_options(self, options: dict[str, Any]) -> ModelRef:
        """The same model, loaded with the `--signature` / `--unsafe-deserialization` the user gave."""
        return replace(self, signature=options.get("signature") or self.signature,
                       allow_unsafe=bool(options.get("unsafe_deserialization")) or self.allow_unsafe)

    @classmethod
    def parse(cls, spec: str, fmt: Format | str | None = None, weights: str | Path | None = None) -> ModelRef:
        """Recognise a model from how the user named it; `fmt` overrides detection."""
        fmt = Format.parse(fmt) if isinstance(fmt, str) else fmt
        weights_path = Path(weights) if weights else None
        if weights_path is not None and not weights_path.is_file():
            raise InputError(f"weights file not found: {weights_path}")
        code = cls.code_parts(spec)
        if (fmt in (None, Format.PYTORCH_MODULE)) and code and not Path(spec).exists():
            target = code[0]
            if target.endswith(".py") and not Path(target).is_file():
                raise InputError(f"factory file not found: {target}", hint="give FILE.py:FACTORY or package.module:FACTORY")
            return cls(Path(target), Format.PYTORCH_MODULE, factory=spec, weights=weights_path)
        if fmt == Format.PYTORCH_MODULE:
            raise InputError(f"'{spec}' is not a factory spec", hint="give FILE.py:FACTORY or package.module:FACTORY")
        if weights_path is not None:
            raise InputError("--weights applies only to a FILE.py:FACTORY model", hint="a state_dict needs the code that builds the module")
        path = Path(spec)
        if not path.exists():
            raise InputError(f"model not found: {spec}")
        if fmt is None:
            fmt = _detect(path)
        return cls(path, fmt)


def _detect(path: Path) -> Format:
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return Format.SAVEDMODEL
        if (path / "genai_config.json").is_file():
            return Format.GENAI
        if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
            return Format.HF_MODEL
        raise InputError(f"{path} is a folder but not a SavedModel (no saved_model.pb inside) nor a language model",
                         hint="a SavedModel has saved_model.pb, a Hugging Face model config.json and *.safetensors "
                         "(save_pretrained), an onnxruntime-genai model genai_config.json")
    if path.suffix in _SUFFIXES:
        return _SUFFIXES[path.suffix]
    known = ", ".join(sorted(_SUFFIXES))
    raise InputError(
        f"cannot tell the format of '{path.name}' from its extension",
        hint=f"known extensions: {known}, a SavedModel folder, or FILE.py:FACTORY; or give --from FORMAT",
    )


Dim = int | str  # a fixed size, or a symbolic name such as "batch"


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, shape (ints, or names for dynamic axes) and numpy dtype name.

    `value_range` is a hint for random inputs, e.g. token ids must stay below the vocabulary size.
    """

    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"
    value_range: tuple[float, float] | None = None
    # False when `--input` named no dtype: float32 is then a default that what the model says may replace
    dtype_given: bool = field(default=True, compare=False, repr=False)

    @property
    def is_dynamic(self) -> bool:
        return any(not isinstance(d, int) or d < 0 for d in self.shape)

    def shape_text(self) -> str:
        return "[" + ", ".join(str(d) for d in self.shape) + "]"

    def fits(self, array: np.ndarray) -> str | None:
        """None when `array` fits this spec, else what is wrong (never casts or reshapes)."""
        if str(array.dtype) != self.dtype:
            return f"dtype {array.dtype}, the model wants {self.dtype}"
        if array.ndim != len(self.shape):
            return f"shape {list(array.shape)} has rank {array.ndim}, the model wants {self.shape_text()}"
        for axis, (got, want) in enumerate(zip(array.shape, self.shape)):
            if isinstance(want, int) and want >= 0 and got != want:
                return f"shape {list(array.shape)}: axis {axis} is {got}, the model wants {self.shape_text()}"
        return None

    @classmethod
    def parse(cls, text: str) -> TensorSpec:
        """Parse `NAME:SHAPE[:DTYPE]`, SHAPE as `1x3x224x224` or `1,3,224,224`."""
        parts = text.rsplit(":", 2) if text.count(":") >= 2 else text.split(":")
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise InputError(
                f"cannot parse --input '{text}'",
                hint="write NAME:SHAPE[:DTYPE], e.g. input_ids:1x128:int64 or x:1,3,224,224",
            )
        name, shape_text = parts[0], parts[1]
        dtype = parts[2] if len(parts) == 3 else "float32"
        try:
            shape = tuple(int(d) for d in re.split(r"[x,]", shape_text) if d != "")
        except ValueError:
            raise InputError(
                f"cannot parse the shape '{shape_text}' in --input '{text}'",
                hint="dimensions are positive integers, e.g. 1x3x224x224",
            ) from None
        if not shape and shape_text not in ("", "scalar") or any(d <= 0 for d in shape):
            raise InputError(f"bad shape '{shape_text}' in --input '{text}'", hint="dimensions are positive integers")
        try:
            dtype = np.dtype(dtype).name
        except TypeError:
            raise InputError(f"unknown dtype '{dtype}' in --input '{text}'", hint="e.g. float32, float16, int64, int32, bool") from None
        return cls(name, shape, dtype, dtype_given=len(parts) == 3)


def parse_specs(values: list[Any] | None) -> list[TensorSpec]:
    """`--input` values as TensorSpecs: every verb that takes `--input` reads it here, and API callers may pass
    TensorSpecs already."""
    return [v if isinstance(v, TensorSpec) else TensorSpec.parse(v) for v in values or []]


def classifier_choice(outputs: list[str] | None, none: bool) -> tuple[str, ...] | None:
    """`--classifier-output NAME`... and `--no-classifier` as Tolerance.classifier_outputs."""
    if outputs and none:
        raise InputError("give --classifier-output or --no-classifier, not both")
    if none:
        return ()
    return tuple(outputs) if outputs else None


def parse_dynamic(text: str) -> tuple[str, int, str]:
    """Parse `--dynamic NAME:AXIS[:DIMNAME]`; axis 0 is called `batch` unless named."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise InputError(f"cannot parse --dynamic '{text}'", hint="write NAME:AXIS[:DIMNAME], e.g. input_ids:0 or input_ids:1:sequence")
    try:
        axis = int(parts[1])
    except ValueError:
        raise InputError(f"the axis in --dynamic '{text}' is not an integer", hint="e.g. input_ids:1") from None
    dim_name = parts[2] if len(parts) == 3 and parts[2] else ("batch" if axis == 0 else f"dim{axis}")
    return parts[0], axis, dim_name


@dataclass(frozen=True)
class Tolerance:
    """When two outputs count as equal.

    Elementwise `|cand - ref| <= atol + rtol * |ref|` (numpy.allclose's rule, reference on the right), and
    where set, a floor on cosine similarity and top-1 agreement (the criteria that mean something for
    quantized models, whose elementwise error is large by design).
    """

    atol: float | None = 1e-3
    rtol: float | None = 1e-3
    min_cosine: float | None = None
    min_top1: float | None = None
    source: str = "fp32 default"
    # which outputs are class scores, the only ones top-1 is judged on: None decides per output (graph, name,
    # shape; see validation/scores.py), a tuple names them (`--classifier-output`), () means none (`--no-classifier`)
    classifier_outputs: tuple[str, ...] | None = None

    def describe(self) -> str:
        parts = []
        if self.atol is not None:
            parts.append(f"atol={self.atol:g}")
        if self.rtol is not None:
            parts.append(f"rtol={self.rtol:g}")
        if self.min_cosine is not None:
            parts.append(f"cosine>={self.min_cosine:g}")
        if self.min_top1 is not None:
            parts.append(f"top1>={self.min_top1:g}")
        return ", ".join(parts) + f" ({self.source})"

    def with_overrides(self, atol: float | None, rtol: float | None) -> Tolerance:
        if atol is None and rtol is None:
            return self
        new = replace(
            self,
            atol=atol if atol is not None else (self.atol if self.atol is not None else 0.0),
            rtol=rtol if rtol is not None else (self.rtol if self.rtol is not None else 0.0),
            source="user",
        )
        return new


# Defaults per precision. fp32: a correct export of a ResNet-50 differs by ~1e-3 on outputs near 10, which
# atol+rtol*|ref| = 1e-3 + 1e-3*10 allows, while a real bug (a wrong op, a frozen axis) is off by far more.
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=1e-3, rtol=1e-3, source="fp32 default"),
    "fp16": Tolerance(atol=1e-2, rtol=1e-2, min_cosine=0.999, source="fp16 default"),
    "int8": Tolerance(atol=None, rtol=None, min_cosine=0.99, min_top1=0.9, source="int8 default"),
    # weight-only int4 (MatMulNBits): the bar for a Linear-dominated transformer is logits cosine >= 0.99
    "int4": Tolerance(atol=None, rtol=None, min_cosine=0.99, min_top1=0.8, source="int4 default"),
}


def tolerance_for(precision: str, atol: float | None = None, rtol: float | None = None,
                  classifier_outputs: tuple[str, ...] | None = None) -> Tolerance:
    """The default tolerance for `precision`, with the user's --atol / --rtol (finite, >= 0) over it."""
    for flag, value in (("--atol", atol), ("--rtol", rtol)):
        if value is not None and not (value >= 0 and value != float("inf")):
            raise InputError(f"{flag} {value:g} is not a tolerance", hint=f"{flag} is a finite number >= 0, e.g. {flag} 1e-4")
    return replace(DEFAULT_TOLERANCES[precision].with_overrides(atol, rtol), classifier_outputs=classifier_outputs)


__all__ = [
    "Format",
    "ModelRef",
    "TensorSpec",
    "Tolerance",
    "DEFAULT_TOLERANCES",
    "tolerance_for",
    "parse_dynamic",
    "format_for_output",
]
