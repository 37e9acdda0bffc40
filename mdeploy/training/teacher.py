"""The teacher's side of training: run it once per sample and keep what it computed.

A teacher is anything with `infer(feed) -> {name: array}`: a Runner of any format mdeploy can run (ONNX,
TorchScript, SavedModel, TFLite, ...), or an in-process torch module wrapped in `TorchTeacher` (prune's recovery:
the unpruned model teaches the pruned one). Its outputs on the data are computed once, before training, and kept in
memory, or in an np.memmap in `workdir` when they are larger than `IN_MEMORY_BYTES`: they are the held-out targets,
and the training targets unless training mixes its inputs (training/augment.py), where `query` runs the teacher on
each mixed batch in the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mdeploy.errors import InputError
from mdeploy.progress import Advance

IN_MEMORY_BYTES = 256 << 20


class Teacher(Protocol):
    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class TorchTeacher:
    """An in-process torch nn.Module as a teacher: inputs by position in `input_names`, outputs named as
    torch.onnx names them (`output`, `output_0`, ..., dict keys)."""

    def __init__(self, module: Any, input_names: list[str], device: str = "cpu") -> None:
        self.module = module.eval()
        self.input_names = input_names
        self.device = device

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from mdeploy.frameworks.torch_models import flatten_outputs, to_torch, torch

        tensors = to_torch(feed, self.device)
        with torch().no_grad():
            out = self.module(*[tensors[n] for n in self.input_names])
        return {name: value.detach().cpu().numpy() for name, value in flatten_outputs(out)}


def query(teacher: Teacher, output: str) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """The teacher's `output` on one batch, for training's function matching (training/augment.py: the teacher run
    on each mixed batch in the loop)."""
    return lambda feed: np.asarray(teacher.infer(feed)[output], dtype=np.float32)


def teacher_outputs(
    teacher: Teacher,
    inputs: dict[str, np.ndarray],
    output: str,
    batch_size: int = 256,
    workdir: Path | None = None,
    advance: Advance | None = None,
    fixed_batch: int | None = None,
    what: str = "the teacher",
) -> np.ndarray:
    """The teacher's `output` for every sample of `inputs` (arrays keyed by the teacher's input names), as float32.

    `fixed_batch`: the teacher only takes batches of exactly this size (the data's length must be a multiple).
    Large results go to an np.memmap in `workdir` (deleted with it). `what` names the teacher in errors (prune's is
    "the unpruned model"). The inputs are checked finite by the caller (training/checks.py, naming the flag), so a
    NaN/Inf here is the teacher's own."""
    n = int(next(iter(inputs.values())).shape[0])
    step = fixed_batch or batch_size
    result: np.ndarray | None = None
    for i in range(0, n, step):
        feed = {k: np.ascontiguousarray(v[i : i + step]) for k, v in inputs.items()}
        out = teacher.infer(feed)
        if output not in out:
            raise InputError(f"the teacher has no output '{output}'", hint="its outputs are: " + ", ".join(out))
        value = np.asarray(out[output], dtype=np.float32)
        if result is None:
            shape = (n, *value.shape[1:])
            nbytes = int(np.prod(shape)) * 4
            if workdir is not None and nbytes > IN_MEMORY_BYTES:
                result = np.lib.format.open_memmap(Path(workdir) / f"teacher_{output.replace('/', '_')}.npy", mode="w+",
                                                   dtype=np.float32, shape=shape)
            else:
                result = np.empty(shape, dtype=np.float32)
        if value.shape[0] != len(next(iter(feed.values()))):
            raise InputError(f"the teacher's output '{output}' has {value.shape[0]} rows for {len(next(iter(feed.values())))} samples",
                             hint="distillation needs an output per sample along axis 0")
        result[i : i + step] = value
        if advance is not None:
            advance()
    if result is None:
        raise InputError("the data set is empty (0 samples)")
    bad = int(np.size(result) - np.isfinite(result).sum())
    if bad:
        raise InputError(f"{what} computes NaN/Inf in '{output}' ({bad} values) on this data",
                         hint=f"{what} overflows on these inputs: check its weights, or scale the inputs as it was trained on")
    return result
