"""`mdeploy package --target tfserving`: the SavedModel in an integer version folder, its serving_default signature
checked on the copy and run as the package's runner, the :predict body, and every bad input through the real CLI.

Path tests call mdeploy.api in this process (TensorFlow is imported once); the CLI runs for what a user sees: exit
codes, errors, --force. Models: fixtures/tf_models.py builders (the multi-input Keras model exported as a SavedModel,
the float-only tf.Module), and a tf.Module saved with only a `predict` signature (fixtures/serving_graphs.py), built
once per session.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.checks import assert_clean_error
from tests.package.checks import files

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
pytest.importorskip("tensorflow", reason="the tensorflow extra is not installed")


@pytest.fixture(scope="session")
def saved_models(tmp_path_factory) -> dict[str, Path]:
    from fixtures import serving_graphs, tf_models

    d = tmp_path_factory.mktemp("tfserving_models")
    multi = d / "multi_io_savedmodel"
    tf_models.multi_io().export(str(multi), format="tf_saved_model", verbose=False)
    periodic = d / "periodic"
    tf_models._float_only_savedmodel(periodic)
    predict_only = serving_graphs.predict_only_savedmodel(d / "predict_only")
    keras_file = d / "classifier.keras"
    tf_models.image_classifier().save(keras_file)
    return {"multi": multi, "periodic": periodic, "predict_only": predict_only, "keras": keras_file}


def package(model: Path, out: Path, **options) -> dict:
    from mdeploy import api

    return api.package(str(model), "tfserving", str(out), **options).to_dict()


def test_savedmodel_in_an_integer_version_folder(saved_models, tmp_path):
    out = tmp_path / "pkg"
    report = package(saved_models["multi"], out, name="fused", version=7)
    src = saved_models["multi"]
    copied = [f"fused/7/{name}" for name in files(src)]
    assert files(out) == sorted(["README.md", "request.json", *copied])
    for name in files(src):
        assert (out / "fused/7" / name).read_bytes() == (src / name).read_bytes()
    assert report["passed"] and all(c["passed"] for c in report["checks"])
    assert {c["check"] for c in report["checks"]} >= {"the version folder is an integer (TF Serving serves no other)",
                                                       "serving_default inputs: names, dtypes and ranks match the model"}
    [comparison] = report["comparisons"]
    assert comparison["passed"] and {o["name"] for o in comparison["outputs"]} == {"output_0", "output_1"}
    body = json.loads((out / "request.json").read_text())
    assert body["signature_name"] == "serving_default"
    assert set(body["inputs"]) == {"image", "features"}
    assert np.asarray(body["inputs"]["features"]).shape == (2, 6)
    readme = (out / "README.md").read_text()
    assert "tensorflow/serving" in readme and "/v1/models/fused:predict" in readme and "@request.json" in readme


def test_predict_body_calls_the_signature_of_the_copy(saved_models, tmp_path):
    """request.json fed to the copied SavedModel's serving_default (what TF Serving does with it) gives the model's
    answer."""
    import tensorflow as tf

    out = tmp_path / "pkg"
    assert package(saved_models["periodic"], out)["passed"]
    body = json.loads((out / "request.json").read_text())
    x = np.asarray(body["inputs"]["x"], dtype=np.float32)
    served = tf.saved_model.load(str(out / "periodic/1")).signatures["serving_default"](x=tf.constant(x))["y"].numpy()
    np.testing.assert_allclose(served, np.cumsum(np.sin(x), axis=1), rtol=1e-5, atol=1e-6)


def test_predict_decoder_reads_both_answer_shapes():
    """TF Serving names the outputs only when there are several; with one it sends the bare list."""
    from mdeploy.core import Format, ModelRef, TensorSpec
    from mdeploy.packaging import tfserving
    from mdeploy.packaging.base import Request

    def request(*outputs: str) -> Request:
        return Request(model=ModelRef(Path("."), Format.SAVEDMODEL), inputs=[],
                       outputs=[TensorSpec(n, ("batch", 2)) for n in outputs], name="m", version=1, max_batch_size=None,
                       instances=1, feeds=[])

    single = tfserving.decoder(request("y"))(b'{"outputs": [[1.0, 2.0]]}')
    assert list(single) == ["y"] and single["y"].dtype == np.float32 and single["y"].shape == (1, 2)
    both = tfserving.decoder(request("a", "b"))(b'{"outputs": {"a": [[1, 2]], "b": [[3, 4]]}}')
    assert np.array_equal(both["b"], np.array([[3, 4]], np.float32))


def test_no_serving_default_is_refused_naming_the_signatures(cli, saved_models, tmp_path):
    out = tmp_path / "pkg"
    result = cli("package", saved_models["predict_only"], "--target", "tfserving", "-o", out)
    assert_clean_error(result, "no 'serving_default' signature", "its signatures: predict", out=out)


def test_keras_model_is_refused_with_the_conversion(cli, saved_models, tmp_path):
    out = tmp_path / "pkg"
    result = cli("package", saved_models["keras"], "--target", "tfserving", "-o", out)
    assert_clean_error(result, "tfserving cannot serve a keras model", "mdeploy convert", "savedmodel", out=out)


# runs the CLI as `python -m mdeploy` does, then says on stderr which frameworks the process imported
_WHAT_LOADED = """
import atexit, sys
atexit.register(lambda: print("loaded:", ",".join(m for m in ("tensorflow", "keras", "onnxruntime", "torch")
                                                  if m in sys.modules) or "nothing", file=sys.stderr))
sys.argv = ["mdeploy", *sys.argv[1:]]
from mdeploy.cli.app import main
main()
"""


@pytest.mark.skipif(shutil.which("tensorflow_model_server") is not None, reason="TF Serving is installed here")
def test_smoke_test_without_tf_serving_is_refused_before_tensorflow_loads(saved_models, tmp_path):
    """The server is asked for first: the refusal loads neither TensorFlow nor the SavedModel (7.5 s and 670 MB for a
    large model, before this was fixed)."""
    import subprocess
    import sys

    from tests.conftest import CliResult

    out = tmp_path / "pkg"
    proc = subprocess.run([sys.executable, "-c", _WHAT_LOADED, "package", str(saved_models["periodic"]), "--target",
                           "tfserving", "-o", str(out), "--smoke-test"], capture_output=True, text=True, timeout=300)
    *said, loaded = proc.stderr.strip().splitlines()
    assert loaded == "loaded: nothing", proc.stderr
    assert_clean_error(CliResult(proc.returncode, proc.stdout, "\n".join(said)), "tensorflow_model_server is not on PATH",
                       "tensorflow/serving", out=out)


def test_force_rerun_leaves_the_same_file_set(cli, saved_models, tmp_path):
    out = tmp_path / "pkg"
    assert package(saved_models["periodic"], out)["passed"]
    first = files(out)
    again = cli("package", saved_models["periodic"], "--target", "tfserving", "-o", out)
    assert again.code == 2 and "--force" in again.stderr and files(out) == first
    assert cli("package", saved_models["periodic"], "--target", "tfserving", "-o", out, "--force").code == 0
    assert files(out) == first
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]
