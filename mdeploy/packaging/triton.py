"""`--target triton`: a Triton Inference Server model repository, `ROOT/NAME/config.pbtxt` + `ROOT/NAME/<version>/`.

Why it is built this way: the mistakes that cost users days sit in config.pbtxt (a fixed batch dimension with
`max_batch_size > 0`, the batch dimension written into `dims`, an INT64 input declared TYPE_FP32). So the config is
built as tritonclient's own `ModelConfig` protobuf from what the model says, written with protobuf's text format,
then parsed back with the same official protobuf and held against the model's names, dtypes and dims: a config that
Triton's parser would refuse, or that disagrees with the model, is found here rather than in the server's log.

Triton itself ships as a container (nvcr.io/nvidia/tritonserver) and cannot be installed on these machines: the
package is checked statically and through onnxruntime on the repository's own model file; `--smoke-test` runs only
where `tritonserver` is on PATH.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from mdeploy.core import Format, ModelRef, TensorSpec
from mdeploy.deps import require
from mdeploy.errors import InputError
from mdeploy.packaging.base import Request, Server, Written, free_port, server_program
from mdeploy.packaging.v2_protocol import DTYPES, NUMPY, v2_decode, v2_encode, v2_request

FORMATS = (Format.ONNX, Format.TENSORRT)

# The release the README's docker command names (Triton 2.53; NVIDIA's release notes for 24.12 list ONNX Runtime 1.19.2
# inside). What that onnxruntime reads: IR version 10 and the default domain up to opset 21 (onnxruntime's own
# compatibility table for 1.19); a newer model fails to load in the server, so the package is checked against it.
IMAGE = "nvcr.io/nvidia/tritonserver:24.12-py3"
IMAGE_ORT = "1.19.2"
IMAGE_ORT_MAX_IR = 10
IMAGE_ORT_MAX_OPSET = 21

# Why 8: Triton's dynamic batcher forms batches up to max_batch_size from requests that arrive together; 8 lets it
# merge a few concurrent requests (the gain on a CPU instance flattens beyond that) while keeping the largest batch,
# and so the memory one execution may take, close to what the model was validated with. Give --max-batch-size to
# choose another.
DEFAULT_MAX_BATCH = 8

# a TensorRT engine's sidecar records TensorRT's DataType names (lower case): what numpy calls them
_TRT_DTYPES = {"float": "float32", "half": "float16", "bf16": "bfloat16", "int8": "int8", "int32": "int32",
               "int64": "int64", "bool": "bool", "uint8": "uint8"}


# --- what the verb asks first ------------------------------------------------------------------------------
def model_io(ref: ModelRef) -> tuple[list[TensorSpec], list[TensorSpec]] | None:
    """A TensorRT engine's inputs and outputs from its JSON sidecar (TensorRT needs a GPU; the config does not).

    None for every other format: the verb then opens the model's runner as usual.
    """
    if ref.format is not Format.TENSORRT:
        return None
    from mdeploy.frameworks import tensorrt_env

    sidecar = tensorrt_env.read_sidecar(ref.path)
    if sidecar is None or not sidecar.get("inputs") or not sidecar.get("outputs"):
        raise InputError(f"{ref.name} has no mdeploy sidecar ({tensorrt_env.sidecar_path(ref.path).name}) that records its "
                         "inputs and outputs, and TensorRT cannot load it here to read them",
                         hint="build the engine with mdeploy convert MODEL.onnx -o m.engine (it writes the sidecar), or "
                         "package the ONNX model")
    return _sidecar_specs(sidecar["inputs"], ref), _sidecar_specs(sidecar["outputs"], ref)


def _sidecar_specs(entries: list[dict[str, Any]], ref: ModelRef) -> list[TensorSpec]:
    specs = []
    for entry in entries:
        raw = str(entry.get("dtype", ""))
        dtype = _TRT_DTYPES.get(raw, raw)
        shape = tuple(d if isinstance(d, int) and d >= 0 else ("batch" if axis == 0 else f"{entry['name']}:{axis}")
                      for axis, d in enumerate(entry.get("shape") or []))
        specs.append(TensorSpec(str(entry["name"]), shape, dtype))
    return specs


def declared(request: Request) -> Request:
    """The request with the inputs the ONNX model itself declares.

    `--input NAME:SHAPE` fixes dynamic axes for the validation inputs only: the config must take every shape the model
    takes (a batch axis fixed by `--input` would otherwise turn batching off and pin Triton to one shape).
    """
    if request.model.format is not Format.ONNX:
        return request
    from mdeploy.frameworks import onnx_models, onnx_skeleton

    own = {s.name: s for s in onnx_models.graph_inputs(onnx_skeleton.load_without_weights(request.model.path))}
    return replace(request, inputs=[own.get(s.name, s) for s in request.inputs])


def check(request: Request) -> None:
    """Every problem Triton would have with this model, before anything is written."""
    request = declared(request)
    for spec in [*request.inputs, *request.outputs]:
        if spec.dtype not in DTYPES:
            kind = "input" if spec in request.inputs else "output"
            raise InputError(f"{kind} '{spec.name}' of {request.model.name} is {_type_name(spec.dtype)}, a type Triton "
                             "cannot express",
                             hint="Triton's types: " + ", ".join(sorted({c for c, _ in DTYPES.values()})) +
                             "; cast it in the model (re-export with another dtype)")
    requested = request.max_batch_size
    if requested and not request.batch_is_dynamic:
        fixed = sorted({f"{s.name}: {s.shape[0]}" for s in request.inputs if s.shape and _fixed(s.shape[0])})
        first = request.inputs[0].name if request.inputs else "INPUT"
        raise InputError(
            f"--max-batch-size {requested}: the batch dimension of {request.model.name} is fixed "
            f"({', '.join(fixed) or 'an input has no batch axis'}); Triton would send batches of 1..{requested} that the "
            "model cannot take",
            hint=f"re-export with a dynamic batch (e.g. mdeploy convert SRC -o m.onnx --dynamic {first}:0), or leave "
            "--max-batch-size out (0: no batching)")
    if max_batch_size(request) > 0:
        for spec in request.outputs:
            if spec.shape and _fixed(spec.shape[0]):
                raise InputError(f"output '{spec.name}' of {request.model.name} has a fixed first dimension "
                                 f"({spec.shape[0]}) while its inputs have a dynamic batch: Triton cannot batch it",
                                 hint="re-export with the output's batch axis dynamic, or give --max-batch-size 0")
    if request.model.format is Format.TENSORRT and max_batch_size(request) > 0:
        _check_engine_profile(request)


def _type_name(dtype: str) -> str:
    """onnx_models names an element type numpy lacks `onnx-type-N`: say which it is (FLOAT8E4M3FN, COMPLEX64...)."""
    if dtype.startswith("onnx-type-") and dtype[10:].isdigit():
        try:
            from onnx import TensorProto

            return f"{TensorProto.DataType.Name(int(dtype[10:]))} (ONNX element type {dtype[10:]})"
        except (ImportError, ValueError):
            pass
    return dtype


def _check_engine_profile(request: Request) -> None:
    """An engine takes only batches inside its optimization profile: max_batch_size must fit every input's range."""
    from mdeploy.frameworks import tensorrt_env

    sidecar = tensorrt_env.read_sidecar(request.model.path) or {}
    wanted = max_batch_size(request)
    for profile in sidecar.get("profiles") or []:
        high = (profile.get("max") or [None])[0]
        if isinstance(high, int) and high < wanted:
            raise InputError(f"max_batch_size {wanted}: the engine's profile for '{profile.get('name')}' stops at batch "
                             f"{high}", hint=f"give --max-batch-size {high} or less, or rebuild the engine with a larger "
                             "profile (mdeploy convert --shape)")


