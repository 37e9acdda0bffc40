"""`mdeploy inspect`: what a model takes and returns, and what it is made of."""

from pathlib import Path

import pytest

from tests.checks import assert_clean_error
from tests.conftest import factory, run_cli


def test_inspect_onnx_shows_symbolic_dims_ops_params_and_size(encoder_onnx):
    result = run_cli("inspect", encoder_onnx, "--json")
    assert result.code == 0, result.stderr
    info = result.json["model"]
    ids = info["inputs"][0]
    assert ids["name"] == "input_ids" and ids["dtype"] == "int64"
    assert all(isinstance(d, str) for d in ids["shape"])
    assert ids["value_range"] == [0, 1000]  # the token table it gathers from
    assert info["opset"]["ai.onnx"] >= 17 and info["producer"].startswith("pytorch")
    assert info["operators"]["LayerNormalization"] >= 1
    assert info["parameters"] > 40_000 and info["parameter_bytes"] >= 4 * info["parameters"]
    assert info["size_bytes"] == encoder_onnx.stat().st_size and info["external_data"] == []


def test_inspect_lists_external_data_files(tmp_path):
    out = tmp_path / "big.onnx"
    assert run_cli("convert", factory("tiny_cnn"), "-o", out, "--no-validate", env={"MDEPLOY_EXTERNAL_DATA_BYTES": "0"}).code == 0
    info = run_cli("inspect", out, "--json").json["model"]
    assert info["external_data"] == ["big.onnx.data"]
    assert info["size_bytes"] > out.stat().st_size


def test_inspect_torch_formats(artifacts):
    info = run_cli("inspect", artifacts / "tiny_cnn.pt2", "--json").json["model"]
    assert info["inputs"] == [{"name": "image", "shape": ["batch", 3, 32, 32], "dtype": "float32"}]
    assert info["operators"]["aten.conv2d.default"] == 5
    info = run_cli("inspect", factory("text_encoder"), "--json").json["model"]
    assert [i["name"] for i in info["inputs"]] == ["input_ids", "attention_mask"]
    assert info["parameters"] > 40_000


def test_inspect_human_output_is_a_table(cnn_onnx):
    result = run_cli("inspect", cnn_onnx)
    assert result.code == 0
    assert "image" in result.stdout and "[batch, 3, 32, 32]" in result.stdout and "Conv" in result.stdout


@pytest.fixture(scope="module")
def broken_onnx(tmp_path_factory) -> dict[str, Path]:
    """The tiny MLP, valid and broken in the ways a runtime or onnx's checker refuses."""
    from fixtures import onnx_graphs

    out = tmp_path_factory.mktemp("broken_onnx")
    base = onnx_graphs.mlp(out / "mlp.onnx")
    return {
        "base": base,
        "ir14": onnx_graphs.restamped(base, out / "ir14.onnx", ir_version=14),
        "opset999": onnx_graphs.restamped(base, out / "opset999.onnx", opset=999),
        "dangling": onnx_graphs.dangling_input(base, out / "dangling.onnx"),
    }


def test_inspect_of_a_valid_model_exits_0_with_no_problems(broken_onnx):
    result = run_cli("inspect", broken_onnx["base"], "--json")
    assert result.code == 0 and result.stderr == ""
    assert result.json["model"]["problems"] == [] and result.json["model"]["notes"] == []


def test_inspect_shows_a_dangling_input_model_then_exits_2_with_the_checker_reason(broken_onnx):
    result = run_cli("inspect", broken_onnx["dangling"], "--json")
    assert result.code == 2
    info = result.json["model"]  # what can be read is still shown, as the one JSON object on stdout
    assert info["inputs"][0]["name"] == "x" and info["operators"]["MatMul"] == 3
    assert [p["source"] for p in info["problems"]] == ["onnx.checker"]
    error = assert_clean_error(result, hint=True)
    assert "is not a valid model" in error and "'ghost'" in error
    human = run_cli("inspect", broken_onnx["dangling"])
    assert human.code == 2 and "MatMul" in human.stdout and "invalid (onnx.checker)" in human.stdout


