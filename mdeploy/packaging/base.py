"""What a packaging target receives and returns; the verb (mdeploy/verbs/package.py) does everything else.

A target module (mdeploy/packaging/<target>.py) defines:

- `FORMATS: tuple[Format, ...]`: the model formats its server loads; anything else is exit 2 naming the conversion
  that gets there (`convert_hint`).
- `check(request: Request) -> None`: every input problem the target can see before writing (fixed batch with
  `--max-batch-size > 0`, names or dtypes the server cannot express, ...), raised as InputError: nothing is
  written yet.
- `write(request: Request, root: Path) -> Written`: the package, written under `root` (a staging folder that
  becomes `-o DIR` once everything passed); static checks of what was written (e.g. Triton's config parsed with
  the official protobuf and held against the model); and, where it can be loaded here, a Runner that loads the
  package the way its server does, so the verb can compare it with the original model.
- `server_check(model: ModelRef) -> None`: raises MissingDependencyError (exit 2) when `--smoke-test` cannot start
  the server on this machine, saying why. The verb asks it before the model is even loaded: a refusal must not cost
  loading TensorFlow and a SavedModel (seconds, hundreds of MB) first.
- `server(request: Request, root: Path, port: int) -> Server`: how to start the real server on the package for
  `--smoke-test` (asked after `server_check` passed).
- optional `model_io(ref: ModelRef) -> (inputs, outputs) | None`: the model's TensorSpecs read without loading it
  (triton: a TensorRT engine's sidecar, since TensorRT needs a GPU); None (or no such function): the verb opens the
  model's runner. Without a runner the package-vs-model comparison is skipped, saying why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mdeploy.core import Format, ModelRef, TensorSpec

Feed = dict[str, np.ndarray]


@dataclass
class Request:
    """Everything known about the model and the package to write."""

    model: ModelRef
    inputs: list[TensorSpec]  # the model's inputs (with --input overrides applied)
    outputs: list[TensorSpec]  # the model's outputs; shapes may hold names or -1 where the model does not say
    name: str  # the model's name on the server (--name, default from the file name)
    version: int  # the version folder / model version (--version)
    max_batch_size: int | None  # --max-batch-size; None: the target derives it from the model's batch axis
    instances: int  # --instances (Triton instance_group count, replicas elsewhere)
    feeds: list[Feed]  # the validation inputs (--data or seeded random), the same for every check
    extra: dict[str, Any] = field(default_factory=dict)  # target-specific options (e.g. kserve's storage_uri)

    @property
    def batch_is_dynamic(self) -> bool:
        """True when every input's first axis is dynamic (a name or -1): the server may batch requests."""
        return bool(self.inputs) and all(s.shape and not (isinstance(s.shape[0], int) and s.shape[0] > 0) for s in self.inputs)


@dataclass
class Written:
    """What a target wrote and found."""

    files: list[str]  # paths relative to the package root, in the order a reader should see them
    readme: str  # the target's part of README.md: how to start the server, a request that works (markdown)
    checks: list[dict[str, Any]] = field(default_factory=list)  # {"check": what, "passed": bool, "detail": text}
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # target facts for the report (max_batch_size, runtime, ...)
    runner: Any = None  # a Runner over the package as its server loads it; None when it cannot be loaded here


@dataclass
class Server:
    """How to start a model server on a package and talk to it over HTTP (mdeploy/packaging/smoke.py runs it)."""

    command: list[str]  # argv; started in its own process group, stopped (SIGTERM, then SIGKILL) in every case
    ready_url: str  # answers 200 once the model is loaded
    predict_url: str  # POST one request here
    encode: Callable[[Feed], bytes]  # a feed as the request body
    decode: Callable[[bytes], dict[str, np.ndarray]]  # the response body as outputs by name
    env: dict[str, str] = field(default_factory=dict)  # added to the environment (telemetry off, ...)
    content_type: str = "application/json"
    startup_timeout_s: float = 120.0


def server_program(program: str, product: str, image: str, still_checked: str) -> str:
    """The server's program on PATH, or why `--smoke-test` cannot start it here (raised before anything is written)."""
    import shutil

    from mdeploy.errors import MissingDependencyError

    found = shutil.which(program)
    if found is None:
        raise MissingDependencyError(
            f"--smoke-test: {program} is not on PATH, and {product} is not installable on these machines (it ships as the "
            f"container {image})",
            hint=f"package without --smoke-test ({still_checked} is still checked) and run the docker command from the "
            "package's README.md")
    return found


def free_port() -> int:
    """A port nothing listens on now on 127.0.0.1 (the OS picks it; the server binds it a moment later)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def convert_hint(src: Format, formats: tuple[Format, ...], target: str) -> str:
    """The one-line hint for a model the target cannot serve: the conversion that gets there."""
    wanted = {Format.ONNX: "m.onnx", Format.SAVEDMODEL: "m_savedmodel/", Format.TENSORRT: "m.engine", Format.TFLITE: "m.tflite"}
    outs = [wanted[f] for f in formats if f in wanted]
    if not outs:
        return f"{target} serves {', '.join(f.value for f in formats)}"
    return f"convert it first (mdeploy convert MODEL -o {outs[0]}) and package that"
