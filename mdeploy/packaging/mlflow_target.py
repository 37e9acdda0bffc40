"""`--target mlflow`: an MLflow model folder (MLmodel + the model + its environment) that `mlflow models serve` loads.

ONNX models go through MLflow's own flavor (`mlflow.onnx.save_model`); TFLite has no flavor, so it is served by a
small pyfunc wrapper (mlflow_tflite_model.py) saved as "models from code": the file is copied into the package and
MLflow runs it at load, so the server needs mlflow and ai-edge-litert but never mdeploy, and no pickle is written.

What MLflow gets wrong by default, and this module prevents:
- without a signature, the scoring server parses JSON numbers as float64 and ints as int64 whatever the model takes
  (the ONNX flavor then casts float64 back to float32 for float inputs, but an int32 or float16 input fails): the
  package carries a tensor signature with each input's numpy dtype and -1 for every dynamic axis, so the server
  casts each request to what the model takes, and rejects a wrong rank or fixed size with a 400;
- `save_model` infers pip requirements by loading the model in a subprocess: here they are written from the
  versions that ran the checks;
- the serving process finds `uvicorn` on PATH: the server is started with this interpreter's bin folder first;
- MLflow sends usage telemetry unless told not to: every MLflow process mdeploy starts (and the README's commands)
  runs with MLFLOW_DISABLE_TELEMETRY=true and DO_NOT_TRACK=true.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mdeploy.core import Format, ModelRef, TensorSpec
from mdeploy.deps import require
from mdeploy.errors import InputError, MdeployError, MissingDependencyError, ModelLoadError, first_line
from mdeploy.logs import framework_output, is_verbose
from mdeploy.packaging.base import Feed, Request, Server, Written
from mdeploy.runners.base import Runner

FORMATS = (Format.ONNX, Format.TFLITE, Format.GENAI)
TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
ONNX_FILE = "model.onnx"  # mlflow.onnx's name for the model inside the package
WRAPPER = Path(__file__).with_name("mlflow_tflite_model.py")
GENAI_WRAPPER = Path(__file__).with_name("mlflow_genai_model.py")  # an onnxruntime-genai folder: token ids in and out
# numpy dtypes MLflow's tensor schema and its JSON parsing can carry (no bfloat16, strings or complex numbers)
SERVABLE_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                   "uint64", "bool")


_FLAVORS = {Format.ONNX: "onnx", Format.TFLITE: "python_function (mlflow_tflite_model.py)",
            Format.GENAI: "python_function (mlflow_genai_model.py)"}


def mlflow_module() -> Any:
    """mlflow, imported with its telemetry off (it reads the switches when it starts sending, in this process too)."""
    os.environ.update(TELEMETRY_OFF)
    mlflow = require("mlflow", extra="serving", purpose="write MLflow packages")
    if not is_verbose():  # e.g. its warning that the package's CUDA provider is missing on this CPU-only machine
        logging.getLogger("mlflow").setLevel(logging.ERROR)
    return mlflow


@contextmanager
def quiet() -> Iterator[None]:
    """MLflow's own output while it saves or loads (its progress bar over artifacts, its advice to type-hint a
    PythonModel) is not mdeploy's to print: it reaches the terminal only with --verbose."""
    with framework_output(), warnings.catch_warnings():
        if not is_verbose():
            warnings.simplefilter("ignore")
        yield


def check(request: Request) -> None:
    """Dtypes MLflow's tensor schema cannot carry; `--max-batch-size` on a fixed batch (MLflow does not batch)."""
    for spec in [*request.inputs, *request.outputs]:
        if spec.dtype not in SERVABLE_DTYPES:
            raise InputError(f"MLflow's tensor signature cannot carry {spec.name}'s dtype {spec.dtype}",
                             hint="servable dtypes: " + ", ".join(SERVABLE_DTYPES) + "; convert the model so this tensor has one")
    if request.max_batch_size and not request.batch_is_dynamic:
        shapes = ", ".join(f"{s.name}{s.shape_text()}" for s in request.inputs)
        raise InputError(f"--max-batch-size {request.max_batch_size}: the model's batch is fixed ({shapes})",
                         hint="export it with a dynamic batch axis (mdeploy convert ... --dynamic NAME:0), or leave "
                         "--max-batch-size out")