def _future_model(path: Path, opset: int, ir_version: int = 10) -> Path:
    """A model no runtime here runs: `opset` for the default domain, and outputs of every non-tensor kind."""
    import onnx
    from onnx import TensorProto, helper

    tensor = helper.make_tensor_type_proto(TensorProto.FLOAT, ["batch", 3])
    nodes = [
        helper.make_node("Identity", ["x"], ["y"]),
        helper.make_node("SequenceConstruct", ["x"], ["s"]),
        helper.make_node("Optional", ["x"], ["o"]),
        helper.make_node("ZipMap", ["x"], ["z"], domain="ai.onnx.ml", classlabels_strings=["a", "b", "c"]),
    ]
    scores = helper.make_map_type_proto(TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, []))
    outputs = [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
        helper.make_value_info("s", helper.make_sequence_type_proto(tensor)),
        helper.make_value_info("o", helper.make_optional_type_proto(tensor)),
        helper.make_value_info("z", helper.make_sequence_type_proto(scores)),
    ]
    graph = helper.make_graph(nodes, "future", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])], outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = ir_version
    onnx.save(model, str(path))
    return path


_FUTURE_OUTPUTS = [
    {"name": "y", "shape": ["batch", 3], "dtype": "float32"},
    {"name": "s", "shape": None, "dtype": "sequence<float32[batch, 3]>"},
    {"name": "o", "shape": None, "dtype": "optional<float32[batch, 3]>"},
    {"name": "z", "shape": None, "dtype": "sequence<map<string, float32[]>>"},
]


@pytest.mark.parametrize("opset", [30, 999])
def test_inspect_reads_a_model_too_new_for_the_runtime_and_says_what_would_run_it(tmp_path, opset):
    model = _future_model(tmp_path / "future.onnx", opset)
    result = run_cli("inspect", model, "--json")
    assert result.code == 0, result.stderr
    info = result.json["model"]
    assert info["inputs"] == [{"name": "x", "shape": ["batch", 3], "dtype": "float32"}]
    assert info["outputs"] == _FUTURE_OUTPUTS
    assert info["opset"] == {"ai.onnx": opset, "ai.onnx.ml": 3} and info["problems"] == []
    [note] = info["notes"]
    assert "this onnxruntime cannot run" in note and f"ai.onnx opset {opset}" in note and "reads up to" in note
    assert "install an onnxruntime release that supports" in note and "--opset" in note
    human = run_cli("inspect", model)
    assert human.code == 0 and "sequence<float32[batch, 3]>" in human.stdout and "cannot run" in human.stdout
    assert "Traceback" not in human.stderr


def test_inspect_names_the_onnx_release_whose_runtimes_run_the_opset(tmp_path):
    """An opset onnx defines but this onnxruntime does not read: the note names the first onnx release with it."""
    import onnx
    import onnxruntime

    from mdeploy.frameworks import ort_sessions

    newest = ort_sessions._highest(lambda v: ort_sessions.reads_opset("ai.onnx", v), 200)
    if newest >= onnx.defs.onnx_opset_version():
        pytest.skip(f"onnxruntime {onnxruntime.__version__} reads every opset onnx {onnx.__version__} defines")
    first = next(row[0] for row in onnx.helper.VERSION_TABLE if row[2] > newest)
    info = run_cli("inspect", _future_model(tmp_path / "next.onnx", newest + 1), "--json").json["model"]
    assert f"one built on onnx {first} or later" in info["notes"][0] and f"--opset {newest}" in info["notes"][0]


def test_inspect_reads_an_ir_version_newer_than_onnx_itself(tmp_path):
    import onnx

    result = run_cli("inspect", _future_model(tmp_path / "ir.onnx", 30, ir_version=onnx.IR_VERSION + 6), "--json")
    assert result.code == 0, result.stderr
    info = result.json["model"]
    assert info["outputs"] == _FUTURE_OUTPUTS and info["problems"] == []
    assert any(f"newer than onnx {onnx.__version__} knows" in n for n in info["notes"])
    assert any("cannot run" in n for n in info["notes"])


def test_inspect_of_a_file_onnx_cannot_read_stays_exit_2(tmp_path):
    model = _future_model(tmp_path / "cut.onnx", 30)
    model.write_bytes(model.read_bytes()[:-40])
    result = run_cli("inspect", model, "--json")
    assert result.code == 2
    assert "not a valid ONNX model" in assert_clean_error(result, hint=True)


def test_inspect_of_an_ir_newer_than_the_runtime_notes_how_it_will_run(broken_onnx):
    result = run_cli("inspect", broken_onnx["ir14"], "--json")
    assert result.code == 0, result.stderr
    info = result.json["model"]
    assert info["ir_version"] == 14 and info["problems"] == []
    assert len(info["notes"]) == 1 and "runs at IR version" in info["notes"][0]
