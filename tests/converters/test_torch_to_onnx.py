"""PyTorch -> ONNX from all three ways a user holds a model, validated after export."""

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.checks import assert_clean_error
from tests.conftest import EDGE, factory, run_cli


def _dims(path, which="input"):
    model = onnx.load(str(path), load_external_data=False)
    values = model.graph.input if which == "input" else model.graph.output
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def test_factory_with_example_inputs_converts_and_validates_at_two_batch_sizes(cnn_onnx):
    onnx.checker.check_model(str(cnn_onnx))
    assert _dims(cnn_onnx) == {"image": ["batch", 3, 32, 32]}
    session = ort.InferenceSession(str(cnn_onnx))
    for batch in (1, 5):
        (out,) = session.run(None, {"image": np.zeros((batch, 3, 32, 32), np.float32)})
        assert out.shape == (batch, 10)


def test_convert_report_shows_per_output_metrics_for_each_size(cnn):
    report = cnn.report
    assert report["passed"] is True
    labels = [c["label"] for c in report["comparisons"]]
    assert labels == ["example inputs", "batch=4"]
    metrics = report["comparisons"][0]["outputs"][0]
    for key in ("max_abs_error", "mean_abs_error", "max_rel_error", "cosine", "passed"):
        assert key in metrics
    assert metrics["cosine"] > 0.99999
    assert report["environment"]["versions"]["torch"].startswith("2.13")


def test_exported_program_keeps_dynamic_batch_and_sequence(encoder_onnx):
    dims = _dims(encoder_onnx)
    assert isinstance(dims["input_ids"][0], str) and isinstance(dims["input_ids"][1], str)
    assert dims["input_ids"] == dims["attention_mask"]
    assert set(_dims(encoder_onnx, "output")) == {"logits", "last_hidden_state"}
    model = onnx.load(str(encoder_onnx))
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.INT64] * 2


def test_exported_program_is_validated_at_a_second_batch_and_sequence_length(encoder):
    second = encoder.report["comparisons"][1]
    assert "batch=3" in second["label"] and second["passed"]


def test_torchscript_archive_with_input_and_dynamic_batch(artifacts, tmp_path):
    out = tmp_path / "ts.onnx"
    result = run_cli("convert", artifacts / "tiny_cnn.pt", "-o", out, "--input", "image:1x3x32x32", "--dynamic", "image:0", "--json")
    assert result.code == 0, result.stderr
    assert result.json["steps"][0]["details"]["exporter"] == "torchscript"
    assert _dims(out)["image"][0] == "batch"
    assert [c["label"] for c in result.json["comparisons"]] == ["example inputs", "batch=4"]


def test_torchscript_archive_without_input_asks_for_it(artifacts, tmp_path):
    result = run_cli("convert", artifacts / "tiny_cnn.pt", "-o", tmp_path / "x.onnx")
    assert result.code == 2
    assert "--input" in result.stderr and "image" in result.stderr
    assert not (tmp_path / "x.onnx").exists()


