"""`mdeploy inspect`: what a model takes and returns, and what it is made of."""

from pathlib import Path

import pytest

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


def _one_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), stderr
    assert "::" not in stderr and "Traceback" not in stderr, stderr
    return lines[0]


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
    error = _one_error(result.stderr)
    assert "is not a valid model" in error and "'ghost'" in error
    human = run_cli("inspect", broken_onnx["dangling"])
    assert human.code == 2 and "MatMul" in human.stdout and "invalid (onnx.checker)" in human.stdout


def test_inspect_of_an_opset_no_runtime_knows_exits_2_with_the_runtime_limits(broken_onnx):
    result = run_cli("inspect", broken_onnx["opset999"], "--json")
    assert result.code == 2
    info = result.json["model"]
    assert info["opset"] == {"ai.onnx": 999}
    assert [p["source"] for p in info["problems"]] == ["onnxruntime"]
    error = _one_error(result.stderr)
    assert "ai.onnx opset 999" in error and "reads up to" in error


def test_inspect_of_an_ir_newer_than_the_runtime_notes_how_it_will_run(broken_onnx):
    result = run_cli("inspect", broken_onnx["ir14"], "--json")
    assert result.code == 0, result.stderr
    info = result.json["model"]
    assert info["ir_version"] == 14 and info["problems"] == []
    assert len(info["notes"]) == 1 and "runs at IR version" in info["notes"][0]
