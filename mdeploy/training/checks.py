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


def check_labels(labels: np.ndarray, n: int, classes: int | None, flag: str, output: str) -> None:
    """`labels` (from `flag`) hold one class id per sample of the data, each a class of the teacher's `output`."""
    if classes is None:
        raise InputError(f"{flag} given, but the distilled output '{output}' is not class scores",
                         hint="name the class-score output with --teacher-output / --classifier-output, or drop the labels")
    if len(labels) != n:
        raise InputError(f"{flag} holds {len(labels)} labels for {n} samples", hint="give one class id per sample")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= classes:
        raise InputError(f"{flag} holds class ids {low}..{high}, but the teacher's '{output}' scores {classes} classes "
                         f"(0..{classes - 1})", hint="labels are class indices into the teacher's output")


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


__all__ = ["check_finite", "check_labels", "check_student", "labels_from_file", "labels_in_data", "load_data"]
