"""Every onnxruntime session mdeploy opens goes through here, so one rule holds everywhere: a model newer
than the runtime either runs, or fails with one line that says why.

onnx saves files at its own newest IR version (onnx 1.23: IR 14) while onnxruntime refuses any IR version
above the one it was built with, even when every operator the model uses is one it knows. The IR version is
only the file format's revision; what a runtime must implement is the opset. So when every opset the model
imports is one the runtime accepts, the session is opened from the model's bytes with the IR version
lowered in memory (the file is never touched), and a note says so. When an opset is too new, nothing
helps but another runtime or an older opset, and the error says both.

The runtime's limits are found by probing it with a one-node model (onnxruntime exposes no "max IR version"
or "released opset" query): fast (well under a millisecond a probe), and true for the build installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from mdeploy.deps import require
from mdeploy.errors import ModelLoadError, first_line
from mdeploy.frameworks import onnx_models, onnx_skeleton
from mdeploy.logs import framework_output

# The folder onnxruntime resolves external data against when a model is loaded from bytes.
EXTERNAL_FOLDER_KEY = "session.model_external_initializers_file_folder_path"
_BASE_IR, _BASE_OPSET = 7, 13  # what a probe uses for the part it does not probe (onnx 1.8: any runtime reads it)


@dataclass
class Session:
    """An onnxruntime InferenceSession and what the user should know about how it was opened."""

    session: Any
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Fit:
    """How a model fits this runtime: the IR version to run it at (None: as it is), and the opsets it lacks."""

    ir_version: int | None
    too_new: dict[str, tuple[int, int]]  # domain -> (the model's opset, the highest this runtime reads; 0: none)


def _domain(name: str) -> str:
    return "ai.onnx" if name in ("", "ai.onnx") else name


def _accepts(ir_version: int, domain: str, opset: int) -> bool:
    """Does this onnxruntime open a one-node model at `ir_version` that imports `domain` at `opset`?"""
    require("onnx", extra="onnx")
    ort = require("onnxruntime", extra="onnx")
    from onnx import TensorProto, helper

    imports = [helper.make_opsetid("", opset if domain == "ai.onnx" else _BASE_OPSET)]
    if domain != "ai.onnx":
        imports.append(helper.make_opsetid(domain, opset))
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [value("x", TensorProto.FLOAT, [1])],
        [value("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = ir_version
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception:
        return False
    return True


@cache
def reads_ir(version: int) -> bool:
    return _accepts(version, "ai.onnx", _BASE_OPSET)


@cache
def reads_opset(domain: str, version: int) -> bool:
    return _accepts(_BASE_IR, _domain(domain), version)


def _highest(accepts: Any, above: int) -> int:
    """The highest version below `above` that `accepts` (a monotone test): a binary search from 1."""
    low, high = 0, above  # accepts(low) assumed (0: none), not accepts(high)
    while high - low > 1:
        mid = (low + high) // 2
        if accepts(mid):
            low = mid
        else:
            high = mid
    return low


@cache
def max_ir_version() -> int:
    version = _BASE_IR
    while reads_ir(version + 1) and version < 100:
        version += 1
    return version


def runtime_version() -> str:
    return require("onnxruntime", extra="onnx").__version__


def fit(model: Any) -> Fit:
    """Check the model's IR version and opset imports against this runtime, without loading its weights."""
    too_new = {}
    for entry in model.opset_import:
        domain = _domain(entry.domain)
        if not reads_opset(domain, entry.version):
            too_new[domain] = (entry.version, _highest(lambda v, d=domain: reads_opset(d, v), entry.version))
    lowered = None
    if not reads_ir(model.ir_version) and model.ir_version > max_ir_version():  # too old is the runtime's to say
        lowered = max_ir_version()
    return Fit(lowered, too_new)


def lowered_note(model: Any, fitted: Fit, path: Path) -> str:
    return (
        f"{path.name} is IR version {model.ir_version}, newer than onnxruntime {runtime_version()} reads ({fitted.ir_version}); every "
        f"opset the model imports is one the runtime supports, so it runs at IR version {fitted.ir_version}, set in "
        "memory (the file is unchanged)"
    )