def write(request: Request, root: Path) -> Written:
    """The MLflow model folder in `root`, loaded back with mlflow.pyfunc as the server loads it."""
    mlflow = mlflow_module()
    signature = _signature(mlflow, request)
    example = _example(request)
    notes: list[str] = []
    if request.model.format is Format.ONNX:
        _write_onnx(mlflow, request, root, signature, example, notes)
    elif request.model.format is Format.GENAI:
        _write_genai(mlflow, request, root, signature, example, notes)
    else:
        _write_tflite(mlflow, request, root, signature, example)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    checks = _static_checks(mlflow, request, root)
    if request.max_batch_size or request.instances > 1:
        notes.append("--max-batch-size and --instances do not apply to MLflow's scoring server (it runs one model per "
                     "worker and does not batch requests); the package ignores them")
    runner = None
    if all(c["passed"] for c in checks):
        try:  # a package MLflow cannot load is a failed check (exit 1, the package kept to look at), not bad input
            runner = PyfuncRunner(_package_ref(request, root), input_specs=request.inputs, request=request)
        except MdeployError as exc:
            checks.append({"check": "mlflow.pyfunc loads the package", "passed": False, "detail": exc.message})
    return Written(files=files, readme=_readme(request), checks=checks, notes=notes,
                   details={"mlflow_version": mlflow.__version__, "flavor": _FLAVORS[request.model.format]},
                   runner=runner)


def server_check(model: ModelRef) -> None:
    """`mlflow models serve` needs MLflow and `uvicorn` beside this interpreter: asked before the model loads."""
    mlflow_module()
    if not (Path(sys.executable).parent / "uvicorn").exists():
        require("uvicorn", extra="serving", purpose="run MLflow's scoring server")
        raise MissingDependencyError(f"MLflow's scoring server starts `uvicorn`, which is not beside {sys.executable}",
                                     hint="pip install 'mdeploy[serving]' into the environment mdeploy runs from")


def server(request: Request, root: Path, port: int) -> Server:
    """`mlflow models serve` from this interpreter's environment, on 127.0.0.1:PORT, telemetry off."""
    server_check(request.model)
    bindir = Path(sys.executable).parent
    base = f"http://127.0.0.1:{port}"
    outputs = _served_outputs(request)
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(Path(root).resolve()), "--env-manager", "local",
               "-h", "127.0.0.1", "-p", str(port)]
    return Server(
        command=command, ready_url=f"{base}/ping", predict_url=f"{base}/invocations",
        encode=encode_request, decode=lambda body: decode_response(body, outputs),
        env={**TELEMETRY_OFF, "PATH": str(bindir) + os.pathsep + os.environ.get("PATH", "")},
    )


def encode_request(feed: Feed) -> bytes:
    """The tensor-input request body MLflow's /invocations takes: {"inputs": {name: nested list}}."""
    return json.dumps({"inputs": {name: np.asarray(value).tolist() for name, value in feed.items()}}).encode()


def decode_response(body: bytes, outputs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """{"predictions": {name: nested list}} (or a bare list for one output) as arrays of the model's output dtypes."""
    data = json.loads(body)
    if not isinstance(data, dict) or "predictions" not in data:
        raise ValueError(f"the answer has no 'predictions': {body[:200]!r}")
    predictions = data["predictions"]
    dtypes = {o.name: o.dtype for o in outputs}
    if not isinstance(predictions, dict):
        if len(outputs) != 1:
            raise ValueError(f"one unnamed prediction for {len(outputs)} outputs")
        predictions = {outputs[0].name: predictions}
    return {name: np.asarray(value, dtype=dtypes.get(name)) for name, value in predictions.items()}


class PyfuncRunner(Runner):
    """The package loaded with mlflow.pyfunc.load_model, as the scoring server loads it; predicts on named feeds.

    mlflow enforces the package's signature on every call, as the server does after parsing a request."""

    def __init__(self, ref: ModelRef, input_specs: list[TensorSpec], request: Request) -> None:
        self._request = request
        super().__init__(ref, "cpu", input_specs)

    def _load(self) -> None:
        mlflow = mlflow_module()
        root = self.ref.path.parent if self.ref.format is Format.ONNX else self.ref.path.parents[1]
        try:
            with quiet():
                self.model = mlflow.pyfunc.load_model(str(root))
        except Exception as exc:
            raise ModelLoadError(f"mlflow.pyfunc cannot load the package {root}: {first_line(exc)}") from None
        self._specs = list(self._request.inputs)
        self._outputs = [o.name for o in self._request.outputs]

    def input_specs(self) -> list[TensorSpec]:
        return self._specs

    def output_names(self) -> list[str]:
        return self._outputs

    def _infer(self, feed: Feed) -> dict[str, np.ndarray]:
        try:
            result = self.model.predict(dict(feed))
        except Exception as exc:
            raise InputError(f"the MLflow package failed to predict: {first_line(exc)}") from None
        if not isinstance(result, dict):
            result = {self._outputs[0]: result}
        return {name: np.asarray(result[name]) for name in self._outputs if name in result}

    @classmethod
    def describe(cls, ref: ModelRef) -> dict[str, Any]:
        return {}


def _package_ref(request: Request, root: Path) -> ModelRef:
    """The model file inside the package (an ONNX graph there lets comparisons read its output kinds)."""
    if request.model.format is Format.ONNX:
        return ModelRef(root / ONNX_FILE, Format.ONNX)
    return ModelRef(root / "artifacts" / request.model.path.name, request.model.format)


def _declared_inputs(request: Request) -> list[TensorSpec]:
    """The inputs with the shapes the model itself declares: `--input` gives validation inputs concrete sizes, but the
    package must keep taking every size the model takes (a dynamic axis stays -1 in the signature)."""
    declared: dict[str, TensorSpec] = {}
    if request.model.format is Format.ONNX:
        from mdeploy.frameworks import onnx_models, onnx_skeleton

        declared = {s.name: s for s in onnx_models.graph_inputs(onnx_skeleton.load_without_weights(request.model.path))}
    elif request.model.format is Format.TFLITE:
        from mdeploy.frameworks import tflite_models

        declared = {t.name: t.spec() for t in tflite_models.io(tflite_models.interpreter(request.model.path))[0]}
    out = []
    for s in request.inputs:
        d = declared.get(s.name)
        out.append(TensorSpec(s.name, d.shape, s.dtype) if d is not None and len(d.shape) == len(s.shape) else s)
    return out


def _served_outputs(request: Request) -> list[TensorSpec]:
    """The outputs as the package answers them. A quantized (int8/uint8) TFLite output is described by its raw dtype,
    but the wrapper answers real float32 values (as mdeploy's TFLite runner does): read as int8, they would be garbage."""
    if request.model.format is not Format.TFLITE:
        return list(request.outputs)
    from mdeploy.frameworks import tflite_models

    served = {t.name: t.spec().dtype for t in tflite_models.io(tflite_models.interpreter(request.model.path))[1]}
    return [TensorSpec(o.name, o.shape, served.get(o.name, o.dtype)) for o in request.outputs]


def _axes(s: TensorSpec) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in s.shape)


