"""Where validation inputs come from: a data file the user gives, or random feeds built from input specs.

Data is never cast or reshaped to fit a model: a name, shape or dtype that does not match is an error.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

from mdeploy.core import TensorSpec
from mdeploy.errors import InputError

Feed = dict[str, np.ndarray]

# Symbolic dims get these sizes in random feeds unless --input fixes them.
DEFAULT_DIM = 1
DEFAULT_NON_BATCH_DIM = 16


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Load `.npz` (arrays keyed by input name), a `.npy` (one unnamed array), or a folder of `.npy` files."""
    if not path.exists():
        raise InputError(f"data not found: {path}")
    try:
        if path.is_dir():
            files = sorted(path.glob("*.npy"))
            if not files:
                raise InputError(f"no .npy files in {path}")
            return {f.stem: np.load(f, allow_pickle=False) for f in files}
        if path.suffix == ".npy":
            return {"": np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except InputError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"cannot read data file {path}: {exc}", hint="give an .npz of arrays keyed by input name") from None


def feeds_from_data(arrays: dict[str, np.ndarray], specs: list[TensorSpec], batch: int | None = None) -> list[Feed]:
    """Check arrays against the model's input specs and cut them into feeds.

    With `batch`, axis 0 is sliced into batches of that size (a model with a fixed batch dimension is fed
    in slices of exactly that size); otherwise the whole data set is one feed.
    """
    arrays = dict(arrays)
    arrays.pop("labels", None)
    if list(arrays) == [""] and len(specs) == 1:
        arrays = {specs[0].name: arrays[""]}
    names = {s.name for s in specs}
    missing = sorted(names - set(arrays))
    extra = sorted(set(arrays) - names)
    if missing or extra:
        detail = "; ".join(
            x for x in (f"missing {', '.join(missing)}" if missing else "", f"unknown {', '.join(extra)}" if extra else "") if x
        )
        raise InputError(
            f"data does not match the model inputs: {detail}",
            hint="the model's inputs are: " + ", ".join(f"{s.name}{s.shape_text()}:{s.dtype}" for s in specs),
        )
    fixed_batch = None
    for spec in specs:
        array = arrays[spec.name]
        if array.ndim == len(spec.shape) and spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 0:
            fixed_batch = spec.shape[0]
        problem = _fits_ignoring_batch(spec, array)
        if problem:
            raise InputError(f"data for input '{spec.name}' does not fit the model: {problem}")
    counts = {a.shape[0] if a.ndim else 1 for a in arrays.values()}
    if len(counts) > 1:
        raise InputError(f"data arrays have different numbers of samples along axis 0: {sorted(counts)}")
    total = counts.pop()
    if total == 0:
        raise InputError("the data set is empty (0 samples)")
    step = batch or fixed_batch or total
    if fixed_batch and total % fixed_batch:
        raise InputError(f"the model has a fixed batch of {fixed_batch}, but the data has {total} samples, not a multiple of it")
    return [{k: v[i : i + step] for k, v in arrays.items()} for i in range(0, total, step)]


def _fits_ignoring_batch(spec: TensorSpec, array: np.ndarray) -> str | None:
    """Like TensorSpec.fits, but a fixed batch axis may hold any multiple of it (the data set is sliced)."""
    if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 0 and array.ndim == len(spec.shape):
        relaxed = TensorSpec(spec.name, ("n",) + tuple(spec.shape[1:]), spec.dtype)
        return relaxed.fits(array)
    return spec.fits(array)


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

