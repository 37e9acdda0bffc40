"""Where validation inputs come from: a data file the user gives, or random feeds built from input specs.

Data is never cast or reshaped to fit a model: a name, shape or dtype that does not match is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mdeploy.core import TensorSpec
from mdeploy.errors import InputError
from mdeploy.lazy import hashlib, zipfile
from mdeploy.lazy import numpy as np

Feed = dict[str, "np.ndarray"]

# Symbolic dims get these sizes in random feeds unless --input fixes them.
DEFAULT_DIM = 1
DEFAULT_NON_BATCH_DIM = 16


def load_arrays(path: Path, mmap: bool = False) -> dict[str, np.ndarray]:
    """Load `.npz` (arrays keyed by input name), a `.npy` (one unnamed array), or a folder of `.npy` files.

    `mmap=True` memory-maps `.npy` files (read-only) rather than reading them whole: calibration, evaluation and
    training data is only ever sliced into batches, and may be larger than memory. An `.npz` is a zip: always read.
    """
    if not path.exists():
        raise InputError(f"data not found: {path}")
    mode = "r" if mmap else None
    try:
        if path.is_dir():
            files = sorted(path.glob("*.npy"))
            if not files:
                raise InputError(f"no .npy files in {path}")
            return {f.stem: np.load(f, mmap_mode=mode, allow_pickle=False) for f in files}
        if path.suffix == ".npy":
            return {"": np.load(path, mmap_mode=mode, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except InputError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"cannot read data file {path}: {exc}", hint="give an .npz of arrays keyed by input name") from None


class Feeds(list):
    """Feeds cut from a data file, with `notes` saying how the file was read when that is not the plain reading
    (one feed rather than a stack of samples; its one array fed to an input of another name).

    A list, so that code that only iterates the feeds needs no change; the verbs that write reports copy `notes`
    into them, so that a user sees how their file was understood.
    """

    def __init__(self, feeds: list[Feed] | None = None, notes: list[str] | None = None) -> None:
        super().__init__(feeds or [])
        self.notes = list(notes or [])


@dataclass
class Reading:
    """How a data file fits the model's inputs (read_data): the arrays keyed by input name, and `samples`, their
    number along axis 0 when the file is a stack of samples, or None when it is one feed taken as it is."""

    arrays: dict[str, np.ndarray]
    samples: int | None
    fixed_batch: int | None
    notes: list[str]
    not_samples: str | None = None  # with one feed: why the file is not a stack of samples


def read_data(arrays: dict[str, np.ndarray], specs: list[TensorSpec], flag: str = "data") -> Reading:
    """Which of the two readings of a data file fits the model's declared inputs (nothing is cast or reshaped).

    A stack of samples: every array has the samples along axis 0, all agree on their number, and the other axes fit
    the model (a fixed batch takes any multiple of it; the file is sliced). Else one feed: every array fits its
    input as it is, rank and every static dim (an attention mask `[1, S]` beside queries `[2, S, D]`, a scalar `k`,
    a shape input). Else neither: an error naming the input and why each reading fails. `flag` names the file in
    messages (`--data`, `--calib-data`).
    """
    arrays, notes = keyed_by_inputs({k: v for k, v in arrays.items() if k != "labels"}, specs, flag)
    for spec in specs:
        if str(arrays[spec.name].dtype) != spec.dtype:
            raise InputError(f"{flag} for input '{spec.name}' does not fit the model: dtype {arrays[spec.name].dtype}, "
                             f"the model wants {spec.dtype}", hint="data is never cast: save the array as " + spec.dtype)
    stack = _stack_problem(arrays, specs)
    if stack is None:
        counts = {int(a.shape[0]) for a in arrays.values()}
        samples = counts.pop() if counts else 1
        if samples == 0:
            raise InputError(f"the data set is empty (0 samples in {flag})")
        return Reading(arrays, samples, _fixed_batch(arrays, specs), notes)
    as_is = next(((s.name, p) for s in specs if (p := s.fits(arrays[s.name]))), None)
    if as_is is None:
        if arrays and not any(a.size for a in arrays.values()):
            raise InputError(f"the data set is empty (every array in {flag} has 0 values)")
        shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in arrays.items())
        notes.append(f"{flag} read as one feed, run once: its arrays fit the model's inputs as they are ({shapes}), "
                     f"not as a stack of samples ({stack})")
        return Reading(arrays, None, None, notes, stack)
    name, problem = as_is
    raise InputError(
        f"{flag} does not fit input '{name}' either way: as one feed, {problem}; as a stack of samples along axis 0, {stack}",
        hint="give arrays shaped as the model's inputs, or with the samples along axis 0 of every array; the model's "
             "inputs are: " + _signature(specs),
    )


def feeds_from_data(arrays: dict[str, np.ndarray], specs: list[TensorSpec], batch: int | None = None,
                    flag: str = "data") -> Feeds:
    """The feeds a data file gives (read_data decides how it is read).

    A stack of samples is cut along axis 0: slices of the model's batch when it is fixed, else of `batch` samples
    (all in one feed without `batch`). One feed is run once, as it is.
    """
    reading = read_data(arrays, specs, flag)
    if reading.samples is None:
        return Feeds([reading.arrays], reading.notes)
    total, fixed = reading.samples, reading.fixed_batch
    step = fixed or batch or total
    return Feeds([{k: v[i : i + step] for k, v in reading.arrays.items()} for i in range(0, total, step)], reading.notes)


def keyed_by_inputs(arrays: dict[str, np.ndarray], specs: list[TensorSpec], flag: str = "data") -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays keyed by the model's input names, and a note when one was renamed.

    One model input and one array: the array is that input's whatever its name, if its dtype and shape fit (the same
    model calls its input `input_layer` as .keras, `keras_tensor` as a SavedModel and `serving_default_keras_tensor:0`
    as TFLite). An unnamed `.npy` always is. Otherwise the names must be the inputs' names, no more, no fewer.
    """
    names = {s.name for s in specs}
    if len(specs) == 1 and len(arrays) == 1 and set(arrays) != names:
        (key, array), spec = next(iter(arrays.items())), specs[0]
        problem = spec.fits(array) if _fits_as_samples(spec, array) else None  # either reading will do
        if key == "" or problem is None:
            note = [] if key == "" else [f"{flag}: its only array '{key}' fed to the model's only input '{spec.name}'"]
            return {spec.name: array}, note
        mismatch = f"; the only array '{key}' does not fit the only input '{spec.name}' either: {problem}"
    else:
        mismatch = ""
    missing, extra = sorted(names - set(arrays)), sorted(set(arrays) - names)
    if missing or extra:
        detail = "; ".join(x for x in (f"missing {', '.join(missing)}" if missing else "",
                                       f"unknown {', '.join(extra)}" if extra else "") if x)
        raise InputError(f"{flag} does not match the model inputs: {detail}{mismatch}",
                         hint="the model's inputs are: " + _signature(specs))
    return {s.name: arrays[s.name] for s in specs}, []


