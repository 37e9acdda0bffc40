"""deps.require: a missing module names its extra; an interrupt during a module's initialisation stays an interrupt."""

from __future__ import annotations

import sys

import pytest

from mdeploy.deps import require
from mdeploy.errors import MissingDependencyError


def test_a_missing_module_names_the_extra():
    with pytest.raises(MissingDependencyError) as info:
        require("mdeploy_no_such_module", extra="onnx")
    assert "mdeploy_no_such_module is needed" in info.value.message and info.value.hint == "pip install 'mdeploy[onnx]'"


def test_an_interrupt_while_a_module_initialises_is_an_interrupt(tmp_path, monkeypatch):
    """pybind11 turns a Ctrl-C/SIGTERM that lands in a C extension's init into ImportError('initialization failed')
    caused by the KeyboardInterrupt (seen: SIGTERM to `mdeploy run` while onnxruntime imported). That is exit 130 with
    cleanup, not 'onnxruntime is not installed'. The module here fails the same way pybind11's init does."""
    (tmp_path / "mdeploy_interrupted_init.py").write_text(
        "try:\n    raise KeyboardInterrupt('signal 15')\n"
        "except KeyboardInterrupt as exc:\n    raise ImportError('initialization failed') from exc\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(KeyboardInterrupt, match="signal 15"):
        require("mdeploy_interrupted_init", extra="onnx")
    assert "mdeploy_interrupted_init" not in sys.modules
