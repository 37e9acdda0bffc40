"""`mdeploy inspect`: what a model takes and returns, and what it is made of."""

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
