"""A Triton model repository loaded the way Triton's onnxruntime backend loads it: the check that `package --target
triton` (and kserve's Triton runtime) runs on what it wrote, where Triton itself cannot be installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mdeploy.core import ModelRef, TensorSpec
from mdeploy.deps import require
from mdeploy.errors import InputError
from mdeploy.packaging.base import Feed
from mdeploy.packaging.v2_protocol import NUMPY


def _runner_base() -> type:
    from mdeploy.runners.onnx_runner import OnnxRuntimeRunner

    return OnnxRuntimeRunner


class TritonRepositoryRunner(_runner_base()):  # type: ignore[misc]
    """The repository's own model.onnx on onnxruntime (Triton's onnxruntime backend), fed as Triton feeds it.

    The inputs are those config.pbtxt declares (max_batch_size and dims, as Triton checks a request against them): a
    request Triton would refuse is refused here, and a model file missing a piece (external data) fails to load.
    """

    def __init__(self, ref: ModelRef, root: Path) -> None:
        self._root = root
        super().__init__(ref)

    def _load(self) -> None:
        super()._load()
        pb = require("tritonclient.grpc.model_config_pb2", extra="serving")
        text_format = require("google.protobuf.text_format", extra="serving")
        self.config = text_format.Parse((self._root / "config.pbtxt").read_text(), pb.ModelConfig())
        batching = self.config.max_batch_size > 0
        self._specs = [
            TensorSpec(t.name, (("batch",) if batching else ()) + tuple(d if d > 0 else f"{t.name}:{i}" for i, d in
                                                                         enumerate(t.dims)),
                       NUMPY[pb.DataType.Name(t.data_type)])
            for t in self.config.input
        ]

    def _infer(self, feed: Feed) -> dict[str, np.ndarray]:
        batch = self.config.max_batch_size
        if batch > 0:
            for name, array in feed.items():
                if array.shape[0] > batch:
                    raise InputError(f"input '{name}' has a batch of {array.shape[0]}: Triton refuses more than "
                                     f"max_batch_size {batch}")
        return super()._infer(feed)
