"""Calibration data for static quantization, streamed to onnxruntime one batch at a time.

The data is checked against the model's inputs before any work (names, dtypes, shapes; never cast or
reshaped), then cut into batches: slices of the model's own batch size when it is fixed, else `batch`
samples. Slices are views, and `.npy` files are memory-mapped (validation.inputs.load_arrays with mmap=True),
so the data set is not copied; onnxruntime's min/max calibrator keeps only each batch's reduced minima and
maxima, so its memory stays small too.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mdeploy.core import TensorSpec
from mdeploy.lazy import logging
from mdeploy.lazy import numpy as np
from mdeploy.logs import is_verbose
from mdeploy.progress import Advance
from mdeploy.validation import inputs as vinputs

Feed = dict[str, "np.ndarray"]
DEFAULT_BATCH = 16


def fixed_batch(specs: list[TensorSpec]) -> int | None:
    """The batch size the model insists on (a fixed axis 0), if any."""
    for spec in specs:
        if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 0:
            return spec.shape[0]
    return None


def batches_from_data(arrays: dict[str, np.ndarray], specs: list[TensorSpec], batch: int = DEFAULT_BATCH,
                      flag: str = "data") -> vinputs.Feeds:
    """Checked feeds of at most `batch` samples (exactly the model's batch when it is fixed), or the one feed the
    file is when it is not a stack of samples (vinputs.read_data); `.notes` say how it was read."""
    arrays = {k: v for k, v in arrays.items() if k != "labels"}
    step = None if fixed_batch(specs) else batch
    return vinputs.feeds_from_data(arrays, specs, batch=step, flag=flag)


def random_batches(specs: list[TensorSpec], samples: int, batch: int = DEFAULT_BATCH, seed: int = 0) -> Iterator[Feed]:
    """`samples` random samples, N(0, 1) for floats: calibration ranges that fit no real input."""
    rng = np.random.default_rng(seed)
    step = fixed_batch(specs) or batch
    done = 0
    while done < samples:
        n = step if fixed_batch(specs) else min(step, samples - done)
        yield vinputs.random_feed(specs, rng, batch=n)
        done += n


class StreamingReader:
    """A CalibrationDataReader over feeds produced lazily; advances the progress bar once per batch."""

    def __init__(self, feeds: Any, advance: Advance) -> None:
        self._feeds = iter(feeds)
        self._advance = advance
        self.batches = 0
        self.samples = 0

    def get_next(self) -> Feed | None:
        feed = next(self._feeds, None)
        if feed is None:
            return None
        self.batches += 1
        self.samples += int(next(iter(feed.values())).shape[0]) if feed else 0
        self._advance()
        return {k: np.ascontiguousarray(v) for k, v in feed.items()}

    def rewind(self) -> None:  # onnxruntime calls this on some paths; one pass is all we need
        pass


def reader_class() -> type:
    """StreamingReader registered as onnxruntime's CalibrationDataReader (imported lazily)."""
    from onnxruntime.quantization import CalibrationDataReader

    return type("MdeployCalibrationReader", (StreamingReader, CalibrationDataReader), {})


@contextmanager
def quiet_calibration() -> Iterator[None]:
    """While onnxruntime calibrates: its prints (histogram calibrators print to stdout) and root-logger warnings
    are kept off the terminal, but stderr stays open so that the calibration progress bar is drawn.
    (logs.framework_output captures both descriptors, which would hide the bar.)"""
    root = logging.getLogger()
    level = root.level
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(2 if is_verbose() else sink.fileno(), 1)
            if not is_verbose():
                root.setLevel(logging.ERROR)
                import onnxruntime

                onnxruntime.set_default_logger_severity(3)  # the calibration session's C++ warnings
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            root.setLevel(level)