def _signature(specs: list[TensorSpec]) -> str:
    return ", ".join(f"{s.name}{s.shape_text()}:{s.dtype}" for s in specs) or "none"


def _stack_problem(arrays: dict[str, np.ndarray], specs: list[TensorSpec]) -> str | None:
    """None when the arrays are a stack of samples for these inputs, else why not."""
    for spec in specs:
        problem = _fits_as_samples(spec, arrays[spec.name])
        if problem:
            return f"input '{spec.name}': {problem}"
    problem = count_problem(arrays)
    if problem:
        return problem
    fixed = _fixed_batch(arrays, specs)
    total = next((int(a.shape[0]) for a in arrays.values()), 0)
    if fixed and total % fixed:
        return f"the model has a fixed batch of {fixed}, and {total} samples are not a multiple of it"
    return None


def count_problem(arrays: dict[str, np.ndarray]) -> str | None:
    """None when every array has a sample axis (axis 0) and all agree on the number of samples, else why not
    (what training, which draws batches of samples, checks where it has no declared shapes to read the data by)."""
    scalar = next((k for k, a in arrays.items() if a.ndim == 0), None)
    if scalar is not None:
        return f"'{scalar}' is a scalar, with no sample axis"
    counts = {name: int(a.shape[0]) for name, a in arrays.items()}
    if len(set(counts.values())) > 1:
        return "the arrays hold different numbers of samples: " + ", ".join(f"{n} ({k})" for k, n in counts.items())
    return None


