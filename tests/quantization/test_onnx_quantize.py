"""quantization/onnx_quantize.py's `shapes_in_place`: onnxruntime's dynamic quantizer quantizes the model it loaded,
not a deep copy of it saved and read back (two copies of the weights held, three at the peak: 4.2x the float weights
on a 0.7B Llama, benchmarks/large_model.py), and writes the same model. On the `decoder` fixture (conftest.py)."""

from __future__ import annotations

from pathlib import Path

from mdeploy.quantization import onnx_prepare
from mdeploy.quantization.onnx_quantize import shapes_in_place


def _dynamic_quantizer(model):
    from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer
    from onnxruntime.quantization.quant_utils import QuantizationMode
    from onnxruntime.quantization.quantize import QuantType
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    return ONNXQuantizer(model, False, False, QuantizationMode.IntegerOps, False, QuantType.QInt8, QuantType.QUInt8,
                         None, None, None, list(IntegerOpsRegistry), {"MatMulConstBOnly": True})


def _tensors(graph) -> dict:
    from onnx import numpy_helper

    return {i.name: (i.data_type, list(i.dims), numpy_helper.to_array(i).tobytes()) for i in graph.initializer}


def test_the_dynamic_quantizer_holds_the_model_it_was_given_with_the_shapes_of_its_own_reload(decoder, tmp_path):
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    prepared = onnx_prepare.prepare(decoder["model"], tmp_path)
    model = load_model_with_shape_infer(prepared.path)
    with shapes_in_place():
        quantizer = _dynamic_quantizer(model)
    assert quantizer.model.model is model  # no copy
    library = _dynamic_quantizer(load_model_with_shape_infer(prepared.path))  # onnxruntime's own save and reload
    assert library.model.model is not model
    assert quantizer.value_infos == library.value_infos and len(library.value_infos) > 50


def test_quantize_dynamic_writes_the_same_model_with_shapes_in_place(decoder, tmp_path):
    import onnx
    from onnxruntime.quantization import quantize_dynamic

    prepared = onnx_prepare.prepare(decoder["model"], tmp_path)
    written: dict[str, Path] = {}
    for name in ("library", "in_place"):
        written[name] = tmp_path / f"{name}.onnx"
        if name == "in_place":
            with shapes_in_place():
                quantize_dynamic(str(prepared.path), str(written[name]), extra_options={"MatMulConstBOnly": True})
        else:
            quantize_dynamic(str(prepared.path), str(written[name]), extra_options={"MatMulConstBOnly": True})
    a, b = (onnx.load(str(written[n])).graph for n in ("library", "in_place"))
    assert sum(n.op_type == "DynamicQuantizeLinear" for n in a.node) > 0
    assert list(a.node) == list(b.node) and list(a.value_info) == list(b.value_info) and list(a.output) == list(b.output)
    # the same tensors (the library's copy went through an external data file: its initializers say DEFAULT location)
    assert _tensors(a) == _tensors(b)
    # and the library's function is back in place afterwards
    from onnxruntime.quantization import onnx_quantizer, quant_utils

    assert onnx_quantizer.save_and_reload_model_with_shape_infer is quant_utils.save_and_reload_model_with_shape_infer