def _fixed(dim: Any) -> bool:
    return isinstance(dim, int) and dim > 0


def max_batch_size(request: Request) -> int:
    """--max-batch-size, else DEFAULT_MAX_BATCH when every input's first axis is dynamic, else 0 (no batching).

    An engine's default is also kept inside its profile's largest batch.
    """
    if request.max_batch_size is not None:
        return request.max_batch_size
    if not request.batch_is_dynamic:
        return 0
    if request.model.format is Format.TENSORRT:
        from mdeploy.frameworks import tensorrt_env

        highs = [p["max"][0] for p in (tensorrt_env.read_sidecar(request.model.path) or {}).get("profiles") or []
                 if p.get("max") and isinstance(p["max"][0], int)]
        if highs:
            return max(1, min(DEFAULT_MAX_BATCH, *highs))
    return DEFAULT_MAX_BATCH


# --- the config ------------------------------------------------------------------------------------------------
def _dims(spec: TensorSpec, batching: bool) -> list[int]:
    """Triton's dims: the shape without the batch axis when Triton batches, -1 for every dynamic axis."""
    shape = spec.shape[1:] if batching else spec.shape
    return [d if _fixed(d) else -1 for d in shape]


def model_config(request: Request) -> Any:
    """The config as tritonclient's official ModelConfig protobuf."""
    pb = require("tritonclient.grpc.model_config_pb2", extra="serving", purpose="write Triton's model config")
    engine = request.model.format is Format.TENSORRT
    batch = max_batch_size(request)
    config = pb.ModelConfig(name=request.name, platform="tensorrt_plan" if engine else "onnxruntime_onnx",
                            max_batch_size=batch)
    for spec in request.inputs:
        config.input.add(name=spec.name, data_type=pb.DataType.Value(DTYPES[spec.dtype][0]), dims=_dims(spec, batch > 0))
    for spec in request.outputs:
        config.output.add(name=spec.name, data_type=pb.DataType.Value(DTYPES[spec.dtype][0]), dims=_dims(spec, batch > 0))
    if batch > 0:
        config.dynamic_batching.SetInParent()
    kind = pb.ModelInstanceGroup.Kind.KIND_GPU if engine else pb.ModelInstanceGroup.Kind.KIND_CPU
    config.instance_group.add(count=request.instances, kind=kind)
    config.version_policy.specific.versions.append(request.version)
    return config