class _RunsCode:
    """What a malicious checkpoint holds: unpickling it (torch.load without weights_only) calls os.makedirs(marker)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_factory_with_weights_loads_state_dict_safely(tmp_path):
    """Safely: the state dict reaches the model (the ONNX computes what the torch model with those weights computes,
    not the factory's own initial weights), the weights file is left as it was, and a checkpoint that would run code
    when unpickled is refused before that code runs (torch.load(weights_only=True))."""
    import torch

    from fixtures.models import tiny_cnn

    model = tiny_cnn.build()
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(-1.5)
    weights = tmp_path / "other.pt"
    torch.save(model.state_dict(), weights)
    before = weights.read_bytes()
    out = tmp_path / "w.onnx"
    result = run_cli("convert", factory("tiny_cnn"), "--weights", weights, "-o", out, "--json")
    assert result.code == 0, result.stderr
    assert result.json["passed"] is True and weights.read_bytes() == before
    image = tiny_cnn.example_inputs()["image"]
    (got,) = ort.InferenceSession(str(out)).run(None, {"image": image.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model(image).numpy(), rtol=1e-4, atol=1e-5)
        assert not np.allclose(got, tiny_cnn.build()(image).numpy(), atol=1e-3)  # not the factory's weights

    evil, marker = tmp_path / "evil.pt", tmp_path / "code-ran"
    torch.save({"stem.0.weight": _RunsCode(marker)}, evil)
    refused = run_cli("convert", factory("tiny_cnn"), "--weights", evil, "-o", tmp_path / "e.onnx")
    assert_clean_error(refused, "safely", out=tmp_path / "e.onnx")
    assert not marker.exists(), "loading the weights ran code from the checkpoint"


def test_decoder_with_int64_tokens_and_dynamic_sequence(tmp_path):
    out = tmp_path / "dec.onnx"
    result = run_cli(
        "convert", factory("text_decoder"), "-o", out, "--input", "input_ids:2x16:int64",
        "--dynamic", "input_ids:0", "--dynamic", "input_ids:1:sequence", "--json",
    )
    assert result.code == 0, result.stderr
    assert _dims(out)["input_ids"] == ["batch", "sequence"]
    labels = [c["label"] for c in result.json["comparisons"]]
    assert labels == ["example inputs", "batch=4, sequence=8"]


def test_tuple_outputs_get_stable_names_and_two_inputs_work(tmp_path):
    out = tmp_path / "mio.onnx"
    result = run_cli("convert", factory("multi_io"), "-o", out, "--dynamic", "image:0", "--dynamic", "features:0", "--json")
    assert result.code == 0, result.stderr
    assert list(_dims(out, "output")) == ["output_0", "output_1", "output_2"]
    assert list(_dims(out)) == ["image", "features"]
    assert result.json["comparisons"][1]["label"] == "batch=4"


def test_torchscript_exporter_can_be_chosen(tmp_path):
    out = tmp_path / "ts.onnx"
    result = run_cli("convert", factory("multi_io"), "-o", out, "--exporter", "torchscript", "--json")
    assert result.code == 0, result.stderr
    assert result.json["steps"][0]["details"]["exporter"] == "torchscript"


def test_torchscript_exporter_writes_transformer_layers_without_their_fused_kernels(tmp_path):
    """Under no_grad nn.TransformerEncoderLayer takes aten::_transformer_encoder_layer_fwd, which the TorchScript
    exporter cannot write: it was exit 2 for every nn.TransformerEncoder model (the BERT-base benchmark's too)."""
    import torch

    from mdeploy.verbs import convert

    report = convert.run(convert.Options(src=factory("text_encoder"), output=str(tmp_path / "ts.onnx"), exporter="torchscript"))
    assert report.passed and report.steps[0].details["exporter"] == "torchscript"
    assert torch.backends.mha.get_fastpath_enabled()  # torch's switch is back to what it was


def test_export_that_froze_a_dynamic_axis_fails_validation(tmp_path):
    """The TorchScript exporter bakes `int(x.shape[0])` in as a constant: the batch looks dynamic but is not."""
    out = tmp_path / "frozen.onnx"
    result = run_cli("convert", f"{EDGE}:frozen_batch", "-o", out, "--input", "x:2x8", "--dynamic", "x:0", "--exporter", "torchscript", "--json")
    assert result.code == 1, result.stderr
    first, second = result.json["comparisons"]
    assert first["passed"] and not second["passed"]
    assert second["label"] == "batch=4"


def test_exporter_failure_names_the_operator(tmp_path):
    out = tmp_path / "u.onnx"
    result = run_cli("convert", f"{EDGE}:unsupported", "-o", out, "--input", "x:2x4x4")
    assert result.code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "eigh" in lines[0]
    assert len(lines) == 2 and lines[1].startswith("hint: ")
    assert not out.exists()


def test_external_data_is_written_for_large_weights(tmp_path):
    out = tmp_path / "big.onnx"
    result = run_cli("convert", factory("tiny_cnn"), "-o", out, "--json", env={"MDEPLOY_EXTERNAL_DATA_BYTES": "0"})
    assert result.code == 0, result.stderr
    assert (tmp_path / "big.onnx.data").is_file()
    assert result.json["passed"]
    onnx.checker.check_model(str(out))


@pytest.mark.parametrize("opset", [17, 18])
def test_opset_is_honoured(tmp_path, opset):
    out = tmp_path / "o.onnx"
    result = run_cli("convert", factory("multi_io"), "-o", out, "--opset", str(opset), "--exporter", "torchscript", "--no-validate")
    assert result.code == 0, result.stderr
    model = onnx.load(str(out))
    assert {o.domain: o.version for o in model.opset_import}[""] == opset
