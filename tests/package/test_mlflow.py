"""`mdeploy package --target mlflow`: real MLflow packages of real tiny models, loaded back with mlflow.pyfunc, and a
real `mlflow models serve` started, posted to, measured and stopped.

Models: the tiny CNN (ONNX, dynamic batch), a two-input/three-output ONNX graph with an int64 input and its weights
in external data (built below with onnx.helper), a fixed-batch ONNX graph, and the Keras multi-input model of
fixtures/tf_models.py as .keras, SavedModel, float TFLite and full-integer TFLite (TensorFlow builds them once).
Server starts in this file: one smoke test that passes, one whose server cannot start, two interrupted (SIGTERM, Ctrl-C).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.checks import assert_clean_error
from tests.conftest import ROOT

pytest.importorskip("mlflow", reason="the serving extra is not installed")

TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


# --- models ------------------------------------------------------------------------------------------------------
def _multi_io_onnx(path: Path) -> Path:
    """features float32[batch, 4] and ids int64[batch, 3] -> score float32[batch], embedded float32[batch, 3, 2],
    best int64[batch]; the weights in one external data file beside the model."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    table = rng.standard_normal((600, 2)).astype(np.float32)  # 4.8 kB: past the 1 kB external-data threshold
    w = rng.standard_normal((4, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["embedded"], axis=0),
        helper.make_node("ReduceSum", ["embedded", "axes12"], ["pooled"], keepdims=0),
        helper.make_node("MatMul", ["features", "w"], ["proj"]),
        helper.make_node("Squeeze", ["proj", "axes1"], ["proj1"]),
        helper.make_node("Add", ["proj1", "pooled"], ["score"]),
        helper.make_node("ArgMax", ["features"], ["best"], axis=1, keepdims=0),
    ]
    inits = [numpy_helper.from_array(table, "table"), numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.array([1, 2], np.int64), "axes12"),
             numpy_helper.from_array(np.array([1], np.int64), "axes1")]
    graph = helper.make_graph(
        nodes, "multi_io",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 3])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"]),
         helper.make_tensor_value_info("embedded", TensorProto.FLOAT, ["batch", 3, 2]),
         helper.make_tensor_value_info("best", TensorProto.INT64, ["batch"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="mdeploy-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)
    return path


def _fixed_batch_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "fixed",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def onnx_models(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("mlflow_onnx")
    return {"multi_io": _multi_io_onnx(out / "multi_io.onnx"), "fixed": _fixed_batch_onnx(out / "fixed.onnx")}


@pytest.fixture(scope="session")
def tf_files(tmp_path_factory) -> dict[str, Path]:
    """The Keras two-input/two-output model as .keras, SavedModel, float TFLite and full-integer TFLite."""
    pytest.importorskip("tensorflow", reason="the tensorflow extra is not installed")
    from fixtures import tf_models

    out = tmp_path_factory.mktemp("mlflow_tf")
    model = tf_models.multi_io()
    files = {"keras": out / "multi_io.keras", "savedmodel": out / "multi_io_savedmodel", "tflite": out / "multi_io.tflite"}
    model.save(files["keras"])
    model.export(str(files["savedmodel"]), format="tf_saved_model", verbose=False)
    tf_models._tflite(files["savedmodel"], files["tflite"])
    classifier = out / "image_classifier_savedmodel"
    tf_models.image_classifier().export(str(classifier), format="tf_saved_model", verbose=False)
    files["int8"] = out / "image_classifier_int8.tflite"
    tf_models._int8_tflite(classifier, files["int8"])
    return files


# --- helpers -----------------------------------------------------------------------------------------------------
def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _processes_mentioning(text: str) -> list[int]:
    """Live processes (not this one) whose command line or environment holds `text`: a server started on a
    package under a test's tmp_path has the package path in its arguments or in MLflow's _MLFLOW_SERVER_MODEL_PATH."""
    needle = text.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            status = (entry / "status").read_text()
            if "\nState:\tZ" in status:
                continue
            data = (entry / "cmdline").read_bytes() + b"\0" + (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in data:
            found.append(int(entry.name))
    return found


def _signature_types(package: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    from mlflow.models import Model

    meta = Model.load(str(package / "MLmodel"))
    return {s.name: (np.dtype(s.type).name, tuple(s.shape)) for s in meta.signature.inputs.inputs}


def _shadowing(folder: Path, module: str, message: str) -> dict[str, str]:
    """PYTHONPATH with a `module` package whose import fails with `message` (a broken or missing install)."""
    (folder / module).mkdir(parents=True)
    (folder / module / "__init__.py").write_text(f"raise ImportError({message!r})\n")
    return {"PYTHONPATH": str(folder)}


# --- packages loaded back with mlflow.pyfunc ------------------------------------------------------------------
def test_cnn_package_has_a_float32_tensor_signature_and_loads_with_pyfunc(cli, cnn_onnx, tmp_path):
    import mlflow.pyfunc
    import onnxruntime as ort

    out = tmp_path / "cnn_mlflow"
    result = cli("package", cnn_onnx, "--target", "mlflow", "-o", out, "--json")
    assert result.code == 0, result.stderr
    report = result.json
    assert report["passed"] and report["comparisons"][0]["label"] == "package" and report["comparisons"][0]["passed"]
    assert {"MLmodel", "model.onnx", "README.md", "requirements.txt", "serving_input_example.json"} <= set(report["files"])
    assert all(c["passed"] for c in report["checks"])
    assert _signature_types(out) == {"image": ("float32", (-1, 3, 32, 32))}
    requirements = (out / "requirements.txt").read_text().split()
    assert any(r.startswith("mlflow==") for r in requirements) and any(r.startswith("onnxruntime==") for r in requirements)
    readme = (out / "README.md").read_text()
    assert "mlflow models serve -m . --env-manager local" in readme and "MLFLOW_DISABLE_TELEMETRY=true" in readme

    x = np.random.default_rng(3).standard_normal((3, 3, 32, 32)).astype(np.float32)
    got = mlflow.pyfunc.load_model(str(out)).predict({"image": x})
    want = ort.InferenceSession(str(cnn_onnx), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    np.testing.assert_allclose(got["output"], want, rtol=1e-5, atol=1e-6)


def test_multi_io_package_keeps_int64_and_external_data(cli, onnx_models, tmp_path):
    import mlflow.pyfunc
    import onnxruntime as ort
    from mlflow.pyfunc.scoring_server import predictions_to_json
    from mlflow.utils.proto_json_utils import parse_tf_serving_input

    from mdeploy.core import TensorSpec
    from mdeploy.packaging.mlflow_target import decode_response, encode_request

    source = onnx_models["multi_io"]
    before = {p.name: _digest(p) for p in source.parent.iterdir()}
    out = tmp_path / "multi_mlflow"
    result = cli("package", source, "--target", "mlflow", "-o", out, "--json")
    assert result.code == 0, result.stderr
    assert {"model.onnx", "model.onnx.data"} <= set(result.json["files"])
    assert result.json["comparisons"][0]["passed"]
    assert {p.name: _digest(p) for p in source.parent.iterdir()} == before  # inputs never modified
    # ids stays int64 (JSON integers would otherwise be whatever the parser guesses), features float32, not float64
    assert _signature_types(out) == {"features": ("float32", (-1, 4)), "ids": ("int64", (-1, 3))}

    model = mlflow.pyfunc.load_model(str(out))
    rng = np.random.default_rng(5)
    feed = {"features": rng.standard_normal((2, 4)).astype(np.float32), "ids": rng.integers(0, 600, (2, 3), dtype=np.int64)}
    # the request as the scoring server parses it, with the package's own schema
    parsed = parse_tf_serving_input(json.loads(encode_request(feed)), schema=model.metadata.get_input_schema())
    assert parsed["features"].dtype == np.float32 and parsed["ids"].dtype == np.int64
    got = model.predict(parsed)
    want = dict(zip(["score", "embedded", "best"], ort.InferenceSession(str(source)).run(None, feed)))
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6)
    # the server's answer for three outputs (mlflow's own encoder), decoded by name with the model's dtypes
    import io

    buffer = io.StringIO()
    predictions_to_json(got, buffer)
    outputs = [TensorSpec("score", ("batch",), "float32"), TensorSpec("embedded", ("batch", 3, 2), "float32"),
               TensorSpec("best", ("batch",), "int64")]
    decoded = decode_response(buffer.getvalue().encode(), outputs)
    assert set(decoded) == set(want) and decoded["best"].dtype == np.int64 and decoded["score"].dtype == np.float32
    np.testing.assert_array_equal(decoded["best"], want["best"])
    np.testing.assert_allclose(decoded["embedded"], want["embedded"], rtol=1e-6)
    # one output: MLflow may answer with a bare list
    bare = decode_response(json.dumps({"predictions": [[1.0, 2.0]]}).encode(), outputs[:1])
    assert bare["score"].dtype == np.float32 and bare["score"].shape == (1, 2)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["tflite", "int8"])
def test_tflite_package_is_served_by_the_wrapper(cli, tf_files, tmp_path, which):
    import mlflow.pyfunc

    from mdeploy.core import ModelRef
    from mdeploy.runners.tflite_runner import TFLiteRunner

    out = tmp_path / f"{which}_mlflow"
    result = cli("package", tf_files[which], "--target", "mlflow", "-o", out, "--json")
    assert result.code == 0, result.stderr
    assert result.stderr == ""  # MLflow's progress bar and its type-hint advice stay out of the user's terminal
    assert result.json["comparisons"][0]["passed"]
    files = set(result.json["files"])
    assert {"MLmodel", "mlflow_tflite_model.py", f"artifacts/{tf_files[which].name}"} <= files
    assert not any(f.endswith((".pkl", ".pickle", ".cloudpickle")) for f in files)  # models from code: no pickle
    assert "import mdeploy" not in (out / "mlflow_tflite_model.py").read_text()  # the server needs no mdeploy
    assert any(r.startswith("ai-edge-litert==") for r in (out / "requirements.txt").read_text().split())

    runner = TFLiteRunner(ModelRef.parse(str(tf_files[which])))
    rng = np.random.default_rng(11)
    feed = {s.name: rng.standard_normal([3 if not isinstance(d, int) or d < 0 else d for d in s.shape]).astype(s.dtype)
            for s in runner.input_specs()}
    assert _signature_types(out) == {s.name: (s.dtype, tuple(d if isinstance(d, int) and d >= 0 else -1 for d in s.shape))
                                     for s in runner.input_specs()}
    # the wrapper answers real float32 values, also for the int8 model's quantized output: the signature (and the
    # smoke test's decoding of the server's JSON) says float32, not the raw int8 that would truncate them
    from mlflow.models import Model

    answered = {s.name: np.dtype(s.type).name for s in Model.load(str(out / "MLmodel")).signature.outputs.inputs}
    assert answered == {name: "float32" for name in runner.output_names()}
    got = mlflow.pyfunc.load_model(str(out)).predict(feed)
    want = runner.infer(feed)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-6)


def test_input_sizes_validate_without_fixing_the_signature(cli, onnx_models, tmp_path):
    """`--input` gives the validation inputs concrete sizes; the package still takes every size the model takes."""
    out = tmp_path / "sized"
    result = cli("package", onnx_models["multi_io"], "--target", "mlflow", "-o", out, "--input", "features:5x4",
                 "--input", "ids:5x3:int64", "--json")
    assert result.code == 0, result.stderr
    assert _signature_types(out) == {"features": ("float32", (-1, 4)), "ids": ("int64", (-1, 3))}
    example = json.loads((out / "serving_input_example.json").read_text())["inputs"]
    assert np.asarray(example["features"]).shape == (5, 4)  # the example is a validation input, as given


def test_force_replaces_the_package_with_the_same_file_set(cli, onnx_models, tmp_path):
    out = tmp_path / "again"
    first = cli("package", onnx_models["multi_io"], "--target", "mlflow", "-o", out)
    assert first.code == 0, first.stderr
    files = _tree(out)
    second = cli("package", onnx_models["multi_io"], "--target", "mlflow", "-o", out, "--force")
    assert second.code == 0, second.stderr
    assert _tree(out) == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]  # no staging or old folder left beside it


# --- bad input: exit 2, one line, nothing written -----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("which", ["keras", "savedmodel"])
def test_a_tensorflow_model_is_refused_naming_convert(cli, tf_files, tmp_path, which):
    out = tmp_path / "pkg"
    result = cli("package", tf_files[which], "--target", "mlflow", "-o", out)
    line = assert_clean_error(result)
    assert "mlflow cannot serve" in line
    assert "mdeploy convert" in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_an_existing_folder_needs_force(cli, cnn_onnx, tmp_path):
    out = tmp_path / "pkg"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = cli("package", cnn_onnx, "--target", "mlflow", "-o", out)
    assert "exists" in assert_clean_error(result) and "--force" in result.stderr
    assert _tree(out) == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


def test_max_batch_size_on_a_fixed_batch_is_refused(cli, onnx_models, tmp_path):
    out = tmp_path / "pkg"
    result = cli("package", onnx_models["fixed"], "--target", "mlflow", "-o", out, "--max-batch-size", "4")
    assert "batch is fixed" in assert_clean_error(result)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_without_mlflow_the_error_names_the_serving_extra(cli, cnn_onnx, tmp_path):
    out = tmp_path / "pkg"
    env = _shadowing(tmp_path / "site", "mlflow", "No module named 'mlflow'")
    result = cli("package", cnn_onnx, "--target", "mlflow", "-o", out, env=env)
    assert "mlflow is needed" in assert_clean_error(result)
    assert "pip install 'mdeploy[serving]'" in result.stderr
    assert not out.exists()


# --- the real server ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smoke_test_serves_the_cnn_and_stops_the_server(cli, cnn_onnx, tmp_path):
    out, cwd, home = tmp_path / "cnn_served", tmp_path / "cwd", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    result = cli("package", cnn_onnx, "--target", "mlflow", "-o", out, "--smoke-test", "--requests", "8",
                 "--concurrency", "1,2", "--json", cwd=cwd, env=env)
    assert result.code == 0, result.stderr + result.stdout
    report = result.json
    server = [c for c in report["comparisons"] if c["label"] == "server"]
    assert len(server) == 1 and server[0]["passed"]
    smoke = report["smoke_test"]
    assert smoke["server"] == "mlflow models serve" and smoke["url"].startswith("http://127.0.0.1:")
    assert [level["concurrency"] for level in smoke["levels"]] == [1, 2]
    for level in smoke["levels"]:
        assert level["requests"] == 8 and level["errors"] == 0
        assert 0 < level["p50_ms"] <= level["p99_ms"] and level["throughput_rps"] > 0
    assert smoke["in_process_ms"] > 0
    assert "## Smoke test over HTTP" in (out / "README.md").read_text()
    assert _processes_mentioning(str(tmp_path)) == []  # the server and its workers are gone
    assert list(cwd.iterdir()) == []  # no mlruns/ in the cwd
    # no ~/.mlflow, no ~/.config/mlflow/telemetry.json (onnxruntime's own ~/.cache/Microsoft/... device id is its, not MLflow's)
    assert [p for p in home.rglob("*") if "mlflow" in str(p.relative_to(home)).lower()] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn_served", "cwd", "home"]


@pytest.mark.slow
def test_a_server_that_cannot_start_fails_with_its_log(cli, cnn_onnx, tmp_path):
    out = tmp_path / "pkg"
    # the scoring server's uvicorn is broken in the serving environment (mdeploy itself never imports it)
    env = _shadowing(tmp_path / "site", "uvicorn", "uvicorn is broken here (mdeploy test)")
    result = cli("package", cnn_onnx, "--target", "mlflow", "-o", out, "--smoke-test", "--requests", "4", env=env)
    assert result.code == 1, result.stderr + result.stdout
    assert "FAILED smoke test: server start: the server exited" in " ".join(result.stdout.split())
    assert "uvicorn is broken here (mdeploy test)" in result.stdout  # the server's own last log lines
    assert "Traceback" not in result.stderr
    assert "FAILED: smoke test: server start" in (out / "README.md").read_text()  # the package is kept, saying why
    assert _processes_mentioning(str(tmp_path)) == []


def _as_from_a_shell() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _signal_state(pid: int | str) -> str:
    """Blocked, ignored and caught signals of a process (hex masks, bit 1 = SIGINT, bit 14 = SIGTERM)."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return " ".join(line.replace("\t", "") for line in lines if line.startswith(("SigBlk", "SigIgn", "SigCgt")))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_stopping_mdeploy_stops_the_server(cnn_onnx, tmp_path, sig):
    out = tmp_path / "pkg"
    env = {**os.environ, **TELEMETRY_OFF}
    # -X faulthandler: should it ever hang (seen under full-suite load, never alone), SIGABRT prints where.
    # The child starts with SIGINT and SIGTERM as a shell's command gets them (default, unblocked): a child inherits its
    # parent's ignored signals and blocked mask, and an earlier test in this pytest worker may leave either changed
    # (a hang seen in CI: mdeploy's main thread waiting in 0.2 s joins, its SIGINT never acted on).
    process = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "mdeploy", "package", str(cnn_onnx), "--target", "mlflow", "-o", str(out),
                                "--smoke-test", "--requests", "1000000", "--concurrency", "1", "--json"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_as_from_a_shell)
    try:
        deadline = time.monotonic() + 120
        served = []
        while time.monotonic() < deadline and process.poll() is None:  # wait for the server's worker (uvicorn)
            served = [pid for pid in _processes_mentioning(str(tmp_path)) if pid != process.pid
                      and b"uvicorn" in Path(f"/proc/{pid}/cmdline").read_bytes()]
            if served:
                break
            time.sleep(0.2)
        assert served, process.communicate()[1].decode()
        time.sleep(4)  # inside the comparison or the burst
        process.send_signal(sig)
        try:
            _, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:200] for pid in _processes_mentioning(str(tmp_path))}
            left["signals (mdeploy; this test)"] = [_signal_state(process.pid), _signal_state("self")]
            process.send_signal(signal.SIGABRT)  # every thread's Python stack to stderr
            _, stderr = process.communicate(timeout=30)
            pytest.fail(f"mdeploy did not exit within 60 s of {sig!r}; processes {left}; its threads:\n"
                        + stderr.decode(errors="replace")[-8000:])
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr.decode()
    assert _processes_mentioning(str(tmp_path)) == []
    assert not out.exists() and list(tmp_path.iterdir()) == []  # the staging folder is gone too
