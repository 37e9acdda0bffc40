"""The step cache's file handling (pipeline/cache.py): artifacts are hard-linked, ONNX external data is copied."""

from __future__ import annotations

import os

import numpy as np

from fixtures import onnx_graphs
from mdeploy.frameworks import onnx_models
from mdeploy.pipeline.cache import link_or_copy


def test_onnx_external_data_is_copied_so_that_onnx_still_loads_the_model(tmp_path):
    """onnx refuses external data with more than one hard link; a linked data file would break the next step that
    loads the model with its weights (what every model past 2 GB and every onnxruntime-genai folder has)."""
    folder = tmp_path / "model"
    folder.mkdir()
    onnx_graphs.mlp(folder / "model.onnx")
    onnx_models.move_weights_to_external_data(folder / "model.onnx")
    (folder / "notes.txt").write_text("kept by a link")
    link_or_copy(folder, tmp_path / "cached")
    cached = tmp_path / "cached"
    assert os.stat(folder / "model.onnx.data").st_nlink == 1  # copied, not linked
    assert os.stat(folder / "notes.txt").st_nlink == 2 and os.stat(folder / "model.onnx").st_nlink == 2
    for where in (folder, cached):
        model = onnx_models.load_proto(where / "model.onnx", with_data=True)
        assert sum(np.prod(t.dims) for t in model.graph.initializer) > 0
    # a single artifact and its companion, as a step's outputs are stored
    link_or_copy(folder / "model.onnx.data", tmp_path / "alone.data")
    assert os.stat(folder / "model.onnx.data").st_nlink == 1