def _signature(mlflow: Any, request: Request) -> Any:
    """A tensor signature: each input's numpy dtype and its shape with -1 on dynamic axes (outputs where known)."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema
    from mlflow.types.schema import TensorSpec as MlflowTensorSpec

    def spec(s: TensorSpec) -> Any:
        return MlflowTensorSpec(np.dtype(s.dtype), _axes(s), s.name)

    inputs = Schema([spec(s) for s in _declared_inputs(request)])
    outputs = _served_outputs(request)
    known = outputs and all(o.shape for o in outputs)
    return ModelSignature(inputs=inputs, outputs=Schema([spec(o) for o in outputs]) if known else None)


def _example(request: Request) -> Feed | None:
    """The first validation input, cut to one row where the batch is dynamic (the example files stay small)."""
    if not request.feeds:
        return None
    feed = request.feeds[0]
    return {k: v[:1] for k, v in feed.items()} if request.batch_is_dynamic else dict(feed)


def _requirements(*dists: str) -> list[str]:
    """pip requirements pinned to the versions that ran mdeploy's checks."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for dist in ("mlflow", "numpy", *dists):
        try:
            pins.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            pins.append(dist)
    return pins


def _write_onnx(mlflow: Any, request: Request, root: Path, signature: Any, example: Feed | None, notes: list[str]) -> None:
    from mdeploy.frameworks import onnx_models, ort_sessions

    require("mlflow.onnx", extra="serving")
    model = onnx_models.load_proto(request.model.path)
    external = bool(onnx_models.external_data_files(model))  # asked before the data is read in (it then reads inline)
    if external:  # every weight: the package holds its own copy
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(request.model.path.resolve().parent))
    fitted = ort_sessions.fit(model)
    if fitted.ir_version:  # the server opens the file with plain onnxruntime, which refuses a newer IR version
        notes.append(f"the package's model.onnx is stamped IR version {fitted.ir_version} (the source says {model.ir_version}, "
                     f"newer than onnxruntime {ort_sessions.runtime_version()} reads; every opset it imports is supported)")
        model.ir_version = fitted.ir_version
    kwargs: dict[str, Any] = {"save_as_external_data": external}
    if external:  # one data file beside model.onnx, as mdeploy writes large models
        kwargs.update(all_tensors_to_one_file=True, location=ONNX_FILE + ".data", size_threshold=1024)
    try:
        with quiet():
            mlflow.onnx.save_model(model, str(root), signature=signature, input_example=example,
                                   pip_requirements=_requirements("onnx", "onnxruntime"), **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"mlflow.onnx could not save {request.model.name}: {first_line(exc)}") from None