def config_checks(text: str, request: Request) -> list[dict[str, Any]]:
    """config.pbtxt parsed back with the official protobuf and held against the model's own names, dtypes and dims."""
    pb = require("tritonclient.grpc.model_config_pb2", extra="serving", purpose="check Triton's model config")
    text_format = require("google.protobuf.text_format", extra="serving")
    checks: list[dict[str, Any]] = []
    try:
        config = text_format.Parse(text, pb.ModelConfig())
    except text_format.ParseError as exc:
        return [{"check": "config.pbtxt parses as Triton's ModelConfig", "passed": False, "detail": str(exc)}]
    checks.append({"check": "config.pbtxt parses as Triton's ModelConfig (tritonclient protobuf)", "passed": True})
    batch = config.max_batch_size
    problems = []
    if config.name != request.name:
        problems.append(f"name {config.name!r} is not {request.name!r}")
    if batch > 0 and not request.batch_is_dynamic:
        problems.append(f"max_batch_size {batch} with a fixed batch dimension")
    if batch > 0 and not config.HasField("dynamic_batching"):
        problems.append("max_batch_size > 0 without dynamic_batching")
    checks.append({"check": f"max_batch_size {batch} fits the model's batch axis "
                   f"({'dynamic' if request.batch_is_dynamic else 'fixed'})", "passed": not problems,
                   "detail": "; ".join(problems)})
    for kind, declared, specs in (("input", config.input, request.inputs), ("output", config.output, request.outputs)):
        by_name = {t.name: t for t in declared}
        wrong = []
        if sorted(by_name) != sorted(s.name for s in specs):
            wrong.append(f"names {sorted(by_name)} are not the model's {sorted(s.name for s in specs)}")
        for spec in specs:
            t = by_name.get(spec.name)
            if t is None:
                continue
            dtype = NUMPY.get(pb.DataType.Name(t.data_type))
            if dtype != ("object" if spec.dtype == "str" else spec.dtype):
                wrong.append(f"{spec.name}: {pb.DataType.Name(t.data_type)} for a {spec.dtype} tensor")
            full = ([-1] if batch > 0 else []) + list(t.dims)
            if len(full) != len(spec.shape) or any(_fixed(m) and d != m for d, m in zip(full, spec.shape)):
                wrong.append(f"{spec.name}: dims {list(t.dims)} (max_batch_size {batch}) for the model's {spec.shape_text()}")
        checks.append({"check": f"{kind}s: names, data types and dims match the model", "passed": not wrong,
                       "detail": "; ".join(wrong)})
    return checks


def image_runtime_check(model_file: Path) -> dict[str, Any]:
    """Can the onnxruntime inside the README's Triton image read this model (IR version, default-domain opset)?"""
    from mdeploy.frameworks import onnx_skeleton

    proto = onnx_skeleton.load_without_weights(model_file)
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    problems = []
    if proto.ir_version > IMAGE_ORT_MAX_IR:
        problems.append(f"IR version {proto.ir_version} > {IMAGE_ORT_MAX_IR}")
    if opset > IMAGE_ORT_MAX_OPSET:
        problems.append(f"opset {opset} > {IMAGE_ORT_MAX_OPSET}")
    detail = "; ".join(problems) + f": mdeploy convert model.onnx -o older.onnx --opset {IMAGE_ORT_MAX_OPSET}, or a newer image" \
        if problems else f"IR version {proto.ir_version}, opset {opset}"
    return {"check": f"the onnxruntime {IMAGE_ORT} inside {IMAGE} reads the model", "passed": not problems, "detail": detail}


