"""`mdeploy prune` on real models through the real CLI: a residual CNN, transformer encoders (fused attention, and
attention with separate q/k/v that loses whole heads), the trained digits CNN; .onnx and .pt2 outputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.conftest import factory

CNN = factory("tiny_cnn")
HEADS = factory("head_encoder")


def _history(weights) -> list:
    """The pruning history inside a --save-weights file (what FACTORY --weights replays)."""
    import torch

    from mdeploy.pruning import history

    return history.decode(torch.load(weights, weights_only=True)[history.KEY])["history"]


def _state(weights) -> dict:
    import torch

    return torch.load(weights, weights_only=True)["state_dict"]


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


def test_saved_weights_rebuild_the_pruned_module_in_other_verbs(pruned_cnn, cli):
    out, _ = pruned_cnn
    checked = cli("validate", CNN, out / "cnn.onnx", "--weights", out / "cnn.pt", "--samples", "2", "--json")
    assert checked.code == 0, checked.stderr
    assert checked.json["passed"] is True


@pytest.mark.parametrize("method,args", [("unstructured", ["--sparsity", "0.8", "--global"]), ("2:4", ["--no-benchmark"])])
def test_masks_zero_weights_but_keep_macs_and_say_so(cli, tmp_path, method, args):
    out = tmp_path / "masked.onnx"
    result = cli("prune", CNN, "-o", out, "--method", method, *args, "--json")
    assert result.code == 0, result.stderr
    report = result.json
    assert report["macs"]["ratio"] == 1.0
    assert any("dense runtime" in n for n in report["notes"])
    assert ("latency" in report) == (method == "unstructured")
    convs = {t.name: numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer if len(t.dims) == 4}
    weights = np.concatenate([w.ravel() for w in convs.values()])
    if method == "unstructured":
        assert 0.75 <= float((weights == 0).mean()) <= 0.85
    else:
        for w in convs.values():
            rows = w.reshape(w.shape[0], -1)
            if rows.shape[1] % 4 == 0:
                assert ((rows.reshape(rows.shape[0], -1, 4) == 0).sum(-1) >= 2).all()


def test_fused_attention_keeps_its_heads_and_loses_feed_forward_neurons():
    """nn.MultiheadAttention's fused in_proj is not prunable by head: its feed-forward layers shrink, the outputs stay."""
    import torch

    from fixtures.models import text_encoder
    from mdeploy.pruning import structured

    model, examples = text_encoder.build(), text_encoder.example_inputs()
    with torch.no_grad():
        before = model(**examples)
    outcome = structured.prune(model, examples, structured.Settings(sparsity=0.5))
    layer = model.encoder.layers[0]
    assert (layer.linear1.in_features, layer.linear1.out_features) == (32, 32)  # 64 neurons -> 32; the hidden state is an output
    assert layer.self_attn.num_heads == 4 and layer.self_attn.in_proj_weight.shape == (96, 32)  # every head whole
    assert outcome.heads == {} and outcome.macs_after < outcome.macs_before
    with torch.no_grad():
        after = model(**examples)
    assert {k: v.shape for k, v in after.items()} == {k: v.shape for k, v in before.items()}


def test_attention_with_separate_qkv_loses_whole_heads(cli, tmp_path):
    out = tmp_path / "heads.onnx"
    result = cli("prune", HEADS, "-o", out, "--sparsity", "0.25", "--head-sparsity", "0.5", "--save-weights",
                 tmp_path / "heads.pt", "--no-benchmark", "--json")
    assert result.code == 0, result.stderr
    report = result.json
    assert report["heads"] == {f"layers.{i}.attention": {"attr": "num_heads", "before": 4, "after": 2} for i in (0, 1)}
    changed = {c["layer"]: c for c in report["layers_changed"]}
    for proj in ("q_proj", "k_proj", "v_proj"):
        assert changed[f"layers.0.attention.{proj}"]["after"] == [24, 16]  # 2 heads x 8: whole head widths gone
    assert changed["layers.0.attention.o_proj"]["after"] == [16, 24]
    assert changed["classifier"]["after"] == [24, 3]  # the classes stay
    export = [c for c in report["comparisons"] if "pruned ONNX vs pruned torch" in c["label"]]
    assert export and all(c["passed"] for c in export)
    graph = onnx.load(out).graph
    biases = {t.name: list(t.dims) for t in graph.initializer if t.name.endswith("_proj.bias")}
    assert biases["layers.1.attention.q_proj.bias"] == [16] and biases["layers.1.attention.v_proj.bias"] == [16]
    assert biases["layers.1.attention.o_proj.bias"] == [24]
    assert [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim][1:] == [3]
    assert report["proof"]["comparison"]["outputs"][0]["shape"][-1] == 3


