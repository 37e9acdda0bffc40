"""`--target kserve`: a KServe `InferenceService` manifest beside the model laid out for the runtime that serves it.

Why it is built this way: KServe does not load models itself; a serving runtime does, from the folder `storageUri`
points at (downloaded into /mnt/models). An ONNX model goes to `kserve-tritonserver` (`tritonserver
--model-store=/mnt/models`, Open Inference Protocol v2): the folder must be a Triton model repository, so
`repository/` is laid out by triton.py, config.pbtxt and its checks included. A SavedModel goes to
`kserve-tensorflow-serving` (`tensorflow_model_server --model_name=<InferenceService name>
--model_base_path=/mnt/models`, KServe's v1 protocol, i.e. TF Serving's :predict): the folder must hold integer
version folders, so `NAME/` is laid out by tfserving.py, its serving_default check included. One way to do each.

KServe needs a Kubernetes cluster: nothing here can start it, so `--smoke-test` is exit 2 and says to smoke-test the
model inside with `--target triton` / `--target tfserving`.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from mdeploy.core import Format, ModelRef
from mdeploy.deps import require
from mdeploy.errors import InputError, MissingDependencyError
from mdeploy.packaging import tfserving, triton, v2_protocol
from mdeploy.packaging.base import Request, Server, Written

FORMATS = (Format.ONNX, Format.SAVEDMODEL)
MANIFEST = "inference-service.yaml"
API_VERSION = "serving.kserve.io/v1beta1"
# the placeholder storage: a PersistentVolumeClaim named model-store holding the package folder
DEFAULT_STORAGE = "pvc://model-store/{name}"
# KServe's storage initializer downloads these; a bare path would be read as nothing
_SCHEMES = ("gs", "s3", "pvc", "hdfs", "webhdfs", "http", "https", "oci", "hf")
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def service_name(name: str) -> str:
    """The InferenceService's name: a DNS-1035 label (lower-case letters, digits, '-', starting with a letter, at most
    63 characters; Knative adds suffixes, so KServe advises shorter), derived from the model's name."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if not label or not label[0].isalpha():
        label = f"m-{label}".rstrip("-")
    return label[:45].rstrip("-")


def _storage_uri(request: Request) -> str:
    return (request.extra.get("storage_uri") or DEFAULT_STORAGE.format(name=service_name(request.name))).rstrip("/")


def check(request: Request) -> None:
    """The storage URI KServe can download from, then the checks of the runtime's own layout (triton / tfserving)."""
    given = request.extra.get("storage_uri")
    if given:
        scheme = given.split("://", 1)[0] if "://" in given else ""
        if scheme not in _SCHEMES:
            raise InputError(f"--storage-uri '{given}' is not a location KServe's storage initializer downloads from",
                             hint="give SCHEME://..., with SCHEME one of " + ", ".join(_SCHEMES) +
                             " (e.g. pvc://claim/models/NAME, s3://bucket/models/NAME)")
    if request.model.format is Format.ONNX:
        triton.check(_triton_request(request))
    else:
        tfserving.check(request)


def _triton_request(request: Request) -> Request:
    """Inside KServe, --instances are pod replicas: each pod's Triton runs one instance of the model."""
    return replace(request, instances=1)


def manifest(request: Request) -> dict[str, Any]:
    """The InferenceService as a dict (the order KServe's docs write it in)."""
    onnx = request.model.format is Format.ONNX
    model: dict[str, Any] = {
        "modelFormat": {"name": "onnx" if onnx else "tensorflow"},
        "runtime": "kserve-tritonserver" if onnx else "kserve-tensorflow-serving",
        "protocolVersion": "v2" if onnx else "v1",
        "storageUri": f"{_storage_uri(request)}/{'repository' if onnx else request.name}",
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": {"name": service_name(request.name)},
        "spec": {"predictor": {"minReplicas": request.instances, "model": model}},
    }


def manifest_checks(text: str, request: Request) -> list[dict[str, Any]]:
    """The written YAML parsed back and held against what KServe requires and what the package holds."""
    yaml = require("yaml", extra="serving")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [{"check": f"{MANIFEST} parses as YAML", "passed": False, "detail": str(exc).splitlines()[0]}]
    checks: list[dict[str, Any]] = [{"check": f"{MANIFEST} parses as YAML", "passed": isinstance(doc, dict)}]
    doc = doc if isinstance(doc, dict) else {}
    model = (((doc.get("spec") or {}).get("predictor") or {}).get("model")) or {}
    name = (doc.get("metadata") or {}).get("name") or ""
    missing = [path for path, value in (
        ("apiVersion", doc.get("apiVersion") == API_VERSION), ("kind", doc.get("kind") == "InferenceService"),
        ("metadata.name", bool(name)),
        ("spec.predictor.model.modelFormat.name", bool((model.get("modelFormat") or {}).get("name"))),
        ("spec.predictor.model.storageUri", bool(model.get("storageUri")))) if not value]
    checks.append({"check": "the fields KServe requires (apiVersion serving.kserve.io/v1beta1, kind, metadata.name, "
                   "predictor.model.modelFormat, storageUri)", "passed": not missing, "detail": ", ".join(missing)})
    checks.append({"check": "metadata.name is a DNS-1035 label", "passed": bool(_DNS_1035.fullmatch(name)) and len(name) <= 63,
                   "detail": name})
    onnx = request.model.format is Format.ONNX
    wanted = ("onnx", "kserve-tritonserver", "v2") if onnx else ("tensorflow", "kserve-tensorflow-serving", "v1")
    got = ((model.get("modelFormat") or {}).get("name"), model.get("runtime"), model.get("protocolVersion"))
    checks.append({"check": f"runtime {wanted[1]} for a {request.model.format.value} model ({wanted[0]}, protocol {wanted[2]})",
                   "passed": got == wanted, "detail": "" if got == wanted else f"got {got}"})
    return checks


