"""`mdeploy convert m.onnx -o m2.onnx --opset N`: the ONNX -> ONNX edge moves a model to another opset with onnx's
version converter, validates the result against the source when the source runs here, says why not when it cannot
(its opset is newer than onnxruntime reads: the reason to convert it), and fails on an op it cannot map with one line."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.checks import assert_clean_error
from tests.conftest import run_cli
from tests.runners.conftest import ort_refuses


@dataclass
class Models:
    base: Path  # the tiny MLP: IR 8, ai.onnx opset 17
    opset21: Path  # the same graph at IR 14, opset 21 (MatMul, Add and Relu mean the same there)
    opset21_external: Path  # ... with its weights in an external data file, alone in its folder
    too_new: Path  # IR 14 with onnx's newest opset
    newest_opset: int
    gelu: Path  # Gelu exists only from opset 20 on
    unsqueeze: Path  # opset-13 Unsqueeze whose axes are a graph input: opset 12 wants them as an attribute


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_node(path: Path, node: onnx.NodeProto, inputs: list, output: onnx.ValueInfoProto, opset: int) -> Path:
    from onnx import helper

    graph = helper.make_graph([node], node.name, inputs, [output])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> Models:
    from onnx import TensorProto, helper

    from fixtures import onnx_graphs

    out = tmp_path_factory.mktemp("onnx_to_onnx")
    base = onnx_graphs.mlp(out / "mlp.onnx")
    (out / "external").mkdir()
    newest = onnx.defs.onnx_opset_version()
    value = helper.make_tensor_value_info
    return Models(
        base=base,
        opset21=onnx_graphs.restamped(base, out / "mlp21.onnx", ir_version=14, opset=21),
        opset21_external=onnx_graphs.restamped(base, out / "external" / "mlp21.onnx", ir_version=14, opset=21, external=True),
        too_new=onnx_graphs.restamped(base, out / "mlp_newest.onnx", ir_version=14, opset=newest),
        newest_opset=newest,
        gelu=_one_node(out / "gelu.onnx", helper.make_node("Gelu", ["x"], ["y"], name="gelu1"),
                       [value("x", TensorProto.FLOAT, [2, 3])], value("y", TensorProto.FLOAT, [2, 3]), 20),
        unsqueeze=_one_node(out / "unsqueeze.onnx", helper.make_node("Unsqueeze", ["x", "axes"], ["y"], name="unsq"),
                            [value("x", TensorProto.FLOAT, [3]), value("axes", TensorProto.INT64, [1])],
                            value("y", TensorProto.FLOAT, [1, 3]), 13),
    )


def _numpy_mlp(reference: Path, x: np.ndarray) -> np.ndarray:
    """The MLP computed by numpy from the reference file's own weights."""
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(reference)).graph.initializer}
    h = x
    for i in range(3):
        h = h @ weights[f"w{i}"] + weights[f"b{i}"]
        if i < 2:
            h = np.maximum(h, 0)
    return h


def _ort_run(model: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"x": x})[0]


def _opset(model: Path) -> int:
    return next(o.version for o in onnx.load(str(model), load_external_data=False).opset_import if o.domain in ("", "ai.onnx"))