def test_batchnorm_recalibration_and_a_validated_pt2(pruned_cnn, cli, tmp_path):
    """--epochs 0 with data recomputes BatchNorm statistics and leaves every weight as pruning left it; the .pt2
    output is torch.export-ed and validated against the pruned module."""
    import torch

    rng = np.random.default_rng(3)
    data = tmp_path / "images.npz"
    np.savez(data, image=rng.normal(0.5, 2.0, (48, 3, 32, 32)).astype(np.float32))
    out = tmp_path / "cnn.pt2"
    result = cli("prune", CNN, "-o", out, "--sparsity", "0.5", "--data", data, "--epochs", "0", "--save-weights",
                 tmp_path / "bn.pt", "--no-benchmark", "--json")
    assert result.code == 0, result.stderr
    report = result.json
    assert any(s["name"] == "recover (BatchNorm statistics recalibrated)" and s["details"]["samples"] == 48
               for s in report["steps"])
    assert not any("no --data" in n for n in report["notes"])
    export = [c for c in report["comparisons"] if "pruned .pt2 vs pruned torch" in c["label"]]
    assert export and all(c["passed"] for c in export)
    assert report["size"] == {"after_bytes": out.stat().st_size, "format": "pt2"}  # --no-benchmark: the original unmeasured
    assert any("not exported" in n for n in report["notes"])
    program = torch.export.load(str(out))
    logits = program.module()(torch.randn(3, 3, 32, 32))  # the batch stays dynamic
    assert logits.shape == (3, 10)

    plain, recalibrated = _state(pruned_cnn[0] / "cnn.pt"), _state(tmp_path / "bn.pt")
    assert plain.keys() == recalibrated.keys()
    for key, value in plain.items():
        if key.endswith(("running_mean", "running_var")):
            assert not torch.allclose(value, recalibrated[key]), key  # recomputed on the data
        elif value.is_floating_point():
            assert torch.equal(value, recalibrated[key]), key  # no weight was trained

    # the .pt2 written is no source for prune: it says what prune reads, writes nothing, leaves the file alone
    size = out.stat().st_size
    refused = cli("prune", out, "-o", tmp_path / "again.onnx")
    assert refused.code == 2 and "Traceback" not in refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "torch.export.load" in lines[0]
    assert lines[1].startswith("hint: ") and "FILE.py:FACTORY --weights state.pt" in lines[1]
    assert not (tmp_path / "again.onnx").exists() and out.stat().st_size == size


def test_round_to_and_input_override(pruned_cnn, cli, tmp_path):
    out = tmp_path / "cnn24.onnx"
    result = cli("prune", CNN, "-o", out, "--sparsity", "0.3", "--round-to", "8", "--input", "image:1x3x24x24",
                 "--no-benchmark", "--json")
    assert result.code == 0, result.stderr
    report = result.json
    convs = {c["layer"]: c for c in report["layers_changed"] if "conv" in c["layer"] or c["layer"] == "stem.0"}
    assert convs and all(c["after"][1] % 8 == 0 and c["after"][1] < c["before"][1] for c in convs.values())  # 16 -> 8, not 11
    dims = onnx.load(out).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims][1:] == [3, 24, 24]  # the model was exported at the --input shape
    assert 0.5 < report["macs"]["before"] / pruned_cnn[1]["macs"]["before"] < 0.6  # (24/32)^2 of the convolutions


def test_missed_bar_exits_1_and_still_writes(digits_unrecovered):
    out, report, _ = digits_unrecovered
    assert report["max_error"]["met"] is False
    assert out.is_file()
    assert report["macs"]["ratio"] <= 0.4
    assert report["accuracy"]["samples"] == 540 and report["accuracy"]["before"] > 0.95


def test_distillation_with_labels_wins_back_the_accuracy(cli, tmp_path, digits_torch, digits_unrecovered):
    from fixtures import prune_data

    _, unrecovered, unrecovered_weights = digits_unrecovered
    out = tmp_path / "digits.onnx"
    result = cli("prune", prune_data.FACTORY, "--weights", digits_torch["weights"], "-o", out, "--target-macs", "0.4",
                 "--data", digits_torch["subset"], "--labels", digits_torch["subset_labels"], "--epochs", "3",
                 "--eval-data", digits_torch["test"], "--max-error", "accuracy-drop<=0.03", "--save-weights",
                 tmp_path / "digits.pt", "--no-benchmark", "--json")
    assert result.code == 0, result.stderr
    report = result.json
    assert any(s["name"] == "recover (distillation from the unpruned model + labels)" for s in report["steps"])
    assert _history(tmp_path / "digits.pt") == _history(unrecovered_weights)  # the same channels went
    assert report["accuracy"]["after"] >= unrecovered["accuracy"]["after"] + 0.05
    assert report["accuracy"]["drop"] <= 0.03


def test_taylor_importance_changes_which_channels_go(cli, tmp_path, digits_torch, digits_unrecovered):
    from fixtures import prune_data

    _, _, magnitude_weights = digits_unrecovered
    result = cli("prune", prune_data.FACTORY, "--weights", digits_torch["weights"], "-o", tmp_path / "taylor.onnx",
                 "--target-macs", "0.4", "--importance", "taylor", "--data", digits_torch["subset"], "--labels",
                 digits_torch["subset_labels"], "--epochs", "0", "--save-weights", tmp_path / "taylor.pt", "--no-benchmark",
                 "--json")
    assert result.code == 0, result.stderr
    report = result.json
    assert any("taylor importance" in n for n in report["notes"])
    assert report["macs"]["ratio"] <= 0.4
    taylor, magnitude = _history(tmp_path / "taylor.pt"), _history(magnitude_weights)
    assert [step[:2] for step in taylor][:1] == [step[:2] for step in magnitude][:1]  # the same layers ...
    assert taylor != magnitude  # ... lose other channels
