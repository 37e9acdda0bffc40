"""What the data, the labels and the student must be before any training starts, each refusal naming the flag.

Why it exists: distill and prune's recovery train on user data, and a bad array found late costs a teacher run, a
pruning pass or epochs of training, then points at the wrong thing ("the teacher produces NaN" where the data held
the NaN, "labels must be ..." without saying which flag gave them). Every check here runs on numpy arrays as soon as
the files are read, and its InputError names the flag, the file or value, and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mdeploy.errors import InputError
from mdeploy.validation import inputs as vinputs

CHUNK_BYTES = 64 << 20  # NaN/Inf are counted in slices of this size: a memory-mapped data set is never read whole


def load_data(path: str | Path, labels_path: str | Path | None, flag: str,
              labels_flag: str) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The arrays of the file given with `flag` (`--data`, `--eval-data`: .npz, .npy or a folder of .npy, memory-mapped
    where it can be), checked finite, and their class ids: from the .npy given with `labels_flag` (`--labels`,
    `--eval-labels`), else from a `labels` array inside, else None."""
    from mdeploy.validation.inputs import load_arrays

    if not Path(path).exists():
        raise InputError(f"{flag}: file not found: {path}",
                         hint=f"{flag} is an .npz of arrays keyed by input name, an .npy, or a folder of .npy files")
    arrays = load_arrays(Path(path), mmap=True)
    labels = arrays.pop("labels", None)
    check_finite(arrays, flag, path)
    if labels_path:
        return arrays, labels_from_file(labels_path, labels_flag)
    return arrays, labels_in_data(labels, flag, path) if labels is not None else None


def check_finite(arrays: dict[str, np.ndarray], flag: str, path: str | Path) -> None:
    """Every floating-point array of `arrays` (read from `path`, given with `flag`) holds only finite numbers."""
    for name, array in arrays.items():
        if np.dtype(array.dtype).kind not in "fc" or array.size == 0:
            continue
        bad, first = _non_finite(array)
        if bad:
            what = f"array '{name}'" if name else "the array"
            where = f"the first in sample {first}" if array.ndim > 0 else "a scalar"
            raise InputError(f"{flag} {path}: {what} holds {bad} NaN/Inf value{'s' if bad > 1 else ''} ({where})",
                             hint=f"training needs finite inputs: drop those samples from {flag} (keep rows where "
                                  "np.isfinite(x).all(axis=tuple(range(1, x.ndim)))) or fill them (np.nan_to_num)")