def write(request: Request, root: Path) -> Written:
    onnx = request.model.format is Format.ONNX
    if onnx:
        inner = triton.write(_triton_request(request), root / "repository", request_file=None)
        files = [f"repository/{f}" for f in inner.files]
        example, example_file = v2_protocol.v2_request(request.feeds[0]) if request.feeds else {}, "request-v2.json"
    else:
        inner = tfserving.write(request, root, request_file=None)
        files = list(inner.files)
        example, example_file = tfserving.predict_request(request.feeds[0]) if request.feeds else {}, "request-v1.json"
    yaml = require("yaml", extra="serving")
    (root / MANIFEST).write_text(yaml.safe_dump(manifest(request), sort_keys=False))
    (root / example_file).write_text(json.dumps(example) + "\n")
    checks = manifest_checks((root / MANIFEST).read_text(), request) + inner.checks
    notes = list(inner.notes)
    if not request.extra.get("storage_uri"):
        notes.append(f"storageUri is the placeholder {_storage_uri(request)}: copy this folder there (a PersistentVolumeClaim "
                     "named model-store) or give --storage-uri where the cluster will find it")
    notes.append("KServe runs on a Kubernetes cluster: the manifest was checked statically, the model inside as "
                 f"--target {'triton' if onnx else 'tfserving'} checks it")
    spec = manifest(request)["spec"]["predictor"]["model"]
    details = {**inner.details, "runtime": spec["runtime"], "storage_uri": spec["storageUri"],
               "service": service_name(request.name)}
    return Written(files=[MANIFEST, example_file, *files], readme=readme(request), checks=checks, notes=notes,
                   runner=inner.runner, details=details)


def readme(request: Request) -> str:
    onnx = request.model.format is Format.ONNX
    isvc = service_name(request.name)
    uri = manifest(request)["spec"]["predictor"]["model"]["storageUri"]
    if onnx:
        layout = (f"`repository/` is a Triton model repository (`{request.name}/config.pbtxt`, `{request.name}/"
                  f"{request.version}/model.onnx`), served by the kserve-tritonserver runtime (Open Inference Protocol v2).")
        call = (f"curl -s -H \"Host: $HOST\" -H 'Content-Type: application/json' "
                f"http://$INGRESS/v2/models/{request.name}/infer -d @request-v2.json")
    else:
        layout = (f"`{request.name}/{request.version}/` is the SavedModel (TF Serving's integer version folder), served by "
                  f"the kserve-tensorflow-serving runtime as model `{isvc}` (KServe's v1 protocol: TF Serving's :predict).")
        call = (f"curl -s -H \"Host: $HOST\" -H 'Content-Type: application/json' "
                f"http://$INGRESS/v1/models/{isvc}:predict -d @request-v1.json")
    return f"""## Serving with KServe

{layout} `{MANIFEST}` points the runtime at `{uri}`: copy this folder's content there first.

```
kubectl apply -f {MANIFEST}
kubectl get inferenceservice {isvc}   # READY True
HOST=$(kubectl get inferenceservice {isvc} -o jsonpath='{{.status.url}}' | cut -d/ -f3)
INGRESS=$INGRESS_HOST:$INGRESS_PORT   # your cluster's ingress gateway
{call}
```

KServe needs a Kubernetes cluster: nothing here started it. The model inside is smoke-tested with
`mdeploy package MODEL --target {'triton' if onnx else 'tfserving'} --smoke-test` where that server runs.
"""


def server_check(model: ModelRef) -> NoReturn:
    """KServe needs a cluster: `--smoke-test` is refused before the model loads."""
    raise MissingDependencyError(
        "--smoke-test: KServe runs on a Kubernetes cluster, which mdeploy cannot start here",
        hint=f"package without --smoke-test, and smoke-test the model inside with --target "
        f"{'triton' if model.format is Format.ONNX else 'tfserving'} --smoke-test where that server runs")


def server(request: Request, root: Path, port: int) -> Server:
    server_check(request.model)
