"""`mdeploy inspect --runtime`: the census of any ONNX model, float or int8, from what onnxruntime executes."""

from __future__ import annotations

from tests.checks import assert_clean_error


def test_inspect_runtime_on_a_float_and_an_int8_model(tmp_path, cli):
    from fixtures import census_graphs
    from tests.quantization.conftest import quantize

    model = census_graphs.cnn(tmp_path / "cnn.onnx")
    int8 = quantize(model, tmp_path / "cnn_int8.onnx", census_graphs.calibration(tmp_path / "c.npz", (1, 3, 32, 32)))
    fp = cli("inspect", model, "--runtime", "--json")
    assert fp.code == 0, fp.stderr
    c = fp.json["runtime"]["census"]
    assert c["mode"] == "float" and c["integer_time_share"] == 0 and c["float_nodes"]
    assert fp.json["runtime"]["cpu"]["int8_path"]
    q = cli("inspect", int8, "--runtime", "--json")
    assert q.code == 0, q.stderr
    c = q.json["runtime"]["census"]
    assert c["mode"] == "static" and c["integer_time_share"] > 0 and c["integer_mac_share"] > 0.9
    shown = cli("inspect", int8, "--runtime")
    assert "what onnxruntime runs (static" in shown.stdout and "QGemm" in shown.stdout


def test_inspect_runtime_refuses_a_model_that_is_not_onnx(tmp_path, cli):
    from fixtures import census_graphs

    census_graphs.cnn(tmp_path / "cnn.onnx")
    data = census_graphs.calibration(tmp_path / "c.npz", (1, 3, 32, 32))
    assert_clean_error(cli("inspect", data, "--runtime"), "cannot tell the format", hint=True)
