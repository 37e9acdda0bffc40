"""TensorRT fixtures, built once per session: the tiny MLP (x[batch, 16] -> logits[batch, 10]), its Q/DQ forms as
`mdeploy quantize` really writes them (--target tensorrt: symmetric int8; --target cpu: uint8 activations), a model
with two inputs and a fixed one, a model whose weight overflows float16 (kept float32 by the fp16 conversion) and one
whose float16 form cancels its result (refused)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def cuda_reason() -> str | None:
    """Why the gpu tests cannot run here, or None."""
    if not HAS_TENSORRT:
        return "the tensorrt package is not installed (it needs an NVIDIA GPU and CUDA)"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    return None


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from fixtures import onnx_graphs

    out = tmp_path_factory.mktemp("trt_models")
    paths = {"mlp": onnx_graphs.mlp(out / "mlp.onnx")}
    # two inputs: tokens[batch, seq] int64 and a fixed bias[4]; out = gather(table, tokens) summed over seq + bias
    table = numpy_helper.from_array(np.arange(40, dtype=np.float32).reshape(10, 4), "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "tokens"], ["emb"], name="gather"),
         helper.make_node("ReduceSum", ["emb", "axes"], ["pooled"], name="pool", keepdims=0),
         helper.make_node("Add", ["pooled", "bias"], ["out"], name="add")],
        "two_inputs",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("bias", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4])],
        [table, numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )
    two = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    two.ir_version = 8
    onnx.checker.check_model(two)
    onnx.save(two, str(out / "two_inputs.onnx"))
    paths["two_inputs"] = out / "two_inputs.onnx"
    # x * 1e5: 1e5 is past float16's largest number (65504): in float16 the weight would be clipped and the model
    # compute x * 65504, so the fp16 conversion keeps this node float32
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["y"], name="scale")],
        "overflow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
        [numpy_helper.from_array(np.float32(1e5), "k")],
    )
    over = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    over.ir_version = 8
    onnx.save(over, str(out / "overflow.onnx"))
    paths["overflow"] = out / "overflow.onnx"
    # x * 1.0001 - x: every value in float16's range, but 1.0001 is 1.0 in float16, so the float16 model computes 0
    # where the float32 one computes x / 10000 (no node overflows: nothing for the float32 fallback to keep)
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "a"], ["ax"], name="scale"), helper.make_node("Sub", ["ax", "x"], ["y"], name="sub")],
        "cancel",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
        [numpy_helper.from_array(np.float32(1.0001), "a")],
    )
    cancel = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    cancel.ir_version = 8
    onnx.save(cancel, str(out / "cancel.onnx"))
    paths["cancel"] = out / "cancel.onnx"
    for target in ("tensorrt", "cpu"):
        q = out / f"mlp.qdq_{target}.onnx"
        result = run_cli("quantize", paths["mlp"], "-o", q, "--mode", "static", "--calib-samples", "16", "--target", target)
        assert result.code == 0, result.stderr
        paths[f"qdq_{target}"] = q
    return paths