def too_new(model: Any, fitted: Fit) -> tuple[str, str]:
    """What the runtime lacks, in one line (the model's IR version and opsets, the runtime's limits), and the fix."""
    opsets = ", ".join(f"{_domain(o.domain)} opset {o.version}" for o in model.opset_import)
    limits = [f"IR version {max_ir_version()}"] + [
        f"{d} opset {best}" if best else f"no {d} opset" for d, (_, best) in fitted.too_new.items()
    ]
    text = f"IR version {model.ir_version} with {opsets}, and onnxruntime {runtime_version()} reads up to " + ", ".join(limits)
    return text, what_would_run(fitted)


def what_would_run(fitted: Fit) -> str:
    """Which onnxruntime would run a model this one cannot, and how else to get there.

    onnxruntime releases implement the opsets of the onnx release they are built on, so the first onnx release
    that defines each opset (onnx's own VERSION_TABLE) says which runtime to look for; an opset no onnx release
    known here defines was probably written by hand, or by an onnx newer than the installed one.
    """
    onnx = require("onnx", extra="onnx")
    column = {"ai.onnx": 2, "ai.onnx.ml": 3}
    wanted, unknown = [], []
    for domain, (version, _) in fitted.too_new.items():
        releases = [row[0] for row in onnx.helper.VERSION_TABLE if domain in column and row[column[domain]] >= version]
        if releases:
            wanted.append(f"{domain} opset {version} (one built on onnx {releases[0]} or later)")
        else:  # a domain onnx does not define (com.microsoft, ...) is the runtime's own
            wanted.append(f"{domain} opset {version}")
            if domain in column:
                unknown.append(f"{domain} opset {version}")
    hint = "install an onnxruntime release that supports " + ", ".join(wanted)
    if unknown:
        hint = (f"no onnx release up to the installed onnx {onnx.__version__} defines {', '.join(unknown)}, so it was "
                f"probably written by hand or by a newer onnx; {hint} when there is one")
    if "ai.onnx" in fitted.too_new:
        best = fitted.too_new["ai.onnx"][1]
        hint += f"; or re-export the model at opset {best} (e.g. `mdeploy convert SOURCE -o MODEL.onnx --opset {best}`)"
    return hint


def cannot_run_note(model: Any, fitted: Fit) -> str:
    """What `inspect` says of a model it has read but this onnxruntime cannot run: why, and what would."""
    text, hint = too_new(model, fitted)
    return f"this onnxruntime cannot run the model, which is {text}: {hint}"


def too_new_error(model: Any, path: Path, fitted: Fit) -> ModelLoadError:
    text, hint = too_new(model, fitted)
    return ModelLoadError(f"{path} is {text}", hint=hint)


def open_session(
    path: Path, options: Any, providers: list[str], proto: Any = None, edited: bool = False, purpose: str = ""
) -> Session:
    """An InferenceSession for the ONNX file at `path`, with the IR version lowered in memory when only that
    stands between the model and this runtime.

    `proto` is the model as already read (without its external data), to save reading it again; with
    `edited` it differs from the file (layerwise exposes intermediate tensors) and the session is built from
    it, its external data still resolved beside `path`. `purpose` completes the error line ("... with its
    intermediate tensors exposed").
    """
    ort = require("onnxruntime", extra="onnx")
    read = proto is None
    if read:
        proto = onnx_skeleton.load_without_weights(path)  # fit() reads the header; the runtime reads the weights itself
    fitted = fit(proto)
    if fitted.too_new:
        raise too_new_error(proto, path, fitted)
    source: Any = str(path)
    if not (fitted.ir_version or edited):
        proto = None  # the runtime reads the file: holding the weights here too would double peak memory
    notes = []
    if fitted.ir_version:
        if read:
            proto = onnx_models.load_proto(path)  # the bytes given to the runtime need every weight
        notes.append(lowered_note(proto, fitted, path))
        onnx = require("onnx", extra="onnx")
        lowered = onnx.ModelProto()
        lowered.CopyFrom(proto)
        lowered.ir_version = fitted.ir_version
        proto = lowered
    if fitted.ir_version or edited:
        source = proto.SerializeToString()
        if onnx_models.external_data_files(proto):
            options.add_session_config_entry(EXTERNAL_FOLDER_KEY, str(path.resolve().parent))
    try:
        with framework_output():
            session = ort.InferenceSession(source, options, providers=providers)
    except Exception as exc:
        raise ModelLoadError(
            f"onnxruntime cannot load {path}{purpose}: {first_line(exc)}",
            hint=f"`mdeploy inspect {path}` shows what onnx's checker finds wrong with it",
        ) from None
    return Session(session, notes)
