"""`mdeploy prune` on real models through the real CLI: a residual CNN, a transformer encoder, the trained digits CNN."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.conftest import factory

CNN = factory("tiny_cnn")


@pytest.fixture(scope="session")
def pruned_cnn(tmp_path_factory, cli):
    out = tmp_path_factory.mktemp("pruned")
    result = cli("prune", CNN, "-o", out / "cnn.onnx", "--sparsity", "0.5", "--save-weights", out / "cnn.pt", "--json")
    assert result.code == 0, result.stderr
    return out, result.json


def test_structured_removes_channels_and_exports_a_validated_smaller_model(pruned_cnn):
    out, report = pruned_cnn
    assert report["passed"] is True
    assert report["macs"]["ratio"] <= 0.30
    assert report["parameters"]["after"] < 0.35 * report["parameters"]["before"]
    changed = {c["layer"]: c for c in report["layers_changed"]}
    assert changed["blocks.0.conv1"]["after"] == [8, 8]
    assert changed["head"]["after"] == [8, 10]  # the head keeps its 10 classes: only its inputs shrink
    export = [c for c in report["comparisons"] if "pruned ONNX vs pruned torch" in c["label"]]
    assert export and all(c["passed"] for c in export)
    assert report["size"]["after_bytes"] < report["size"]["before_bytes"]
    assert report["latency"]["before_ms"] > 0 and report["latency"]["after_ms"] > 0
    assert any("no --data" in n for n in report["notes"])  # accuracy unproven without data: said
    conv_weights = [numpy_helper.to_array(t) for t in onnx.load(out / "cnn.onnx").graph.initializer if t.dims and len(t.dims) == 4]
    assert max(w.shape[0] for w in conv_weights) == 8  # really 8 channels in the deployed graph


def test_saved_weights_rebuild_the_pruned_module_in_other_verbs(pruned_cnn, cli, tmp_path):
    out, _ = pruned_cnn
    again = tmp_path / "again.onnx"
    result = cli("convert", CNN, "--weights", out / "cnn.pt", "-o", again, "--dynamic", "image:0", "--json")
    assert result.code == 0, result.stderr
    checked = cli("validate", out / "cnn.onnx", again, "--json")
    assert checked.code == 0, checked.stderr


@pytest.mark.parametrize("method,args", [("unstructured", ["--sparsity", "0.8", "--global"]), ("2:4", [])])
def test_masks_zero_weights_but_keep_macs_and_say_so(cli, tmp_path, method, args):
    out = tmp_path / "masked.onnx"
    result = cli("prune", CNN, "-o", out, "--method", method, *args, "--json")
    assert result.code == 0, result.stderr
    report = result.json
    assert report["macs"]["ratio"] == 1.0
    assert any("dense runtime" in n for n in report["notes"])
    assert "latency" in report
    convs = {t.name: numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer if len(t.dims) == 4}
    weights = np.concatenate([w.ravel() for w in convs.values()])
    if method == "unstructured":
        assert 0.75 <= float((weights == 0).mean()) <= 0.85
    else:
        for w in convs.values():
            rows = w.reshape(w.shape[0], -1)
            if rows.shape[1] % 4 == 0:
                assert ((rows.reshape(rows.shape[0], -1, 4) == 0).sum(-1) >= 2).all()


def test_transformer_encoder_loses_feed_forward_neurons_not_its_outputs(cli, tmp_path):
    out = tmp_path / "enc.onnx"
    result = cli("prune", factory("text_encoder"), "-o", out, "--sparsity", "0.5", "--no-benchmark", "--json")
    assert result.code == 0, result.stderr
    report = result.json
    changed = {c["layer"]: c for c in report["layers_changed"]}
    assert changed["encoder.layers.0.linear1"]["after"] == [32, 32]
    assert "classifier" not in changed
    outputs = {o["name"]: o["shape"] for o in report["proof"]["comparison"]["outputs"]}
    assert outputs["logits"][-1] == 3 and outputs["last_hidden_state"][-1] == 32
    assert report["macs"]["ratio"] < 1.0
    assert all(c["passed"] for c in report["comparisons"])


def test_digits_target_macs_with_distillation_keeps_accuracy(cli, tmp_path, digits_torch):
    from fixtures import prune_data

    out = tmp_path / "digits.onnx"
    result = cli("prune", prune_data.FACTORY, "--weights", digits_torch["weights"], "-o", out, "--target-macs", "0.4",
                 "--data", digits_torch["train"], "--epochs", "15", "--eval-data", digits_torch["test"],
                 "--max-error", "accuracy-drop<=0.02", "--no-benchmark", "--json")
    assert result.code == 0, result.stderr
    report = result.json
    assert report["macs"]["ratio"] <= 0.4
    assert report["accuracy"]["samples"] == 540
    assert report["accuracy"]["before"] > 0.95
    assert report["accuracy"]["drop"] <= 0.02
    assert any(s["name"].startswith("recover (distillation") for s in report["steps"])


def test_missed_bar_exits_1_and_still_writes(cli, tmp_path, digits_torch):
    from fixtures import prune_data

    out = tmp_path / "digits.onnx"
    result = cli("prune", prune_data.FACTORY, "--weights", digits_torch["weights"], "-o", out, "--sparsity", "0.9",
                 "--eval-data", digits_torch["test"], "--max-error", "accuracy-drop<=0.0001", "--no-benchmark", "--json")
    assert result.code == 1, result.stderr
    assert result.json["max_error"]["met"] is False
    assert out.is_file()
