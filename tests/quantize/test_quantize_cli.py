"""`mdeploy quantize` end to end through the real entry point, on real models and real data."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from fixtures import digits as digits_fixture


def _ops(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_digits_float_accuracy_is_real(digits):
    assert digits_fixture.torch_accuracy(digits["model"].parent) >= 0.96


def test_static_int8_on_digits_loses_at_most_one_point(static_digits, digits):
    out, result = static_digits
    assert result.code == 0, result.stderr
    report = result.json
    assert report["passed"] and report["mode"] == "static"
    acc = report["accuracy"]
    assert acc["samples"] == 540
    assert abs(acc["reference"] - digits_fixture.torch_accuracy(digits["model"].parent)) < 1e-6
    assert acc["drop"] <= 0.01
    assert report["size"]["ratio"] < 0.35
    output = report["comparisons"][0]["outputs"][0]
    assert output["cosine"] >= 0.99 and output["top1_agreement"] >= 0.98
    details = report["steps"][0]["details"]
    assert details["per_channel"] is True and details["activation_type"] == "uint8" and details["format"] == "qdq"
    assert any(n.startswith("mode: static") for n in report["notes"])
    assert "QuantizeLinear" in _ops(out)


def test_auto_mode_without_calibration_data_is_dynamic_and_says_so(digits, tmp_path, cli):
    result = cli("quantize", digits["model"], "-o", tmp_path / "d.onnx", "--eval-data", digits["eval"], "--json")
    assert result.code == 0, result.stderr
    assert result.json["mode"] == "dynamic"
    assert any("mode: dynamic" in n for n in result.json["notes"])
    assert result.json["accuracy"]["drop"] <= 0.01
    assert "ConvInteger" in _ops(tmp_path / "d.onnx") or "MatMulInteger" in _ops(tmp_path / "d.onnx")


def test_fixed_batch_model_is_calibrated_in_slices_of_its_batch(digits, tmp_path, cli):
    result = cli("quantize", digits["model_b8"], "-o", tmp_path / "b8.onnx", "--calib-data", digits["calib"], "--json")
    assert result.code == 0, result.stderr
    calibration = result.json["steps"][0]["details"]["calibration"]
    assert calibration == {"source": str(digits["calib"]), "batches": 32, "samples": 256}
    assert any("fixed batch of 8" in n for n in result.json["notes"])


def test_weights_behind_transpose_are_folded_and_quantized(graphs, tmp_path, cli):
    result = cli("quantize", graphs["transposed"], "-o", tmp_path / "t.onnx", "--json")
    assert result.code == 0, result.stderr
    ops = _ops(tmp_path / "t.onnx")
    assert "MatMulInteger" in ops and "Transpose" not in ops
    unfolded = cli("quantize", graphs["transposed"], "-o", tmp_path / "u.onnx", "--no-preprocess", "--json")
    assert unfolded.code == 0, unfolded.stderr
    assert "MatMulInteger" not in _ops(tmp_path / "u.onnx")  # what onnxruntime alone does with such weights


def test_static_without_data_is_refused_and_random_calibration_is_warned(graphs, tmp_path, cli):
    refused = cli("quantize", graphs["mlp"], "-o", tmp_path / "r.onnx", "--mode", "static")
    assert refused.code == 2 and "calibration data" in refused.stderr
    assert not (tmp_path / "r.onnx").exists()
    result = cli("quantize", graphs["mlp"], "-o", tmp_path / "r.onnx", "--calib-samples", "32", "--json")
    assert result.code in (0, 1), result.stderr
    assert result.json["mode"] == "static"
    assert any(n.startswith("WARNING: calibrated on 32 RANDOM samples") for n in result.json["notes"])


def test_labels_file_gives_accuracy_before_and_after(digits, tmp_path, cli):
    result = cli(
        "quantize",
        digits["model"],
        "-o",
        tmp_path / "l.onnx",
        "--calib-data",
        digits["calib"],
        "--eval-data",
        digits["eval_images"],
        "--labels",
        digits["eval_labels"],
        "--format",
        "qoperator",
        "--calib-method",
        "percentile",
        "--json",
    )
    assert result.code == 0, result.stderr
    assert result.json["accuracy"]["samples"] == 540 and result.json["accuracy"]["drop"] <= 0.02
    assert "QLinearConv" in _ops(tmp_path / "l.onnx")


def test_exclude_keeps_the_named_node_in_float(digits, tmp_path, cli):
    result = cli(
        "quantize",
        digits["model"],
        "-o",
        tmp_path / "e.onnx",
        "--calib-data",
        digits["calib"],
        "--exclude",
        "/8/Gemm",
        "--exclude-op",
        "MaxPool",
        "--json",
    )
    assert result.code == 0, result.stderr
    model = onnx.load(str(tmp_path / "e.onnx"))
    gemm = next(n for n in model.graph.node if n.name == "/8/Gemm")
    assert gemm.output[0] == "logits"
    floats = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    assert gemm.input[1] in floats  # its weights stay float


def test_max_error_keeps_costly_nodes_in_float_until_the_bar_holds(graphs, tmp_path, cli):
    # random calibration data scaled badly on purpose: the first quantization misses the bar
    result = cli(
        "quantize",
        graphs["mlp"],
        "-o",
        tmp_path / "m.onnx",
        "--calib-samples",
        "8",
        "--eval-data",
        graphs["data"],
        "--max-error",
        "cosine>=0.99995",
        "--json",
    )
    report = result.json
    assert result.code == (0 if report["max_error"]["met"] else 1), result.stderr
    rounds = report["max_error"]["rounds"]
    assert len(rounds) >= 2 and rounds[0]["met"] is False
    kept = report["max_error"]["kept_in_float"]
    assert kept and all(s["cost_rel_l2"] > 0 for s in kept)
    assert report["max_error"]["exclude_args"].startswith("--exclude ")
    assert (tmp_path / "m.onnx").exists()


def test_unreachable_bar_writes_the_best_model_and_exits_1(graphs, tmp_path, cli):
    import onnxruntime as ort

    with np.load(graphs["data"]) as data:
        feed = {k: data[k] for k in data.files}
    # the labels are the float model's own top-1: no model is 50 points more accurate than it
    np.save(tmp_path / "y.npy", ort.InferenceSession(str(graphs["mlp"])).run(None, feed)[0].argmax(-1))
    result = cli("quantize", graphs["mlp"], "-o", tmp_path / "b.onnx", "--calib-data", graphs["data"], "--labels",
                 tmp_path / "y.npy", "--max-error", "accuracy-drop<=-0.5", "--json")
    assert result.code == 1, result.stderr
    assert result.json["max_error"]["met"] is False
    assert [m.split()[0] for m in result.json["max_error"]["missed"]] == ["accuracy-drop"]  # one record shape, as prune's
    assert any("could not be met" in n for n in result.json["notes"])
    assert (tmp_path / "b.onnx").exists()


def test_quantized_output_runs_in_onnxruntime(static_digits, digits):
    import onnxruntime as ort

    out, _ = static_digits
    with np.load(digits["eval"]) as data:
        logits = ort.InferenceSession(str(out)).run(None, {"image": data["image"][:16]})[0]
    assert logits.shape == (16, 10)


def test_torch_transformer_encoder_quantizes_where_onnxruntime_defaults_fail(encoder_dynamo, tmp_path, cli):
    import pytest
    from onnxruntime.quantization import quantize_dynamic

    with pytest.raises(Exception):  # the premise: onnxruntime's quantize_dynamic alone cannot take this export
        quantize_dynamic(str(encoder_dynamo), str(tmp_path / "ort.onnx"))
    result = cli("quantize", encoder_dynamo, "-o", tmp_path / "q.onnx", "--eval-samples", "4", "--json")
    report = result.json
    assert result.code == (0 if report["passed"] else 1), result.stderr
    assert report["mode"] == "dynamic"
    hidden = report["comparisons"][0]["outputs"][1]  # (logits, last_hidden_state), named by the exporter
    assert hidden["cosine"] > 0.98
    ops = _ops(tmp_path / "q.onnx")
    assert "DynamicQuantizeLinear" in ops and ({"MatMulInteger", "DynamicQuantizeMatMul"} & ops)


def test_max_error_repairs_a_transformer_by_keeping_its_head_in_float(encoder_dynamo, tmp_path, cli):
    # The bar sits halfway between what plain INT8 reaches on this CPU and float: a repair is always needed, whatever
    # the CPU's int8 kernels (a VNNI machine reaches a higher cosine than an AVX2 one), and always possible.
    plain = cli("quantize", encoder_dynamo, "-o", tmp_path / "p.onnx", "--eval-samples", "8", "--json")
    cosine = min(o["cosine"] for o in plain.json["comparisons"][0]["outputs"])
    bar = f"cosine>={(cosine + 1) / 2:.8f}"
    result = cli("quantize", encoder_dynamo, "-o", tmp_path / "r.onnx", "--eval-samples", "8", "--max-error", bar, "--json")
    assert result.code == 0, result.stderr
    report = result.json
    assert report["max_error"]["met"] is True and report["max_error"]["kept_in_float"], (bar, report["max_error"])
    assert any("shared Gemm" in n for n in report["notes"])  # onnxruntime's Gemm rewrite would corrupt the model
    assert report["size"]["ratio"] < 0.95  # still an INT8 model, only the costliest nodes kept in float


def test_validate_reports_task_accuracy_from_labels_in_the_data_or_a_labels_file(static_digits, digits, cli):
    out, quantized = static_digits
    for args in (("--data", digits["eval"]), ("--data", digits["eval_images"], "--labels", digits["eval_labels"])):
        result = cli("validate", digits["model"], out, "--precision", "int8", *args, "--json")
        assert result.code == 0, result.stderr
        acc = result.json["accuracy"]
        assert acc["samples"] == quantized.json["accuracy"]["samples"]
        assert acc["reference"] == pytest.approx(quantized.json["accuracy"]["reference"])
        assert acc["candidate"] == pytest.approx(quantized.json["accuracy"]["candidate"])
    plain = cli("validate", digits["model"], out, "--precision", "int8", "--data", digits["eval_images"], "--json")
    assert "accuracy" not in plain.json
    orphan = cli("validate", digits["model"], out, "--labels", digits["eval_labels"])
    assert orphan.code == 2 and "--labels needs" in orphan.stderr
