"""Dynamic INT8 of an encoder whose weights are mostly a token embedding (issue 7, item 5).

The embedding table Gather reads must be quantized, and every weight stored once: the TorchScript exporter
deduplicates the equal layers of a fresh nn.TransformerEncoder, and the quantized model must not hold one
int8 copy per layer (it did: 0.43x of the float size instead of 0.25x on a BERT-size encoder).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def embedding_encoder(tmp_path_factory) -> Path:
    from fixtures.models import embedding_encoder

    path = tmp_path_factory.mktemp("embedding") / "encoder.onnx"
    embedding_encoder.export(str(path))
    return path


@pytest.fixture(scope="session")
def quantized(embedding_encoder, tmp_path_factory, cli):
    out = tmp_path_factory.mktemp("embedding_int8") / "encoder_int8.onnx"
    result = cli("quantize", embedding_encoder, "-o", out, "--mode", "dynamic", "--json")
    return out, result


def _initializers(path: Path) -> list:
    import onnx

    return list(onnx.load(str(path)).graph.initializer)


def _elements(init) -> int:  # noqa: ANN001
    return int(np.prod(init.dims)) if init.dims else 1


def test_the_embedding_table_gather_reads_is_quantized(quantized):
    import onnx

    out, result = quantized
    assert result.code == 0, result.stderr
    model = onnx.load(str(out))
    inits = {i.name: i for i in model.graph.initializer}
    from fixtures.models.embedding_encoder import HIDDEN, VOCAB

    tables = [inits[n.input[0]] for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits]
    table = next(t for t in tables if list(t.dims) == [VOCAB, HIDDEN])
    assert table.data_type in (onnx.TensorProto.UINT8, onnx.TensorProto.INT8)
    assert not [i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and _elements(i) >= VOCAB]


def test_each_weight_is_stored_once_and_the_model_shrinks_to_a_quarter(embedding_encoder, quantized):
    import onnx

    out, result = quantized
    float_weights = sum(_elements(i) for i in _initializers(embedding_encoder) if _elements(i) >= 1024)
    int8_weights = sum(
        _elements(i) for i in _initializers(out) if i.data_type in (onnx.TensorProto.UINT8, onnx.TensorProto.INT8)
    )
    # one byte per float weight of the source: the layers the exporter deduplicated stay one copy
    assert float_weights * 0.95 <= int8_weights <= float_weights * 1.05
    report = result.json
    assert report["size"]["ratio"] <= 0.30, report["size"]


def test_the_proof_still_passes(quantized):
    out, result = quantized
    report = result.json
    assert result.code == 0 and report["passed"] is True, result.stderr
    logits = report["comparisons"][0]["outputs"][0]
    assert logits["cosine"] >= 0.99


def test_equal_weights_share_one_initializer_and_compute_the_same(tmp_path):
    """prepare() itself, on a graph whose two MatMuls read equal (not the same) weights and two Gemms share one."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from mdeploy.quantization import onnx_prepare

    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, (32, 32)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w, "w_a"), (w.copy(), "w_b"), (w.T.copy(), "g"))]
    nodes = [
        helper.make_node("MatMul", ["x", "w_a"], ["h1"], name="mm_a"),
        helper.make_node("MatMul", ["h1", "w_b"], ["h2"], name="mm_b"),
        helper.make_node("Gemm", ["h2", "g"], ["h3"], transB=1, name="gemm_a"),
        helper.make_node("Gemm", ["h3", "g"], ["y"], transB=1, name="gemm_b"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 32])], inits,
    )
    src = tmp_path / "shared.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(src))
    prepared = onnx_prepare.prepare(src, tmp_path)
    model = onnx.load(str(prepared.path))
    matmul_weights = {n.input[1] for n in model.graph.node if n.op_type in ("MatMul", "Gemm")}
    assert len(model.graph.initializer) == 2 and len(matmul_weights) == 2, [i.name for i in model.graph.initializer]
    assert any("share" in n for n in prepared.notes)
    x = {"x": rng.normal(size=(4, 32)).astype(np.float32)}
    expected = ort.InferenceSession(str(src)).run(None, x)[0]
    np.testing.assert_allclose(ort.InferenceSession(str(prepared.path)).run(None, x)[0], expected, rtol=1e-5, atol=1e-6)
    from mdeploy.core import Format, ModelRef
    from mdeploy.quantization.onnx_quantize import OnnxQuantize, OnnxQuantizeOptions

    q = tmp_path / "q.onnx"
    OnnxQuantize().run(ModelRef(src, Format.ONNX), q, OnnxQuantizeOptions(mode="dynamic"))
    got = ort.InferenceSession(str(q)).run(None, x)[0]
    cosine = float((got * expected).sum() / np.sqrt((got * got).sum() * (expected * expected).sum()))
    assert cosine > 0.999  # onnxruntime's in-place Gemm rewrite of a shared weight would wreck this
