"""Keeping the frameworks quiet.

torch.onnx, TensorFlow and onnxruntime print progress lines and C++ warnings straight to the process's
stdout/stderr, which would break `--json` (exactly one object on stdout) and bury mdeploy's own output.
`framework_output()` captures both file descriptors while a framework works; with `--verbose` the text
goes to stderr instead, so stdout stays clean either way.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from mdeploy.lazy import logging

_VERBOSE = False
_LOGGERS = ("tensorflow", "tf2onnx", "absl", "torch", "onnxscript", "onnx_ir", "keras", "h5py")


def set_verbose(verbose: bool) -> None:
    """Called once by the CLI; also sets the environment the frameworks read at import time."""
    global _VERBOSE
    _VERBOSE = verbose
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
        os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        warnings.filterwarnings("ignore")
        quiet_loggers()


def quiet_loggers() -> None:
    """Frameworks reset their loggers' levels when imported: call again after importing one."""
    if _VERBOSE:
        return
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def is_verbose() -> bool:
    return _VERBOSE


class Captured:
    """What the frameworks printed while captured; read `.text` after the block."""

    text: str = ""


@contextmanager
def framework_output() -> Iterator[Captured]:
    """Route fd 1 and fd 2 away from the terminal while a framework runs."""
    captured = Captured()
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            if _VERBOSE:
                os.dup2(saved_err, 1)
            else:
                os.dup2(sink.fileno(), 1)
                os.dup2(sink.fileno(), 2)
            yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", "replace")