def _non_finite(array: np.ndarray) -> tuple[int, int]:
    """How many values of `array` are NaN/Inf, and the first sample (axis 0) holding one."""
    if array.ndim == 0:
        return (0, 0) if np.isfinite(array) else (1, 0)
    per_sample = max(1, array[:1].nbytes)
    step = max(1, CHUNK_BYTES // per_sample)
    bad, first = 0, -1
    for start in range(0, array.shape[0], step):
        finite = np.isfinite(array[start : start + step])
        rows = ~finite.reshape(finite.shape[0], -1).all(axis=1)
        if rows.any():
            bad += int(finite.size - np.count_nonzero(finite))
            if first < 0:
                first = start + int(np.argmax(rows))
    return bad, first


def labels_from_file(path: str | Path, flag: str) -> np.ndarray:
    """The class ids in the .npy given with `flag` (`--labels`, `--eval-labels`), as int64."""
    if not Path(path).is_file():
        raise InputError(f"{flag}: file not found: {path}")
    return vinputs.read_labels(path, f"{flag} {path}").astype(np.int64)


def labels_in_data(labels: Any, flag: str, path: str | Path) -> np.ndarray:
    """The `labels` array of the .npz given with `flag` (`--data`, `--eval-data`), as int64 class ids."""
    return vinputs.class_ids(labels, f"the `labels` array in {flag} {path}").astype(np.int64)


NO_LABEL = -1  # a sample without a label (a masked array saves as np.ma.filled(y, -1))


def check_labels(labels: np.ndarray, n: int, classes: int | None, flag: str, output: str, data_flag: str = "--data") -> int:
    """`labels` (from `flag`) hold one class id per sample of the data given with `data_flag`, each a class of the
    teacher's `output` or -1 for "no label". Returns how many samples have a label."""
    if classes is None:
        raise InputError(f"{flag} given, but the distilled output '{output}' is not class scores",
                         hint="name the class-score output with --teacher-output / --classifier-output, or drop the labels")
    if len(labels) != n:
        other = ("; or give the labelled samples apart: --labelled-data L.npz --labels y.npy beside the unlabelled "
                 "--data pool") if data_flag == "--data" else ""
        raise InputError(f"{flag} holds {len(labels)} labels for {n} samples of {data_flag}",
                         hint=f"give one class id per sample, -1 where a sample has none{other}")
    known = labels[labels != NO_LABEL]
    if known.size == 0:
        raise InputError(f"{flag} labels none of the {n} samples of {data_flag} (every label is -1)",
                         hint=f"drop {flag} for distillation without labels")
    low, high = int(known.min()), int(known.max())
    if low < 0 or high >= classes:
        raise InputError(f"{flag} holds class ids {low}..{high}, but the teacher's '{output}' scores {classes} classes "
                         f"(0..{classes - 1}; -1: no label)", hint="labels are class indices into the teacher's output")
    return int(known.size)


def samples(arrays: dict[str, np.ndarray], specs: list[Any], flag: str, notes: list[str]) -> dict[str, np.ndarray]:
    """The data keyed by the teacher's input names, checked against them (vinputs.read_data: the only array takes
    the only input's name when it fits, with a note). Training draws batches of samples: one feed will not do."""
    reading = vinputs.read_data(arrays, specs, flag)
    if reading.samples is None:
        raise InputError(f"{flag} is not a stack of samples along axis 0 ({reading.not_samples}); training draws "
                         "batches of samples from it", hint=f"give every array of {flag} its samples along axis 0")
    notes.extend(reading.notes)
    return reading.arrays


def training_labels(train_x: dict[str, np.ndarray], train_y: np.ndarray | None, eval_x: dict[str, np.ndarray] | None,
                    eval_y: np.ndarray | None, labelled: tuple[dict[str, np.ndarray], np.ndarray] | None,
                    specs: list[Any], classes: int | None, output: str, report: Any) -> tuple[dict, np.ndarray | None]:
    """The training samples and their labels (-1: none) once every label is checked: `--data` with its labels, and
    the `--labelled-data` samples after it when given. `report` gets how many samples each flag labels, and a note
    when only some samples have a label."""
    given = [("--labels" if labelled is None else "the `labels` array of --data", train_x, train_y, "--data"),
             ("--eval-labels", eval_x, eval_y, "--eval-data")]
    if labelled is not None:
        labelled_x = samples(labelled[0], specs, "--labelled-data", report.notes)
        given.append(("--labels", labelled_x, labelled[1], "--labelled-data"))
    counts = {flag: check_labels(y, _count(x), classes, flag, output, data_flag)
              for flag, x, y, data_flag in given if y is not None}
    if labelled is not None:
        train_x, train_y = joined(train_x, train_y, labelled_x, labelled[1])
    if train_y is not None and (train_y < 0).any():
        report.notes.append(f"labels for {int((train_y >= 0).sum())} of {_count(train_x)} training samples: KD on every "
                            "sample, cross-entropy on the labelled ones")
    if counts:
        report.data["labelled"] = counts
    return train_x, train_y


def _count(arrays: dict[str, np.ndarray] | None) -> int:
    return int(next(iter(arrays.values())).shape[0]) if arrays else 0


def joined(pool: dict[str, np.ndarray], pool_labels: np.ndarray | None, labelled: dict[str, np.ndarray],
           labels: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The unlabelled `--data` pool followed by the `--labelled-data` samples, with one label array (-1 for every
    pool sample that has none). Both are keyed by the teacher's input names already; their per-sample shapes and
    dtypes must agree."""
    if set(pool) != set(labelled):
        raise InputError(f"--labelled-data holds {', '.join(labelled)}, --data {', '.join(pool)}",
                         hint="key both by the teacher's input names")
    for name, array in pool.items():
        other = labelled[name]
        if array.shape[1:] != other.shape[1:] or array.dtype != other.dtype:
            raise InputError(f"--labelled-data '{name}' is {other.dtype} {list(other.shape)}, --data's {array.dtype} "
                             f"{list(array.shape)}: the samples differ", hint="give both sets in the teacher's input shape and dtype")
    n = int(next(iter(pool.values())).shape[0])
    if pool_labels is None:
        pool_labels = np.full(n, NO_LABEL, dtype=np.int64)
    return ({k: np.concatenate([v, labelled[k]]) for k, v in pool.items()},
            np.concatenate([pool_labels.astype(np.int64), labels.astype(np.int64)]))


def check_student(student: Any, probe: dict[str, np.ndarray], teacher_out: dict[str, np.ndarray], output: str,
                  student_name: str, teacher_name: str) -> int:
    """Run the student once on the probe; its outputs must match the teacher's shapes. Returns the position of the
    distilled output among the student's outputs. Every mismatch is said one way: the student's, then the teacher's."""
    from mdeploy.errors import first_line
    from mdeploy.frameworks.torch_models import flatten_outputs, to_torch, torch

    tensors = to_torch(probe)
    try:
        with torch().no_grad():
            got = student.module(*tensors.values())
    except Exception as exc:  # noqa: BLE001  the student is user code: any failure is its own
        raise InputError(f"the student {student_name} fails on the teacher's inputs ({_shapes(probe)}): {first_line(exc)}",
                         hint="the student takes the teacher's inputs, in the teacher's order") from None
    named = [(n, tuple(v.shape)) for n, v in flatten_outputs(got)]
    teacher_shapes = [(n, tuple(v.shape)) for n, v in teacher_out.items()]
    if len(named) != len(teacher_shapes):
        raise InputError(f"the student {student_name} has {len(named)} outputs ({_names(named)}), the teacher {teacher_name} "
                         f"{len(teacher_shapes)} ({_names(teacher_shapes)})", hint="the student's outputs must match the teacher's")
    batch = next(iter(probe.values())).shape[0] if probe else 0
    for (sn, ss), (tn, ts) in zip(named, teacher_shapes):
        if ss != ts:
            scores = len(ss) == len(ts) == 2 and ss[0] == ts[0]
            what = f"the student scores {ss[-1]} classes, the teacher {ts[-1]}" if scores else "the shapes differ"
            fix = f"{ts[-1]} classes in its last layer" if scores else f"the teacher's output shape {list(ts[1:])} per sample"
            raise InputError(f"the student's output '{sn}' is {list(ss)} and the teacher's '{tn}' is {list(ts)} on a batch "
                             f"of {batch}: {what}", hint=f"build the student ({student_name}) with {fix}")
    return [n for n, _ in teacher_shapes].index(output)


def _shapes(feed: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k}{list(v.shape)}" for k, v in feed.items())


def _names(items: list[tuple[str, tuple]]) -> str:
    return ", ".join(f"{n}{list(s)}" for n, s in items)


__all__ = ["NO_LABEL", "check_finite", "check_labels", "check_student", "joined", "labels_from_file", "labels_in_data", "load_data", "samples", "training_labels"]
