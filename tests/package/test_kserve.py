"""`mdeploy package --target kserve`: the InferenceService manifest (parsed back with PyYAML), the runtime's layout
inside (a Triton repository for ONNX, a TF Serving base path for a SavedModel, written by triton.py / tfserving.py),
the request examples, and the bad inputs through the real CLI.

Models: the tiny ONNX graphs of fixtures/onnx_graphs.py and fixtures/serving_graphs.py; the float-only tf.Module
SavedModel of fixtures/tf_models.py (packaged through mdeploy.api in this process: TensorFlow is imported once).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fixtures import onnx_graphs, serving_graphs
from tests.checks import assert_clean_error
from tests.package.checks import files

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="the serving extra is not installed")


@pytest.fixture(scope="session")
def onnx_models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("kserve_models")
    return {"mlp": onnx_graphs.mlp(d / "My_Model.v2.onnx"), "fixed": serving_graphs.fixed_batch_mlp(d / "fixed.onnx")}


def test_onnx_goes_to_the_triton_runtime(cli, onnx_models, tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    out = tmp_path / "isvc"
    result = cli("package", onnx_models["mlp"], "--target", "kserve", "-o", out, "--instances", "3", "--json")
    assert result.code == 0, result.stderr
    assert files(out) == ["README.md", "inference-service.yaml", "repository/My_Model.v2/1/model.onnx",
                          "repository/My_Model.v2/config.pbtxt", "request-v2.json"]
    doc = yaml.safe_load((out / "inference-service.yaml").read_text())
    assert doc["apiVersion"] == "serving.kserve.io/v1beta1" and doc["kind"] == "InferenceService"
    assert doc["metadata"]["name"] == "my-model-v2"  # a DNS-1035 label made from the model's name
    predictor = doc["spec"]["predictor"]
    assert predictor["minReplicas"] == 3
    assert predictor["model"] == {"modelFormat": {"name": "onnx"}, "runtime": "kserve-tritonserver", "protocolVersion": "v2",
                                  "storageUri": "pvc://model-store/my-model-v2/repository"}
    config = text_format.Parse((out / "repository/My_Model.v2/config.pbtxt").read_text(), pb.ModelConfig())
    assert config.max_batch_size == 8 and [list(t.dims) for t in config.input] == [[16]]
    assert config.instance_group[0].count == 1  # replicas are pods; each pod's Triton runs one instance
    body = json.loads((out / "request-v2.json").read_text())
    assert body["inputs"][0]["name"] == "x" and body["inputs"][0]["datatype"] == "FP32"
    report = result.json
    assert report["passed"] and all(c["passed"] for c in report["checks"])
    assert any("KServe requires" in c["check"] for c in report["checks"])
    assert any("Triton's ModelConfig" in c["check"] for c in report["checks"])
    assert report["comparisons"][0]["passed"]
    assert any("placeholder pvc://model-store/my-model-v2" in n for n in report["notes"])
    readme = (out / "README.md").read_text()
    assert "kubectl apply -f inference-service.yaml" in readme and "/v2/models/My_Model.v2/infer" in readme


def test_storage_uri_is_used(cli, onnx_models, tmp_path):
    out = tmp_path / "isvc"
    result = cli("package", onnx_models["mlp"], "--target", "kserve", "-o", out, "--storage-uri", "s3://bucket/models/mlp/")
    assert result.code == 0, result.stderr
    doc = yaml.safe_load((out / "inference-service.yaml").read_text())
    assert doc["spec"]["predictor"]["model"]["storageUri"] == "s3://bucket/models/mlp/repository"


def test_manifest_check_finds_what_kserve_would_reject():
    from mdeploy.core import Format, ModelRef
    from mdeploy.packaging import kserve
    from mdeploy.packaging.base import Request

    request = Request(model=ModelRef(Path("m.onnx"), Format.ONNX), inputs=[], outputs=[], name="m", version=1,
                      max_batch_size=None, instances=1, feeds=[])
    good = yaml.safe_dump(kserve.manifest(request))
    assert all(c["passed"] for c in kserve.manifest_checks(good, request))
    doc = kserve.manifest(request)
    del doc["spec"]["predictor"]["model"]["storageUri"]
    doc["metadata"]["name"] = "My_Model"
    doc["spec"]["predictor"]["model"]["runtime"] = "kserve-tensorflow-serving"
    failed = {c["check"].split(" (")[0]: c["detail"] for c in kserve.manifest_checks(yaml.safe_dump(doc), request)
              if not c["passed"]}
    assert failed == {"the fields KServe requires": "spec.predictor.model.storageUri",
                      "metadata.name is a DNS-1035 label": "My_Model",
                      "runtime kserve-tritonserver for a onnx model": "got ('onnx', 'kserve-tensorflow-serving', 'v2')"}
    assert not kserve.manifest_checks("a: [b", request)[0]["passed"]


def test_savedmodel_goes_to_the_tf_serving_runtime(tmp_path):
    pytest.importorskip("tensorflow", reason="the tensorflow extra is not installed")
    from fixtures import tf_models
    from mdeploy import api

    model = tmp_path / "periodic"
    tf_models._float_only_savedmodel(model)
    out = tmp_path / "isvc"
    report = api.package(str(model), "kserve", str(out), storage_uri="gs://b/p").to_dict()
    assert report["passed"] and all(c["passed"] for c in report["checks"])
    assert "periodic/1/saved_model.pb" in files(out) and "request-v1.json" in files(out)
    model_spec = yaml.safe_load((out / "inference-service.yaml").read_text())["spec"]["predictor"]["model"]
    assert model_spec == {"modelFormat": {"name": "tensorflow"}, "runtime": "kserve-tensorflow-serving",
                          "protocolVersion": "v1", "storageUri": "gs://b/p/periodic"}
    body = json.loads((out / "request-v1.json").read_text())
    assert body["signature_name"] == "serving_default" and list(body["inputs"]) == ["x"]
    assert "/v1/models/periodic:predict" in (out / "README.md").read_text()


def test_bad_storage_uri_is_refused(cli, onnx_models, tmp_path):
    out = tmp_path / "isvc"
    result = cli("package", onnx_models["mlp"], "--target", "kserve", "-o", out, "--storage-uri", "/data/models")
    assert_clean_error(result, "--storage-uri '/data/models'", "pvc://", out=out)


def test_smoke_test_needs_a_cluster(cli, onnx_models, tmp_path):
    out = tmp_path / "isvc"
    result = cli("package", onnx_models["mlp"], "--target", "kserve", "-o", out, "--smoke-test")
    assert_clean_error(result, "KServe runs on a Kubernetes cluster", "--target triton --smoke-test", out=out)


def test_fixed_batch_with_max_batch_size_is_refused(cli, onnx_models, tmp_path):
    out = tmp_path / "isvc"
    result = cli("package", onnx_models["fixed"], "--target", "kserve", "-o", out, "--max-batch-size", "4")
    assert_clean_error(result, "batch dimension", "fixed", out=out)


def test_a_format_kserve_cannot_serve_is_refused(cli, tmp_path):
    tflite = tmp_path / "m.tflite"
    tflite.write_bytes(b"the format is refused by name, before the file is read")
    out = tmp_path / "isvc"
    assert_clean_error(cli("package", tflite, "--target", "kserve", "-o", out), "kserve cannot serve a tflite model",
                       "mdeploy convert", out=out)


def test_force_rerun_leaves_the_same_file_set(cli, onnx_models, tmp_path):
    out = tmp_path / "isvc"
    assert cli("package", onnx_models["mlp"], "--target", "kserve", "-o", out).code == 0
    first = files(out)
    again = cli("package", onnx_models["mlp"], "--target", "kserve", "-o", out)
    assert again.code == 2 and "--force" in again.stderr and files(out) == first
    assert cli("package", onnx_models["mlp"], "--target", "kserve", "-o", out, "--force").code == 0
    assert files(out) == first
    assert [p.name for p in tmp_path.iterdir()] == ["isvc"]
