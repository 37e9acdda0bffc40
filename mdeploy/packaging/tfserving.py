"""`--target tfserving`: a TensorFlow Serving model base path, `ROOT/NAME/<version>/` holding the SavedModel.

Why it is built this way: TF Serving loads only integer-named version folders under `--model_base_path` (a SavedModel
copied straight into the base path is silently not served), and its REST `:predict` calls the `serving_default`
signature unless told otherwise. So the SavedModel is copied into an integer version folder, the copy is loaded with
tf.saved_model.load and its `serving_default` signature held against the model's inputs, outputs and dtypes, and a
`:predict` body that calls it is written beside it.

TF Serving ships as the tensorflow/serving container (tensorflow_model_server is not a pip package): `--smoke-test`
runs only where `tensorflow_model_server` is on PATH.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from mdeploy.core import Format, ModelRef
from mdeploy.errors import InputError
from mdeploy.packaging.base import free_port, server_program, Feed, Request, Server, Written

FORMATS = (Format.SAVEDMODEL,)
SIGNATURE = "serving_default"
IMAGE = "tensorflow/serving"
# what the REST API's JSON carries: numbers, booleans and strings (bytes as {"b64": ...}); nothing else
_JSON_KINDS = "biufO"


def _signatures(path: Path) -> tuple[dict[str, Any], Any]:
    """The SavedModel's signatures by name, and the loaded object (kept alive while its functions are used)."""
    from mdeploy.frameworks import tf_models

    loaded = tf_models.load_savedmodel(path)
    return dict(getattr(loaded, "signatures", {}) or {}), loaded


def check(request: Request) -> None:
    """A SavedModel TF Serving can call by default: a `serving_default` signature, with types JSON can carry."""
    signatures, _ = _signatures(request.model.path)
    if SIGNATURE not in signatures:
        raise InputError(f"{request.model.name} has no '{SIGNATURE}' signature, which TF Serving's :predict calls "
                         f"(its signatures: {', '.join(signatures) or 'none'})",
                         hint="export it with a serving_default signature (Keras 3: model.export(path); TF: "
                         "tf.saved_model.save(obj, path, signatures={'serving_default': fn}))")
    for spec in [*request.inputs, *request.outputs]:
        kind = np.dtype(spec.dtype).kind if _is_numpy(spec.dtype) else "?"
        if kind not in _JSON_KINDS:
            raise InputError(f"'{spec.name}' of {request.model.name} is {spec.dtype}, which TF Serving's REST API cannot "
                             "carry in JSON", hint="cast it inside the model's serving function")


def _is_numpy(dtype: str) -> bool:
    try:
        np.dtype(dtype)
    except TypeError:
        return False
    return True


def write_base_path(request: Request, root: Path) -> list[str]:
    """`root/NAME/<version>/` = the SavedModel, copied whole (kserve.py lays out the same inside its package)."""
    target = root / request.name / str(request.version)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(request.model.path, target)
    return [f"{request.name}/{request.version}/{p.relative_to(target).as_posix()}"
            for p in sorted(target.rglob("*")) if p.is_file()]


def signature_checks(version_dir: Path, request: Request) -> list[dict[str, Any]]:
    """The copy loaded as TF Serving loads it (tf.saved_model.load), its serving_default held against the model."""
    from mdeploy.frameworks import tf_models

    checks: list[dict[str, Any]] = [{"check": "the version folder is an integer (TF Serving serves no other)",
                                     "passed": version_dir.name.isdigit(), "detail": version_dir.name}]
    signatures, loaded = _signatures(version_dir)  # loaded: kept alive while its signatures are read
    fn = signatures.get(SIGNATURE)
    checks.append({"check": f"the copy loads (tf.saved_model.load) and has '{SIGNATURE}'", "passed": fn is not None,
                   "detail": "" if fn is not None else "signatures: " + ", ".join(signatures)})
    if fn is None:
        return checks
    specs, out_names = tf_models.signature_io(fn)
    wanted = {s.name: s for s in request.inputs}
    wrong = [f"{s.name}: {s.dtype} {s.shape_text()} for the model's {wanted[s.name].dtype} {wanted[s.name].shape_text()}"
             for s in specs
             if s.name in wanted and (s.dtype != wanted[s.name].dtype or len(s.shape) != len(wanted[s.name].shape))]
    if sorted(wanted) != sorted(s.name for s in specs):
        wrong.insert(0, f"inputs {sorted(s.name for s in specs)} are not the model's {sorted(wanted)}")
    checks.append({"check": f"{SIGNATURE} inputs: names, dtypes and ranks match the model", "passed": not wrong,
                   "detail": "; ".join(wrong)})
    outputs = fn.structured_outputs
    dtypes = {n: np.dtype(outputs[n].dtype.as_numpy_dtype).name for n in out_names} if isinstance(outputs, dict) else {}
    model_outputs = {s.name: s.dtype for s in request.outputs}
    wrong = [] if sorted(out_names) == sorted(model_outputs) else [f"outputs {sorted(out_names)} are not the model's "
                                                                    f"{sorted(model_outputs)}"]
    wrong += [f"{n}: {dtypes[n]} for the model's {model_outputs[n]}" for n in out_names
              if n in dtypes and n in model_outputs and dtypes[n] != model_outputs[n]]
    checks.append({"check": f"{SIGNATURE} outputs: names and dtypes match the model", "passed": not wrong,
                   "detail": "; ".join(wrong)})
    return checks