def _write_genai(mlflow: Any, request: Request, root: Path, signature: Any, example: Feed | None, notes: list[str]) -> None:
    """The folder as a pyfunc artifact (MLflow copies it whole, external data included) served by mlflow_genai_model.py."""
    from mdeploy.runners.genai_runner import MAX_NEW_TOKENS

    try:
        with quiet():
            mlflow.pyfunc.save_model(str(root), python_model=str(GENAI_WRAPPER),
                                     artifacts={"genai_model": str(request.model.path.resolve())},
                                     model_config={"max_new_tokens": MAX_NEW_TOKENS}, signature=signature,
                                     input_example=example, pip_requirements=_requirements("onnxruntime-genai"))
    except Exception as exc:
        raise ModelLoadError(f"mlflow.pyfunc could not save {request.model.name}: {first_line(exc)}") from None
    notes.append(f"the server takes a prompt's token ids (input_ids) and answers the {MAX_NEW_TOKENS} tokens it generates "
                 "greedily (generated_ids; -1 after an end-of-sequence token)")


def _write_tflite(mlflow: Any, request: Request, root: Path, signature: Any, example: Feed | None) -> None:
    require("ai_edge_litert.interpreter", extra="tensorflow", purpose="serve TFLite models with MLflow")
    try:
        with quiet():
            mlflow.pyfunc.save_model(str(root), python_model=str(WRAPPER), artifacts={"tflite_model": str(request.model.path)},
                                     signature=signature, input_example=example,
                                     pip_requirements=_requirements("ai-edge-litert"))
    except Exception as exc:
        raise ModelLoadError(f"mlflow.pyfunc could not save {request.model.name}: {first_line(exc)}") from None


def _static_checks(mlflow: Any, request: Request, root: Path) -> list[dict[str, Any]]:
    """The MLmodel read back with MLflow: its flavor loads as pyfunc, and its signature says the model's dtypes and axes."""
    from mlflow.models import Model

    checks: list[dict[str, Any]] = []
    try:
        meta = Model.load(str(root / "MLmodel"))
    except Exception as exc:
        return [{"check": "MLmodel reads back", "passed": False, "detail": first_line(exc)}]
    checks.append({"check": "MLmodel has the python_function flavor the server loads",
                   "passed": "python_function" in meta.flavors, "detail": ", ".join(meta.flavors)})
    declared = {s.name: s for s in (meta.signature.inputs.inputs if meta.signature else [])}
    wrong = []
    for s in _declared_inputs(request):
        d = declared.get(s.name)
        want = _axes(s)
        if d is None or np.dtype(d.type) != np.dtype(s.dtype) or tuple(d.shape) != want:
            said = "missing" if d is None else f"{d.type}{list(d.shape)}"
            wrong.append(f"{s.name}: {said}, the model takes {s.dtype}{list(want)}")
    checks.append({"check": "signature: every input's dtype and shape (-1 on dynamic axes)", "passed": not wrong,
                   "detail": "; ".join(wrong) or ", ".join(f"{s.name}:{np.dtype(s.dtype).name}" for s in request.inputs)})
    if request.model.format in (Format.ONNX, Format.GENAI):
        from mdeploy.frameworks import genai_models, onnx_models

        onnx_file = root / ONNX_FILE if request.model.format is Format.ONNX else \
            genai_models.model_file(root / "artifacts" / request.model.path.name)
        files = onnx_models.external_data_files(onnx_models.load_proto(onnx_file)) if onnx_file.is_file() else []
        missing = [f for f in files if not (onnx_file.parent / f).is_file()] + ([] if onnx_file.is_file() else [onnx_file.name])
        checks.append({"check": f"{onnx_file.name} and its external data are inside the package", "passed": not missing,
                       "detail": ", ".join(missing)})
    return checks


def _readme(request: Request) -> str:
    name = request.inputs[0].name if request.inputs else "x"
    env = " ".join(f"{k}={v}" for k, v in TELEMETRY_OFF.items())
    return f"""## Serve it with MLflow

```
pip install -r requirements.txt        # the versions mdeploy checked this package with
{env} mlflow models serve -m . --env-manager local -h 127.0.0.1 -p 5000
```
`--env-manager local` serves from the current environment (the default, virtualenv, builds one from python_env.yaml
and needs pyenv). `{env}` keeps MLflow from sending usage telemetry.

## A request that works

```
curl -s http://127.0.0.1:5000/ping
curl -s http://127.0.0.1:5000/invocations -H 'Content-Type: application/json' -d @serving_input_example.json
```
The body is `{{"inputs": {{"{name}": [...], ...}}}}`: one nested list per input, by name. The package's signature
(in MLmodel) gives each input's dtype and shape (-1 where any size is taken), so the server casts the JSON numbers to
the dtype the model takes (never float64) and answers `{{"predictions": {{output name: nested list}}}}`.
In Python: `mlflow.pyfunc.load_model(".").predict({{"{name}": array, ...}})`.
"""
