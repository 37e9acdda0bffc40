"""quantization/weight_only.py (`mdeploy quantize --weights int4|int8`) on a real tiny transformer: the GPT-like
decoder of fixtures/models/text_decoder.py exported by torch (the `decoder` fixture of conftest.py: embedding table,
attention, MLP and LM head as MatMul / Gemm, attention scores as activation x activation MatMuls), and on the
hand-built MLP for the accuracy bar."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mdeploy.core import ModelRef
from mdeploy.quantization.weight_only import OnnxWeightOnly, WeightOnlyOptions
from tests.checks import assert_clean_error

FAST = ("--no-speed",)  # the speed check times both models: not what these tests are about


def _ops(path: Path) -> dict[str, int]:
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def test_int4_replaces_every_weight_matmul_and_the_embedding_proven_on_data(cli, decoder, tmp_path):
    out = tmp_path / "decoder.int4.onnx"
    result = cli("quantize", decoder["model"], "-o", out, "--weights", "int4", "--eval-data", decoder["data"],
                 "--no-classifier", "--json", *FAST)
    assert result.code == 0, result.stderr
    report = result.json
    assert report["passed"] and report["mode"] == "weight-only"
    ops = _ops(out)
    # 2 layers x (attention in- and out-projection, 2 MLP) + LM head; 1 embedding table. The exporter wrote some of
    # the Linears as Gemm, which the quantizer does not take: they were rewritten as MatMul first
    assert ops.get("MatMulNBits") == 9 and ops.get("GatherBlockQuantized") == 1 and "Gemm" not in ops
    details = report["steps"][0]["details"]
    assert details["bits"] == 4 and details["block_size"] == 32 and details["method"] == "rtn"
    assert details["quantized"]["Gather"] == ["/embed/Gather"] and len(details["quantized"]["MatMul"]) == 9
    assert details["gemm_as_matmul"] >= _ops(decoder["model"])["Gemm"] > 0  # (+ MatMul + Add fused by the preparation)
    # the 4 MatMuls left float are the attention products, whose "weight" is an activation
    assert len(details["left_float"]) == 4 and ops.get("MatMul") == 4
    assert {item["reason"].split(" (")[0] for item in details["left_float"]} == {"its weight is computed at run time"}
    assert report["size"]["ratio"] < 0.35  # tiny model: graph overhead and per-block scales weigh more here
    comparison = report["comparisons"][0]
    assert comparison["passed"] and str(decoder["data"]) in comparison["label"]
    assert comparison["outputs"][0]["cosine"] >= 0.99
    runtime = report["runtime"]  # the model is named for what it is (no int8 bound: its kernels are MatMulNBits)
    assert runtime["kind"] == "int4 weight-only"
    assert runtime.get("speed") is None or (runtime["speed"]["kind"] == "int4 weight-only"
                                            and runtime["speed"]["bound"] is None)
    # the same output again: refused without --force, nothing touched
    before = out.read_bytes()
    again = cli("quantize", decoder["model"], "-o", out, "--weights", "int4")
    assert_clean_error(again, "output exists")
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["decoder.int4.onnx"]


def test_a_block_size_matmulnbits_does_not_take_is_refused_before_any_work(cli, decoder, tmp_path):
    out = tmp_path / "bad.onnx"
    result = cli("quantize", decoder["model"], "-o", out, "--weights", "int4", "--block-size", "48")
    assert_clean_error(result, "--block-size 48", hint=True, out=out, folder=tmp_path)
    # the weight-only options without --weights: said as such, with the flag to add
    result = cli("quantize", decoder["model"], "-o", out, "--block-size", "64", "--asymmetric")
    assert "--block-size, --asymmetric only apply to weight-only" in assert_clean_error(
        result, "add --weights int4", hint=True, out=out, folder=tmp_path)


def test_int8_weights_leave_the_embedding_float_and_say_why(decoder, tmp_path):
    out = tmp_path / "decoder.int8w.onnx"
    result = OnnxWeightOnly().run(ModelRef.parse(str(decoder["model"])), out,
                                  WeightOnlyOptions(weights="int8", skip_preprocess=True))
    assert result.details["bits"] == 8 and _ops(out).get("MatMulNBits") == 9
    embedding = [item for item in result.details["left_float"] if item["op_type"] == "Gather"]
    assert embedding == [{"node": "/embed/Gather", "op_type": "Gather",
                          "reason": "GatherBlockQuantized (quantized embeddings) takes 4-bit data only"}]


def test_excluded_nodes_stay_float_and_the_report_says_so(decoder, tmp_path):
    out = tmp_path / "decoder.excl.onnx"
    result = OnnxWeightOnly().run(ModelRef.parse(str(decoder["model"])), out,
                                  WeightOnlyOptions(exclude=["/lm_head/MatMul"], skip_preprocess=True))
    assert "/lm_head/MatMul" not in result.details["quantized"]["MatMul"]
    assert {"node": "/lm_head/MatMul", "op_type": "MatMul", "reason": "excluded (--exclude)"} in result.details["left_float"]
    assert _ops(out).get("MatMulNBits") == 8


def test_a_bar_the_model_cannot_meet_exits_1_with_the_best_model_written(cli, tmp_path):
    from fixtures import onnx_graphs

    model = onnx_graphs.mlp(tmp_path / "mlp.onnx")
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "data.npz", x=rng.standard_normal((32, 16)).astype(np.float32),
             labels=rng.integers(0, 10, 32))  # random labels: even the float model is far below the bar
    out = tmp_path / "mlp.int4.onnx"
    result = cli("quantize", model, "-o", out, "--weights", "int4", "--block-size", "16", "--eval-data",
                 tmp_path / "data.npz", "--max-error", "accuracy>=0.95", "--json", *FAST)
    assert result.code == 1, result.stderr
    report = result.json
    assert not report["passed"] and report["max_error"]["met"] is False
    assert out.exists() and report["max_error"]["rounds"]  # the repair ran and the best model found was written


def test_int4_tables_move_an_older_opset_model_to_opset_21_with_its_nodes_converted(tmp_path):
    """int4 tensors need opset 21; ReduceMean's axes moved from an attribute to an input at 18, so a model at 17 whose
    opset number alone were rewritten would no longer load."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from fixtures import onnx_graphs

    rng = np.random.default_rng(0)
    model = onnx_graphs.small_graph(
        tmp_path / "tables.onnx",
        [helper.make_node("Gather", ["table", "ids"], ["emb"], name="embed"),
         helper.make_node("ReduceMean", ["emb"], ["mean"], name="mean", axes=[-1], keepdims=1),
         helper.make_node("Sub", ["emb", "mean"], ["centred"], name="centre"),
         helper.make_node("MatMul", ["centred", "w"], ["out"], name="proj")],
        [("ids", TensorProto.INT64, [1, 8])], [("out", TensorProto.FLOAT, [1, 8, 16])],
        [numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "table"),
         numpy_helper.from_array(rng.standard_normal((32, 16)).astype(np.float32), "w")])
    out = tmp_path / "tables.int4.onnx"
    result = OnnxWeightOnly().run(ModelRef.parse(str(model)), out, WeightOnlyOptions())
    assert result.details["quantized"] == {"MatMul": ["proj"], "Gather": ["embed"]}
    written = onnx.load(str(out))
    assert next(o.version for o in written.opset_import if o.domain in ("", "ai.onnx")) == 21
    mean = next(n for n in written.graph.node if n.op_type == "ReduceMean")
    assert len(mean.input) == 2 and not [a for a in mean.attribute if a.name == "axes"]  # converted, not relabelled
    ids = {"ids": rng.integers(0, 64, (1, 8)).astype(np.int64)}
    ref = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, ids)[0]
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, ids)[0]
    cos = float((ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got))
    assert cos > 0.98


