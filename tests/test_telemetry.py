"""onnxruntime's telemetry stays off: without ORT_DISABLE_TELEMETRY when its library loads, every session writes a
session database under ~/.cache/Microsoft and a `.ses` file into the temp folder. mdeploy sets the switch when it is
imported (mdeploy/__init__.py), before any of its modules imports onnxruntime."""

from __future__ import annotations

import os
import subprocess
import sys

import onnx
from onnx import TensorProto, helper


def test_a_validate_leaves_nothing_in_home_or_the_temp_folder(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), str(model))
    home, temp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update(HOME=str(home), TMPDIR=str(temp))
    done = subprocess.run([sys.executable, "-m", "mdeploy", "validate", str(model), str(model), "--quiet"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()] == []
    assert list(temp.iterdir()) == []
