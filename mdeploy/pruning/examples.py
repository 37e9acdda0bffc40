"""What prune runs the model on: the example inputs Torch-Pruning traces the dependency graph with, and the
training data (--data/--labels) that Taylor importance and recovery take their samples from.

Why it is its own module: both are read before anything is pruned, so a wrong --input or --data is exit 2 before the
minutes pruning and an export take, and both follow the shared reading rules (mdeploy.validation.inputs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mdeploy.core import TensorSpec
from mdeploy.errors import InputError
from mdeploy.lazy import numpy as np
from mdeploy.validation import inputs as vinputs


def tracing_examples(loaded: Any, given_specs: list[TensorSpec], seed: int) -> dict[str, Any]:
    """One torch tensor per model input: drawn from `--input` specs (given_specs), else the module's own examples."""
    from mdeploy.frameworks import torch_indices, torch_models

    given = {s.name: s for s in given_specs}
    known = dict(loaded.examples or {})
    names = loaded.input_names or list(given)
    feeds: dict[str, Any] = {}
    rng = np.random.default_rng(seed)
    for name in names:
        if name in given:
            spec = given[name]
            if not spec.dtype_given and name in known:
                spec = TensorSpec(name, spec.shape, str(known[name].dtype).replace("torch.", ""))
            spec = torch_indices.with_index_ranges([spec], loaded.module)[0]
            feeds[name] = torch_models.to_torch(vinputs.random_feed([spec], rng))[name]
        elif name in known:
            feeds[name] = known[name]
        elif feeds:
            break
        else:
            raise InputError("the model does not carry example inputs",
                             hint="give --input NAME:SHAPE[:DTYPE] for each of: " + ", ".join(names)
                             + " (or define example_inputs() beside the factory)")
    return feeds


def training_data(data: Path, labels_path: Path | None, examples: dict[str, Any], names: list[str],
                  notes: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """--data (and --labels) as {input: a stack of samples} and the labels, every problem an InputError now."""
    from mdeploy.training.checks import load_data

    arrays, labels = load_data(data, labels_path, "--data", "--labels")  # finite; labels are class ids
    # the only array is the only input's when its dtype and rank fit (vinputs.keyed_by_inputs), with a note
    ranks = [TensorSpec(k, ("n",) + tuple(f"d{i}" for i in range(1, v.dim())), str(v.dtype).replace("torch.", ""))
             for k, v in examples.items()]
    if len(arrays) == 1 and len(names) == 1 and names[0] not in arrays:
        arrays, renamed = vinputs.keyed_by_inputs(arrays, ranks, "--data")
        notes.extend(renamed)
    missing = [n for n in names if n not in arrays]
    if missing:
        raise InputError(f"--data has no array for input {', '.join(missing)}", hint="arrays in it: " + ", ".join(arrays))
    problem = vinputs.count_problem({k: arrays[k] for k in names})
    if problem:
        raise InputError(f"--data is not a stack of samples along axis 0 ({problem}); training draws batches of samples "
                         "from it", hint="give every array of --data its samples along axis 0")
    n = int(arrays[names[0]].shape[0])
    if labels is not None and len(labels) != n:
        raise InputError(f"{len(labels)} labels for {n} samples in --data", hint="give one label per sample")
    return {k: np.asarray(arrays[k]) for k in names}, labels