def test_a_model_past_2_gb_is_planned_and_moved_to_opset_21_on_its_graph_with_its_weights_read_once(decoder, tmp_path,
                                                                                                    monkeypatch):
    """A large model (here the decoder, with the threshold set so that it counts as one: weights in an external file)
    is planned and moved to opset 21 on its graph alone: onnx's version converter copies the whole model it is given
    (5.0x the float weights at the peak on a 0.7B Llama) and cannot take one past 2 GB at all (its embedding table
    then stayed float). The weights are read in once, after; the result is the model the small path writes."""
    import onnx
    from onnx import version_converter

    from mdeploy.quantization import onnx_prepare

    small = tmp_path / "small.onnx"
    OnnxWeightOnly().run(ModelRef.parse(str(decoder["model"])), small, WeightOnlyOptions())
    seen: list[int] = []
    convert = version_converter.convert_version

    def converter(model, target):  # the real converter; the tensors it was handed with their values are recorded
        seen.extend(init.name for init in model.graph.initializer if init.ByteSize() >= 1024)
        return convert(model, target)

    monkeypatch.setattr(version_converter, "convert_version", converter)
    monkeypatch.setattr(onnx_prepare, "EXTERNAL_DATA_THRESHOLD", 0)
    large = tmp_path / "large.onnx"
    result = OnnxWeightOnly().run(ModelRef.parse(str(decoder["model"])), large, WeightOnlyOptions())
    # none of the weights read from the file (16-64 KB each here), only the Gemm weights transposed for MatMul
    assert seen and all("_transposed_for_" in name for name in seen)
    assert result.details["quantized"]["Gather"] == ["/embed/Gather"] and len(result.details["quantized"]["MatMul"]) == 9
    assert (tmp_path / "large.onnx.data").is_file()  # written as a large model is, its weights beside it
    a, b = onnx.load(str(small)), onnx.load(str(large))
    assert [(n.op_type, list(n.input)) for n in a.graph.node] == [(n.op_type, list(n.input)) for n in b.graph.node]
    assert {i.name: i.raw_data for i in a.graph.initializer} == {i.name: i.raw_data for i in b.graph.initializer}