def test_downgrade_21_to_17_validates_and_the_result_runs_on_onnxruntime_itself(models, tmp_path):
    before = _digest(models.opset21)
    out = tmp_path / "mlp17.onnx"
    result = run_cli("convert", models.opset21, "-o", out, "--opset", "17", "--json")
    assert result.code == 0, result.stderr
    report = result.json
    assert report["passed"] and report["format"] == "onnx"
    step = report["steps"][0]
    assert step["name"] == "convert onnx -> onnx" and step["details"]["converter"] == "onnx.version_converter"
    assert step["details"]["opset"] == {"from": 21, "to": 17}
    assert step["details"]["ir_version"] == {"from": 14, "to": 8}  # what onnx 1.12, the release of opset 17, writes
    # validated against the source (which runs with its IR lowered in memory), at the example batch and a second one
    assert [c["label"] for c in report["comparisons"]] == ["example inputs", "batch=3"], report["comparisons"]
    assert all(c["passed"] for c in report["comparisons"])
    assert next(s for s in report["steps"] if s["name"] == "validate")["status"] == "passed"
    saved = onnx.load(str(out))
    assert (_opset(out), saved.ir_version) == (17, 8)
    onnx.checker.check_model(saved, full_check=True)
    assert not ort_refuses(out)  # onnxruntime opens the file as it is, no mdeploy in between
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    np.testing.assert_allclose(_ort_run(out, x), _numpy_mlp(models.base, x), rtol=1e-5, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp17.onnx"]
    assert _digest(models.opset21) == before


def test_upgrade_17_to_21_gets_the_ir_version_of_that_opset(models, tmp_path):
    out = tmp_path / "mlp21.onnx"
    result = run_cli("convert", models.base, "-o", out, "--opset", "21", "--json")
    assert result.code == 0, result.stderr
    assert result.json["passed"] and len(result.json["comparisons"]) == 2
    assert (_opset(out), onnx.load(str(out)).ir_version) == (21, 10)  # onnx 1.16 wrote opset 21 at IR 10


def test_external_data_is_written_beside_the_result(models, tmp_path):
    src = models.opset21_external
    src_data = src.parent / (src.name + ".data")
    before = (_digest(src), _digest(src_data))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = run_cli("convert", src, "-o", out_dir / "m17.onnx", "--opset", "17", "--json", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert result.json["passed"] and result.json["steps"][0]["details"]["external_data"] == ["m17.onnx.data"]
    assert sorted(p.name for p in out_dir.iterdir()) == ["m17.onnx", "m17.onnx.data"]
    stored = onnx.load(str(out_dir / "m17.onnx"), load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in stored.graph.initializer)
    x = np.ones((2, 16), np.float32)
    np.testing.assert_allclose(_ort_run(out_dir / "m17.onnx", x), _numpy_mlp(models.base, x), rtol=1e-5, atol=1e-5)
    assert (_digest(src), _digest(src_data)) == before
    assert sorted(p.name for p in src.parent.iterdir()) == ["mlp21.onnx", "mlp21.onnx.data"]


def test_a_weight_too_large_to_read_before_converting_reaches_the_result(tmp_path):
    """Weights above 1 MiB stay on disk through the version converter and are read from the source's data file."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(2).standard_normal((1024, 512)).astype(np.float32)  # 2 MiB
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")], "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 512])], [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    (tmp_path / "src").mkdir()
    src = tmp_path / "src" / "wide.onnx"
    onnx.save_model(model, str(src), save_as_external_data=True, location="weights.bin", size_threshold=0)
    out = tmp_path / "wide17.onnx"
    result = run_cli("convert", src, "-o", out, "--opset", "17", "--json")
    assert result.code == 0, result.stderr
    assert result.json["passed"] and len(result.json["comparisons"]) == 2  # example inputs and n=3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src", "wide17.onnx", "wide17.onnx.data"]
    x = np.random.default_rng(3).standard_normal((2, 1024)).astype(np.float32)
    import onnxruntime as ort

    y = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]
    np.testing.assert_allclose(y, x @ w, rtol=1e-4, atol=1e-4)


def test_a_model_newer_than_the_runtime_follows_the_errors_advice_and_runs(models, tmp_path):
    if not ort_refuses(models.too_new):
        pytest.skip(f"this onnxruntime reads onnx's newest opset {models.newest_opset}")
    refused = run_cli("validate", models.too_new, models.base)
    assert refused.code == 2
    advice = re.search(r"`mdeploy convert SOURCE -o MODEL\.onnx --opset (\d+)`", refused.stderr)
    assert advice, refused.stderr
    opset = int(advice[1])
    before = _digest(models.too_new)
    out = tmp_path / "runs_here.onnx"
    result = run_cli("convert", models.too_new, "-o", out, "--opset", opset, "--json")
    assert result.code == 0, result.stderr
    report = result.json
    assert report["passed"] and report["comparisons"] == []
    validate = next(s for s in report["steps"] if s["name"] == "validate")
    assert validate["status"] == "skipped"
    reason = validate["details"]["reason"]
    assert f"the source {models.too_new.name} cannot run here" in reason and f"ai.onnx opset {models.newest_opset}" in reason
    assert f"not validated: {reason}" in report["notes"]
    assert _opset(out) == opset and not ort_refuses(out)
    # the result computes what the model does: against the opset-17 original in `mdeploy validate`, and against numpy
    checked = run_cli("validate", models.base, out, "--samples", "3", "--json")
    assert checked.code == 0, checked.stderr
    assert checked.json["passed"]
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    np.testing.assert_allclose(_ort_run(out, x), _numpy_mlp(models.base, x), rtol=1e-5, atol=1e-5)
    assert _digest(models.too_new) == before


def test_the_plain_output_says_why_it_was_not_validated(models, tmp_path):
    if not ort_refuses(models.too_new):
        pytest.skip(f"this onnxruntime reads onnx's newest opset {models.newest_opset}")
    result = run_cli("convert", models.too_new, "-o", tmp_path / "m.onnx", "--opset", "17")
    assert result.code == 0, result.stderr
    assert "not validated: the source" in result.stdout and "cannot run here" in result.stdout
    assert "(not validated)" in result.stdout


def test_without_opset_exit_2_says_what_the_edge_does(models, tmp_path):
    before = _digest(models.opset21)
    result = run_cli("convert", models.opset21, "-o", tmp_path / "m.onnx")
    assert result.code == 2
    error = assert_clean_error(result)
    assert "moves the model to another opset" in error and "--opset" in error
    assert "imports ai.onnx opset 21" in result.stderr  # the hint gives the model's opset and the runtime's limit
    assert list(tmp_path.iterdir()) == []
    assert _digest(models.opset21) == before


@pytest.mark.parametrize(
    ("case", "opset", "expected", "hint"),
    [
        ("gelu", "17", "gelu.onnx from ai.onnx opset 20 to 17: onnx", "--opset 20 or newer"),
        ("unsqueeze", "12", "unsqueeze.onnx from ai.onnx opset 13 to 12 at Unsqueeze (node unsq):", "opset 12"),
    ],
    ids=["op-newer-than-the-target", "adapter-refuses"],
)
def test_an_op_the_converter_cannot_map_is_one_line_naming_it(models, tmp_path, case, opset, expected, hint):
    src = getattr(models, case)
    before = _digest(src)
    result = run_cli("convert", src, "-o", tmp_path / "m.onnx", "--opset", opset)
    assert result.code == 2, result.stderr
    error = assert_clean_error(result)
    assert error.startswith("error: cannot convert ") and expected in error, error
    assert "Assertion" not in error and "$" not in error
    if case == "gelu":
        assert "Gelu (node gelu1) below opset 20" in error
    assert hint in result.stderr
    assert list(tmp_path.iterdir()) == []  # no partial output, no staging folder left behind
    assert _digest(src) == before


def test_an_existing_output_is_replaced_only_with_force(models, tmp_path):
    out = tmp_path / "m17.onnx"
    out.write_bytes(b"keep me")
    result = run_cli("convert", models.opset21, "-o", out, "--opset", "17")
    assert result.code == 2
    assert "output exists" in assert_clean_error(result) and "--force" in result.stderr
    assert out.read_bytes() == b"keep me"
    forced = run_cli("convert", models.opset21, "-o", out, "--opset", "17", "--force", "--json")
    assert forced.code == 0, forced.stderr
    assert _opset(out) == 17


def test_planning_onnx_to_onnx_picks_the_opset_edge_and_leaves_other_paths_alone():
    from mdeploy import registry
    from mdeploy.converters.onnx_to_onnx import OnnxToOnnx
    from mdeploy.core import Format

    assert registry.plan_conversion(Format.ONNX, Format.ONNX) == [OnnxToOnnx]
    assert [c.__name__ for c in registry.plan_conversion(Format.TFLITE, Format.ONNX)] == ["TFLiteToOnnx"]
    keras_to_tflite = registry.plan_conversion(Format.KERAS, Format.TFLITE)
    assert [c.__name__ for c in keras_to_tflite] == ["KerasToSavedModel", "SavedModelToTFLite"]
    with pytest.raises(Exception, match="no conversion path from tflite to tflite"):
        registry.plan_conversion(Format.TFLITE, Format.TFLITE)