def _fits_as_samples(spec: TensorSpec, array: np.ndarray) -> str | None:
    """Like TensorSpec.fits, but axis 0 holds samples: any number of them (a fixed batch: the file is sliced)."""
    if not spec.shape or array.ndim == 0:
        return f"shape {list(array.shape)} has no sample axis" if array.ndim == 0 else f"the model wants a scalar, got {list(array.shape)}"
    relaxed = TensorSpec(spec.name, ("n",) + tuple(spec.shape[1:]), spec.dtype)
    return relaxed.fits(array)


def _fixed_batch(arrays: dict[str, np.ndarray], specs: list[TensorSpec]) -> int | None:
    """The batch the model insists on (a static axis 0), if any input has one."""
    for spec in specs:
        if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 0 and arrays[spec.name].ndim == len(spec.shape):
            return spec.shape[0]
    return None


def concrete_shape(spec: TensorSpec, batch: int = DEFAULT_DIM, sizes: dict[str, int] | None = None) -> tuple[int, ...]:
    """A concrete shape for a spec: symbolic axis 0 takes `batch`, other symbolic axes `sizes` or 16."""
    sizes = sizes or {}
    shape = []
    for axis, dim in enumerate(spec.shape):
        if isinstance(dim, int) and dim > 0:
            shape.append(dim)
        elif isinstance(dim, str) and dim in sizes:
            shape.append(sizes[dim])
        else:
            shape.append(batch if axis == 0 else DEFAULT_NON_BATCH_DIM)
    return tuple(shape)


def random_feed(specs: list[TensorSpec], rng: np.random.Generator, batch: int = DEFAULT_DIM, sizes: dict[str, int] | None = None) -> Feed:
    """One random feed. Floats ~ N(0, 1); integer inputs stay inside the range the model accepts
    (token ids below the vocabulary size); masks are all ones so that no row is fully masked."""
    feed = {}
    for spec in align_batch(specs) if batch == DEFAULT_DIM else specs:
        shape = concrete_shape(spec, batch, sizes)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feed[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feed[spec.name] = np.zeros(shape, dtype=dtype)
        elif "mask" in spec.name.lower():
            feed[spec.name] = np.ones(shape, dtype=dtype)
        else:
            low, high = spec.value_range or (0, 2)
            feed[spec.name] = rng.integers(int(low), int(high), size=shape).astype(dtype)
    return feed


def align_batch(specs: list[TensorSpec], dynamic_batch: set[str] | None = None) -> list[TensorSpec]:
    """When the user fixed the batch of one input (`--input image:2x...`) and other inputs keep a dynamic batch, those
    get that batch too: a model's inputs share one batch, and one that concatenates them fails on a mismatch.

    `dynamic_batch`: the inputs whose axis 0 is dynamic (default: those whose axis 0 is symbolic in `specs`).
    """
    def symbolic(spec: TensorSpec) -> bool:
        return bool(spec.shape) and not (isinstance(spec.shape[0], int) and spec.shape[0] > 0)

    dynamic = dynamic_batch if dynamic_batch is not None else {s.name for s in specs if symbolic(s)}
    given = {s.shape[0] for s in specs if s.shape and s.name not in dynamic and not symbolic(s)}
    if len(given) != 1 or not any(s.name in dynamic for s in specs):
        return specs
    batch = int(given.pop())
    return [TensorSpec(s.name, (batch, *s.shape[1:]), s.dtype, s.value_range) if s.name in dynamic and s.shape else s
            for s in specs]


def read_labels(path: str | Path, what: str = "labels") -> np.ndarray:
    """Class ids from a .npy file (read without pickle), checked with `class_ids`."""
    try:
        labels = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot read labels {path}: {exc}") from None
    return class_ids(labels, what)


def class_ids(labels: np.ndarray, what: str = "labels") -> np.ndarray:
    """`labels` as given, after checking it is a 1-D integer array (one class id per sample)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise InputError(f"{what} must be a 1-D integer array (class ids), got {labels.dtype} {list(labels.shape)}",
                         hint="one integer class id per sample: save y.astype(np.int64) (y.argmax(axis=1) for one-hot or "
                              "score rows)")
    return labels


def feeds_hash(feeds: list[Feed]) -> str:
    """A sha256 over names, dtypes, shapes and bytes, so that a CI run's inputs can be compared over time."""
    digest = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            array = np.ascontiguousarray(feed[name])
            digest.update(f"{name}:{array.dtype}:{array.shape};".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()