def write(request: Request, root: Path, request_file: str | None = "request.json") -> Written:
    """`root/NAME/<version>/` (the SavedModel, checked) and a :predict body in `root/request_file`."""
    files = write_base_path(request, root)
    version_dir = root / request.name / str(request.version)
    checks = signature_checks(version_dir, request)
    if request_file:
        (root / request_file).write_text(json.dumps(predict_request(request.feeds[0]) if request.feeds else {}) + "\n")
        files.append(request_file)
    from mdeploy.runners.tf_runner import TensorFlowRunner

    runner = TensorFlowRunner(ModelRef(version_dir, Format.SAVEDMODEL, signature=SIGNATURE))
    notes = ["TF Serving is not installable on these machines (it ships as the tensorflow/serving container): the copy "
             f"was loaded with tf.saved_model.load and its {SIGNATURE} signature called instead"]
    return Written(files=files, readme=readme(request), checks=checks, notes=notes, runner=runner,
                   details={"signature": SIGNATURE, "model_base_path": request.name})


def readme(request: Request) -> str:
    name = request.name
    return f"""## Serving with TensorFlow Serving

Layout: `{name}/{request.version}/` is the SavedModel (TF Serving's model base path is `{name}/`; it serves the highest
integer version inside). TF Serving ships as a container. From this folder:

```
docker run --rm -p 8501:8501 -v "$PWD/{name}":/models/{name} -e MODEL_NAME={name} {IMAGE}
curl -s localhost:8501/v1/models/{name}
curl -s -X POST localhost:8501/v1/models/{name}:predict -H 'Content-Type: application/json' -d @request.json
```

`request.json` calls the `{SIGNATURE}` signature in the columnar format (`"inputs"`) with one validation input
({", ".join(f"`{s.name}` {s.dtype} {s.shape_text()}" for s in request.inputs)}); the answer is `{{"outputs": ...}}`.
"""


# --- the REST :predict API ---------------------------------------------------------------------------------------
def _json_value(array: np.ndarray) -> Any:
    if array.dtype.kind in "SO":
        return [{"b64": base64.b64encode(v if isinstance(v, bytes) else str(v).encode()).decode()}
                for v in array.reshape(-1)]
    return array.tolist()


def predict_request(feed: Feed) -> dict[str, Any]:
    """A columnar :predict body: every input by name, whole batch at once."""
    return {"signature_name": SIGNATURE, "inputs": {name: _json_value(a) for name, a in feed.items()}}


def decoder(request: Request) -> Any:
    """The :predict answer as arrays by name; TF Serving drops the name when the signature has a single output."""
    dtypes = {s.name: s.dtype for s in request.outputs}

    def decode(body: bytes) -> dict[str, np.ndarray]:
        outputs = json.loads(body)["outputs"]
        if not isinstance(outputs, dict) or (len(dtypes) == 1 and set(outputs) != set(dtypes)):
            outputs = {next(iter(dtypes)): outputs}
        return {n: np.asarray(v, dtype=dtypes.get(n)) for n, v in outputs.items()}

    return decode


def server_check(model: ModelRef) -> None:
    """`--smoke-test` needs `tensorflow_model_server` on PATH: asked before TensorFlow and the SavedModel load."""
    _program()


def _program() -> str:
    return server_program("tensorflow_model_server", "TF Serving", IMAGE, "the signature")


def server(request: Request, root: Path, port: int) -> Server:
    """`tensorflow_model_server` on the package, where it is on PATH; else why it cannot run here."""
    binary = _program()
    base = f"http://127.0.0.1:{port}"
    return Server(
        command=[binary, f"--port={free_port()}", f"--rest_api_port={port}", f"--model_name={request.name}",
                 f"--model_base_path={(root / request.name).resolve()}"],
        # the status URL (/v1/models/NAME) answers 200 while a version is still LOADING; the metadata URL answers 200
        # only once a version is loaded and can be called
        ready_url=f"{base}/v1/models/{request.name}/metadata", predict_url=f"{base}/v1/models/{request.name}:predict",
        encode=lambda feed: json.dumps(predict_request(feed)).encode(), decode=decoder(request))

