"""`mdeploy prune` on real models through the real CLI: a residual CNN, transformer encoders (fused attention, and
attention with separate q/k/v that loses whole heads), the trained digits CNN; .onnx and .pt2 outputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.checks import assert_clean_error
from tests.conftest import factory

CNN = factory("tiny_cnn")
HEADS = factory("head_encoder")


def _history(weights) -> list:
    """The pruning history inside a --save-weights file (what FACTORY --weights replays)."""
    import torch

    from mdeploy.frameworks import pruning_record

    return pruning_record.decode(torch.load(weights, weights_only=True)[pruning_record.KEY])["history"]


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


def test_unstructured_masks_zero_weights_but_keep_macs_and_say_so(cli, tmp_path):
    out = tmp_path / "masked.onnx"
    result = cli("prune", CNN, "-o", out, "--method", "unstructured", "--sparsity", "0.8", "--global", "--json")
    assert result.code == 0, result.stderr
    report = result.json
    assert report["macs"]["ratio"] == 1.0
    assert any("dense runtime" in n for n in report["notes"])
    assert report["latency"]["before_ms"] > 0 and report["latency"]["after_ms"] > 0  # measured anyway, to show it
    convs = [numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer if len(t.dims) == 4]
    assert 0.75 <= float((np.concatenate([w.ravel() for w in convs]) == 0).mean()) <= 0.85


def test_two_four_masks_keep_two_of_every_four_weights():
    """2:4 (the same verb path as unstructured, so in process): every 4 consecutive input weights keep at most 2."""
    import torch

    from fixtures.models import tiny_cnn
    from mdeploy.pruning import masks

    model = tiny_cnn.build()
    layers, dense = masks.two_four(model, {"head"})
    masks.make_permanent(model)
    assert "blocks.0.conv1" in layers and "head" not in layers
    for name, m in model.named_modules():
        if name in layers:
            rows = m.weight.detach().reshape(m.weight.shape[0], -1)
            assert ((rows.reshape(rows.shape[0], -1, 4) == 0).sum(-1) >= 2).all(), name
            assert not hasattr(m, "weight_mask") and isinstance(m.weight, torch.nn.Parameter)  # permanent


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
    assert "torch.export.load" in assert_clean_error(refused, "FILE.py:FACTORY --weights state.pt", hint=True,
                                                     out=tmp_path / "again.onnx")
    assert out.stat().st_size == size


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


def test_taylor_importance_changes_which_channels_go(digits_torch):
    """--importance taylor ranks by gradient x weight on --data (the verb's loss on its first samples): other channels go
    than by magnitude, to the same MACs (in process: the ranking is the point, not the export)."""
    import torch

    from fixtures.models import digits_cnn
    from mdeploy.pruning import structured
    from mdeploy.pruning.methods import taylor_loss

    train = np.load(digits_torch["subset"])
    data = ({"image": train["image"]}, np.load(digits_torch["subset_labels"]))
    state = torch.load(digits_torch["weights"], weights_only=True)
    runs = {}
    for importance in ("magnitude", "taylor"):
        model = digits_cnn.build()
        model.load_state_dict(state)
        loss = taylor_loss(data) if importance == "taylor" else None
        settings = structured.Settings(target_macs=0.4, importance=importance)
        outcome = structured.prune(model, digits_cnn.example_inputs(), settings, loss)
        assert outcome.macs_after <= 0.4 * outcome.macs_before
        assert all(p.grad is None for p in model.parameters())  # the gradients taken for ranking are dropped
        runs[importance] = [[name, out, list(idxs)] for name, out, idxs in outcome.history]
    assert [step[0] for step in runs["taylor"]][:1] == [step[0] for step in runs["magnitude"]][:1]  # the same layers ...
    assert runs["taylor"] != runs["magnitude"]  # ... lose other channels
