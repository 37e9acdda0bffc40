"""Where a TensorRT engine can be built and run, and the sidecar that records where one was built.

Why it exists: an engine is compiled for one GPU and one TensorRT version. Deserialized elsewhere it fails with a
long log from deep inside TensorRT, or not at all until a kernel launch. The converter writes `X.engine.json` beside
every engine (TensorRT version, GPU name and compute capability, the portability flags, the profiles, the I/O), and
the runner compares it with the machine before it deserializes anything, so the user reads one line that says what
differs. The comparison is plain Python: it is tested where neither TensorRT nor a GPU exists.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

from mdeploy.errors import MissingDependencyError, ModelLoadError

NEEDS = "building a TensorRT engine needs an NVIDIA GPU and the tensorrt package"
RUN_NEEDS = "running a TensorRT engine needs an NVIDIA GPU and the tensorrt package"
INSTALL = "pip install 'mdeploy[tensorrt]'"
SIDECAR_VERSION = 1
HARDWARE_LEVELS = {"none": "NONE", "ampere+": "AMPERE_PLUS", "same-cc": "SAME_COMPUTE_CAPABILITY"}


def unavailable_reason() -> str | None:
    """Why TensorRT plugins cannot work here, without importing anything heavy (for `mdeploy plugins`); None when
    the tensorrt package is installed (whether a GPU answers is only known once torch/TensorRT start)."""
    if importlib.util.find_spec("tensorrt") is None:
        return f"the tensorrt package is not installed ({INSTALL}; it needs an NVIDIA GPU and CUDA)"
    return None


def require_gpu(what: str = NEEDS) -> tuple[ModuleType, ModuleType]:
    """(tensorrt, torch) with a CUDA device present, or the one MissingDependencyError a user on a CPU machine sees."""
    try:
        import tensorrt as trt  # noqa: PLC0415  only ever imported here, once the inputs were checked
    except ImportError:
        raise MissingDependencyError(what, hint=INSTALL) from None
    try:
        import torch  # noqa: PLC0415  device buffers and the device query go through torch's CUDA runtime
    except ImportError:
        raise MissingDependencyError(what, hint=f"{INSTALL} (torch with CUDA is needed for device buffers)") from None
    if not torch.cuda.is_available():
        raise MissingDependencyError(what, hint="no CUDA device was found (torch.cuda.is_available() is False): run it on a "
                                     "machine with an NVIDIA GPU, its driver and a CUDA build of torch")
    return trt, torch


def gpu(torch: Any) -> dict[str, Any]:
    """The current CUDA device: name and compute capability as 'major.minor'."""
    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return {"name": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}"}


def sidecar_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".json")


def write_sidecar(engine: Path, record: dict[str, Any]) -> Path:
    path = sidecar_path(engine)
    path.write_text(json.dumps({"mdeploy_tensorrt_sidecar": SIDECAR_VERSION, **record}, indent=2) + "\n")
    return path


def read_sidecar(engine: Path) -> dict[str, Any] | None:
    """The sidecar beside `engine`, or None when there is none (an engine built by another tool)."""
    path = sidecar_path(engine)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path} is not a readable sidecar: {exc}",
                             hint=f"rebuild the engine with mdeploy convert, or delete {path.name} to skip the check") from None
    if not isinstance(data, dict) or "tensorrt_version" not in data or "gpu" not in data:
        raise ModelLoadError(f"{path} is not an mdeploy TensorRT sidecar (no tensorrt_version / gpu)",
                             hint=f"rebuild the engine with mdeploy convert, or delete {path.name} to skip the check")
    return data


def _version(text: str) -> tuple[int, ...]:
    out = []
    for part in str(text).split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def _cc(text: str) -> tuple[int, int]:
    major, _, minor = str(text).partition(".")
    return int(major or 0), int(minor or 0)


def check_sidecar(engine_name: str, sidecar: dict[str, Any], tensorrt_version: str, here: dict[str, Any]) -> list[str]:
    """Can the engine the sidecar describes run with this TensorRT on this GPU? Raise one ModelLoadError that says
    what differs; return notes for what may work but is worth knowing (another GPU of the same compute capability).

    TensorRT's rules: a plain engine runs only with the exact TensorRT version that built it (major, minor, patch and
    build); a version-compatible one with that version or any later one (a 10.x one on 11.x too). Hardware: `none`
    ties the engine to the compute capability it was built on (and, strictly, to that GPU model), `same-cc` to the
    compute capability, `ampere+` to any GPU of compute capability 8.0 or newer.
    """
    flags = sidecar.get("flags", {})
    built_trt = str(sidecar.get("tensorrt_version"))
    built_gpu = sidecar.get("gpu", {})
    rebuild = "rebuild it here: mdeploy convert MODEL.onnx -o " + engine_name
    if flags.get("version_compatible"):
        built, now = _version(built_trt), _version(tensorrt_version)
        if now < built:
            raise ModelLoadError(
                f"{engine_name} was built with TensorRT {built_trt} (version compatible) and this is TensorRT "
                f"{tensorrt_version}: it runs with TensorRT {built_trt} or later only", hint=rebuild)
    elif built_trt != str(tensorrt_version):
        raise ModelLoadError(
            f"{engine_name} was built with TensorRT {built_trt} and this is TensorRT {tensorrt_version}: an engine runs only "
            "with the TensorRT version that built it",
            hint=rebuild + " (or build it with --version-compatible to run it on later versions)")
    level = flags.get("hardware_compatibility") or "none"
    built_cc, now_cc = _cc(built_gpu.get("compute_capability", "0.0")), _cc(here["compute_capability"])
    built_desc = f"{built_gpu.get('name', 'a GPU')} (compute capability {built_gpu.get('compute_capability')})"
    here_desc = f"{here['name']} (compute capability {here['compute_capability']})"
    if level == "ampere+":
        if now_cc < (8, 0):
            raise ModelLoadError(f"{engine_name} was built for Ampere and newer GPUs (--hardware-compatibility ampere+) and "
                                 f"this is {here_desc}", hint=rebuild)
        return []
    if built_cc != now_cc:
        raise ModelLoadError(f"{engine_name} was built for {built_desc} and this is {here_desc}: the engine runs only on "
                             "GPUs of the compute capability it was built for",
                             hint=rebuild + " (or build it with --hardware-compatibility ampere+ to run on any Ampere or "
                             "newer GPU)")
    if level == "none" and built_gpu.get("name") != here["name"]:
        return [f"{engine_name} was built on {built_desc} and runs on {here_desc}: same compute capability, so TensorRT "
                "accepts it, but its kernels were timed on the other GPU"]
    return []
