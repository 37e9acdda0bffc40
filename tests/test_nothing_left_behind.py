"""Nothing of mdeploy's stays in the home folder or the temp folder after a verb: onnxruntime's telemetry (a session
database under ~/.cache/Microsoft and a `.ses` file in the temp folder unless ORT_DISABLE_TELEMETRY is set when its
library loads) and torch's compile cache (`$TMPDIR/torchinductor_<user>`, made at torch._dynamo's import and at every
torch.onnx export). mdeploy sets both switches when it is imported (mdeploy/__init__.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from tests.conftest import factory


SWITCHES = ("ORT_DISABLE_TELEMETRY", "TORCHINDUCTOR_CACHE_DIR")


def _run_clean(tmp_path: Path, *args: str) -> tuple[Path, Path]:
    """`mdeploy ARGS` with its own empty HOME and TMPDIR and neither switch set by the caller."""
    home, temp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    env.update(HOME=str(home), TMPDIR=str(temp))
    done = subprocess.run([sys.executable, "-m", "mdeploy", *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return home, temp


def test_a_validate_leaves_nothing_in_home_or_the_temp_folder(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), str(model))
    home, temp = _run_clean(tmp_path, "validate", str(model), str(model), "--quiet")
    assert [str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()] == []
    assert list(temp.iterdir()) == []


def test_a_torch_export_leaves_nothing_in_the_temp_folder(tmp_path):
    out = tmp_path / "cnn.onnx"
    home, temp = _run_clean(tmp_path, "convert", factory("tiny_cnn"), "-o", str(out), "--quiet")
    assert out.is_file()
    assert list(temp.iterdir()) == []
    assert [str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()] == []
