"""outputs.atomic_output: what it moves into the user's folder gets the modes a new file gets there, whatever the
staging gave it (onnx writes external data 0600; mkdtemp makes private folders): servers run as other users."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mdeploy.frameworks import onnx_models
from mdeploy.outputs import atomic_output, umask


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _model(path: Path) -> None:
    weight = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_external_data_onnx_writes_private_is_moved_in_readable(tmp_path):
    target = tmp_path / "m.onnx"
    with atomic_output(target, force=False) as staged:
        _model(staged)
        onnx_models.move_weights_to_external_data(staged)
        assert _mode(staged.parent / "m.onnx.data") == 0o600  # what onnx does: the reason for the rule
    mask = umask()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]
    assert _mode(target) == 0o666 & ~mask and _mode(tmp_path / "m.onnx.data") == 0o666 & ~mask


def test_a_folder_output_and_its_files_get_the_umask_modes(tmp_path):
    target = tmp_path / "llm"
    with atomic_output(target, force=False) as staged:
        staged.mkdir(mode=0o700)
        (staged / "sub").mkdir(mode=0o700)
        (staged / "sub" / "weights.bin").write_bytes(b"x")
        os.chmod(staged / "sub" / "weights.bin", 0o600)
        (staged / "run.sh").write_text("#!/bin/sh\n")
        os.chmod(staged / "run.sh", 0o700)
    mask = umask()
    assert _mode(target) == 0o777 & ~mask and _mode(target / "sub") == 0o777 & ~mask
    assert _mode(target / "sub" / "weights.bin") == 0o666 & ~mask
    assert _mode(target / "run.sh") == 0o777 & ~mask