# --- the package ----------------------------------------------------------------------------------------------
def write(request: Request, root: Path, request_file: str | None = "request.json") -> Written:
    """`root/NAME/config.pbtxt` and `root/NAME/<version>/model.onnx` (its external data beside it) or `model.plan`,
    and a v2 request in `root/request_file` (kserve.py lays the repository out inside its package without one)."""
    request = declared(request)
    files = write_repository(request, root)
    text = (root / request.name / "config.pbtxt").read_text()
    checks = config_checks(text, request)
    engine = request.model.format is Format.TENSORRT
    if not engine:
        checks.append(image_runtime_check(root / request.name / str(request.version) / "model.onnx"))
    if request_file:
        (root / request_file).write_text(json.dumps(v2_request(request.feeds[0]) if request.feeds else {}) + "\n")
        files.append(request_file)
    notes = [f"Triton is not installable on these machines (it ships as the container {IMAGE}): the repository was "
             "checked statically" + ("" if engine else " and through onnxruntime on its own model file")]
    runner = None
    if not engine:
        model_file = root / request.name / str(request.version) / "model.onnx"
        from mdeploy.packaging.triton_runner import TritonRepositoryRunner

        runner = TritonRepositoryRunner(ModelRef(model_file, Format.ONNX), root=root / request.name)
    else:
        notes.append("a TensorRT engine loads only on a GPU with the TensorRT version that built it: the package was not "
                     "compared with the engine here")
    batch = max_batch_size(request)
    return Written(files=files, readme=readme(request, batch), checks=checks, notes=notes, runner=runner,
                   details={"max_batch_size": batch, "platform": "tensorrt_plan" if engine else "onnxruntime_onnx",
                            "instances": request.instances})


def write_repository(request: Request, root: Path) -> list[str]:
    """The model repository alone (kserve.py lays the same one out inside its package): its files, relative to root."""
    text_format = require("google.protobuf.text_format", extra="serving")
    model_dir = root / request.name
    version_dir = model_dir / str(request.version)
    version_dir.mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(text_format.MessageToString(model_config(request)))
    prefix = f"{request.name}/{request.version}"
    files = [f"{request.name}/config.pbtxt"]
    if request.model.format is Format.TENSORRT:
        shutil.copyfile(request.model.path, version_dir / "model.plan")
        return [*files, f"{prefix}/model.plan"]
    shutil.copyfile(request.model.path, version_dir / "model.onnx")
    files.append(f"{prefix}/model.onnx")
    from mdeploy.frameworks import onnx_models

    for name in onnx_models.external_data_files(onnx_models.load_proto(request.model.path)):
        target = version_dir / name  # the relative name the model refers to, kept
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(request.model.path.parent / name, target)
        files.append(f"{prefix}/{name}")
    return files


def readme(request: Request, batch: int) -> str:
    """How to start Triton on the repository and a request that works."""
    name = request.name
    engine = request.model.format is Format.TENSORRT
    gpus = " --gpus all" if engine else ""
    note = ("\nA TensorRT engine runs only on the GPU model and TensorRT version that built it: pick the container whose "
            "TensorRT is that version (the engine's .json sidecar records it).\n" if engine else "")
    return f"""## Serving with Triton Inference Server

Layout: `{name}/config.pbtxt` and `{name}/{request.version}/` (a model repository; `max_batch_size: {batch}`).
Triton is not installable on these machines: it ships as a container. From this folder:

```
docker run --rm{gpus} -p 8000:8000 -p 8001:8001 -p 8002:8002 -v "$PWD":/models {IMAGE} \\
    tritonserver --model-repository=/models
curl -s localhost:8000/v2/health/ready -o /dev/null -w '%{{http_code}}\\n'
curl -s -X POST localhost:8000/v2/models/{name}/infer -H 'Content-Type: application/json' -d @request.json
```

`request.json` is an Open Inference Protocol (v2) request built from one validation input
({", ".join(f"`{s.name}` {s.dtype} {s.shape_text()}" for s in request.inputs)}).
{note}"""


def server_check(model: ModelRef) -> None:
    """`--smoke-test` needs `tritonserver` on PATH: asked before the model loads."""
    _program()


def _program() -> str:
    return server_program("tritonserver", "Triton", IMAGE, "the config")


def server(request: Request, root: Path, port: int) -> Server:
    """`tritonserver` on the repository, where it is on PATH; else why it cannot run here."""
    binary = _program()
    base = f"http://127.0.0.1:{port}"
    return Server(
        command=[binary, f"--model-repository={root}", f"--http-port={port}", f"--grpc-port={free_port()}",
                 f"--metrics-port={free_port()}", "--http-address=127.0.0.1"],
        ready_url=f"{base}/v2/health/ready", predict_url=f"{base}/v2/models/{request.name}/infer",
        encode=v2_encode, decode=v2_decode)
