"""Getting back the accuracy pruning cost: distillation from the unpruned model (mdeploy.training's loop, the same
as `mdeploy distill`), or, with data but no epochs, BatchNorm statistics recomputed for the pruned network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mdeploy.deps import require
from mdeploy.progress import ProgressFactory, no_progress

BN_BATCH = 64


def has_batchnorm(module: Any) -> bool:
    torch = require("torch", extra="torch")
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())


def recalibrate_batchnorm(module: Any, inputs: dict[str, np.ndarray], input_names: list[str]) -> int:
    """Recompute every BatchNorm's running mean and variance on `inputs` (a cumulative average over all of them);
    the rest of the module stays in eval mode. Returns the number of samples seen."""
    torch = require("torch", extra="torch")
    bns = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    module.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch counts alike
        bn.train()
    n = int(next(iter(inputs.values())).shape[0])
    with torch.no_grad():
        for i in range(0, n, BN_BATCH):
            module(**{k: torch.from_numpy(np.ascontiguousarray(inputs[k][i : i + BN_BATCH])) for k in input_names})
    module.eval()
    return n


def scored_output(outputs: dict[str, np.ndarray]) -> tuple[str, str]:
    """The output to distil on and its kind: the first (batch, classes) float output is class scores (KD loss),
    otherwise the first output is regressed (MSE)."""
    for name, value in outputs.items():
        if value.ndim == 2 and value.dtype.kind == "f" and value.shape[1] > 1:
            return name, "scores"
    return next(iter(outputs)), "regression"


def check_labels_apply(module: Any, inputs: dict[str, np.ndarray], input_names: list[str], flag: str) -> None:
    """Labels train the class-score output: refuse them, before any pruning, for a model that has none (its
    outputs on two samples of the data decide, as they decide what recovery distils on)."""
    from mdeploy.errors import InputError
    from mdeploy.frameworks.torch_models import flatten_outputs

    torch = require("torch", extra="torch")
    with torch.no_grad():
        got = module(**{k: torch.from_numpy(np.ascontiguousarray(inputs[k][:2])) for k in input_names})
    outputs = {name: value.detach().numpy() for name, value in flatten_outputs(got)}
    if scored_output(outputs)[1] != "scores":
        shapes = ", ".join(f"{name} {list(v.shape)}" for name, v in outputs.items())
        raise InputError(f"{flag}: class labels given, but the model has no class-score output to train them on "
                         f"(outputs: {shapes})",
                         hint="recovery then distils the outputs alone: drop the labels (class scores are a float "
                              "[batch, classes] output)")


def distil(student: Any, teacher: Any, inputs: dict[str, np.ndarray], labels: np.ndarray | None, input_names: list[str],
           epochs: int, lr: float | None, seed: int, workdir: Path, progress: ProgressFactory = no_progress) -> dict[str, Any]:
    """Fine-tune `student` (the pruned module, changed in place) to match `teacher` (the unpruned module) on
    `inputs`, with cross-entropy on `labels` when given; keeps the best epoch on a held-out 15%."""
    from mdeploy import training

    teach = training.TorchTeacher(teacher, input_names)
    probe = teach.infer({k: inputs[k][:2] for k in input_names})
    output, kind = scored_output(probe)
    targets = training.teacher_outputs(teach, {k: inputs[k] for k in input_names}, output=output, workdir=workdir,
                                       what="the unpruned model")
    names = list(probe)
    data = training.Dataset({k: inputs[k] for k in input_names}, targets, labels)
    train_set, held_out = training.split(data, fraction=0.15, seed=seed)
    config = training.TrainConfig(epochs=epochs, kind=kind, output=names.index(output), seed=seed,
                                  **({"lr": lr} if lr is not None else {}))
    result = training.train(student, train_set, config, held_out=held_out, progress=progress)
    student.load_state_dict(result.best_state)
    student.eval()
    return {"output": output, "kind": kind, "samples": len(train_set), "held_out": len(held_out), **result.to_dict()}
