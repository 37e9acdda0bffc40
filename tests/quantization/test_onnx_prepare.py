"""quantization/onnx_prepare.py: a model past protobuf's 2 GB limit is shape-inferred on its graph alone, with the
shapes onnxruntime's quant_pre_process gives with every weight loaded (which costs 3.2x the float weights at the peak
on a 0.7B Llama, benchmarks/large_model.py). The `decoder` fixture (conftest.py) stands in for the large model, with
the threshold set so that it counts as one."""

from __future__ import annotations

from pathlib import Path

from mdeploy.quantization import onnx_prepare


def _shapes(path: Path) -> dict[str, str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {v.name: str(v.type) for v in [*graph.value_info, *graph.output]}


def test_a_large_model_gets_quant_pre_process_shapes_without_its_weights_being_read_or_written_again(decoder, tmp_path,
                                                                                                   monkeypatch):
    import onnx

    (tmp_path / "small").mkdir()
    (tmp_path / "large").mkdir()
    small = onnx_prepare.prepare(decoder["model"], tmp_path / "small")
    monkeypatch.setattr(onnx_prepare, "EXTERNAL_DATA_THRESHOLD", 0)
    monkeypatch.setattr(onnx_prepare, "SMALL_TENSOR_BYTES", 4096)  # the decoder's matrices are 16-64 KB
    large = onnx_prepare.prepare(decoder["model"], tmp_path / "large")
    assert large.large and not small.large
    assert "pre-processing: symbolic and ONNX shape inference" in small.notes
    assert "pre-processing: symbolic and ONNX shape inference" in large.notes
    # the shaped graph reads the weights where constant folding wrote them: no copy of them was saved
    # (quant_pre_process loads them all and writes shaped.onnx.data)
    assert sorted(p.name for p in (tmp_path / "large").glob("*.data")) == ["folded.onnx.data", "named.onnx.data"]
    shaped = onnx.load(str(large.path), load_external_data=False)
    matrices = [t for t in shaped.graph.initializer if len(t.dims) == 2]
    assert matrices and all(
        {e.key: e.value for e in t.external_data}.get("location") == "folded.onnx.data" for t in matrices)
    shapes = _shapes(large.path)
    assert len(shapes) > 50 and shapes == _shapes(small.path)
    assert large.node_names == small.node_names


def test_infer_shapes_in_place_writes_the_shapes_into_the_model_it_is_given(decoder):
    """What onnx_quantize.shapes_in_place hands onnxruntime's quantizer: the shapes of a deep copy saved and reloaded
    (quant_utils.save_and_reload_model_with_shape_infer), written into the model itself."""
    import onnx
    from onnxruntime.quantization.quant_utils import model_has_infer_metadata, save_and_reload_model_with_shape_infer

    model = onnx.load(str(decoder["model"]))
    reloaded = save_and_reload_model_with_shape_infer(model)
    assert not model.graph.value_info and reloaded.graph.value_info
    assert onnx_prepare.infer_shapes_in_place(model) is model
    assert list(model.graph.value_info) == list(reloaded.graph.value_info)
    assert list(model.graph.output) == list(reloaded.graph.output) and model_has_infer_metadata(model)
    assert {i.name: i.raw_data for i in model.graph.initializer} == {i.name: i.raw_data for i in reloaded.graph.initializer}


def test_a_failed_symbolic_shape_inference_leaves_nothing_in_the_current_folder(tmp_path, monkeypatch):
    """onnxruntime's symbolic shape inference saves `sym_shape_infer_temp.onnx` into the cwd when it cannot infer
    every shape (here: an op of a domain it does not know); mdeploy runs it in its own temporary folder."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
         helper.make_node("Foo", ["y"], ["z"], name="foo", domain="custom.test")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom.test", 1)],
                              ir_version=9)
    src = tmp_path / "src" / "m.onnx"
    src.parent.mkdir()
    onnx.save(model, str(src))
    cwd, work = tmp_path / "cwd", tmp_path / "work"
    cwd.mkdir()
    work.mkdir()
    monkeypatch.chdir(cwd)
    prepared = onnx_prepare.prepare(Path("..") / "src" / "m.onnx", work)  # a relative source still resolves
    assert any("symbolic shape inference failed" in n for n in prepared.notes)  # the case that wrote the file
    assert list(cwd.iterdir()) == [] and Path.cwd() == cwd
    assert sorted(p.name for p in src.parent.iterdir()) == ["m.onnx"]
