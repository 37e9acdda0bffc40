"""The step cache and code sources (FILE.py:FACTORY): a factory that loads weights from its folder, as a Hugging Face
`build.py` loads `model.safetensors`, must not be served a model converted from the old weights (issue 16); and what
the cache keeps and says about itself.

Real runs of a small torch network through `execute.run`: its factory reads `weights.pt` with torch.load (a Python
open, seen by the audit hook), `weights.bin` with torch.from_file (native code: Python never sees the file opened, as
with safetensors' Rust reader: the built module's state is what catches it), or imports a helper module beside it.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from mdeploy.pipeline import execute, spec

FACTORY = """\
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).parent


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(8, 16)
        self.classifier = nn.Linear(16, 4)

    def forward(self, x):
        return self.classifier(torch.relu(self.body(x)))


def build():
    torch.manual_seed(0)
    net = Net()
    if (HERE / "weights.pt").is_file():
        net.load_state_dict(torch.load(HERE / "weights.pt", weights_only=True))
    if (HERE / "weights.bin").is_file():  # raw float32 of the classifier's weight, read by native code
        flat = torch.from_file(str(HERE / "weights.bin"), shared=False, size=64, dtype=torch.float32)
        with torch.no_grad():
            net.classifier.weight.copy_(flat.view(4, 16))
    return net.eval()


def example_inputs():
    return {"x": torch.ones(1, 8)}
"""

PIPELINE = """\
version: 1
models:
  - name: net
    source: build.py:build
    inputs: {x: 1x8}
steps:
  - convert: {to: onnx, exporter: torchscript}   # the quicker exporter: these tests are about the cache
"""


def _model(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "build.py").write_text(FACTORY)
    (folder / "pipeline.yaml").write_text(textwrap.dedent(PIPELINE))
    return folder / "pipeline.yaml"


def _run(pipeline: Path, name: str) -> tuple[str, np.ndarray, list[str]]:
    """(the convert step's status, the converted model's output on ones, the echoed lines)."""
    lines: list[str] = []
    report = execute.run(spec.load(pipeline, out=pipeline.parent / "runs" / name), echo=lines.append)
    (entry,) = report.data["models"]
    onnx_path = pipeline.parent / "runs" / name / "net" / "01-convert.onnx"
    out = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"x": np.ones((1, 8), np.float32)})[0]
    return entry["steps"][0]["status"], out, lines


def _state(folder: Path, factor: float) -> None:
    """weights.pt: the factory's own state with the classifier's weight scaled by `factor`."""
    import torch

    torch.manual_seed(0)
    body, classifier = torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)
    state = {f"body.{k}": v for k, v in body.state_dict().items()}
    state.update({f"classifier.{k}": (v * factor if k == "weight" else v) for k, v in classifier.state_dict().items()})
    torch.save(state, folder / "weights.pt")


def test_changed_weights_file_reruns_convert_and_the_model_changes(tmp_path):
    pipeline = _model(tmp_path)
    _state(tmp_path, 1.0)
    status, first, _ = _run(pipeline, "a")
    assert status == "passed"
    status, again, lines = _run(pipeline, "b")
    assert status == "cached" and np.array_equal(again, first), lines
    _state(tmp_path, 3.0)  # the edit: a classifier weight scaled by 3; build.py is unchanged
    status, changed, lines = _run(pipeline, "c")
    assert status == "passed", lines  # before the fix: "cached", and the old model
    assert not np.allclose(changed, first)


def test_weights_read_by_native_code_are_covered_by_the_built_state(tmp_path):
    """torch.from_file opens the file in C++, unseen by Python: the key's hash of the built module catches it."""
    pipeline = _model(tmp_path)
    rng = np.random.default_rng(0)
    rng.standard_normal(64).astype(np.float32).tofile(tmp_path / "weights.bin")
    status, first, _ = _run(pipeline, "a")
    assert status == "passed"
    (rng.standard_normal(64) * 3).astype(np.float32).tofile(tmp_path / "weights.bin")
    status, changed, _ = _run(pipeline, "b")
    assert status == "passed"
    assert not np.allclose(changed, first)


def test_a_changed_helper_module_reruns_the_step(tmp_path, monkeypatch):
    """Code build.py imports (not build.py itself) decides the model too. Each run starts without the helper imported,
    as a fresh `mdeploy run` process does (a module imported once stays imported in a process)."""
    pipeline = _model(tmp_path)
    text = FACTORY.replace("HERE = ", "from layers import scale\n\nHERE = ").replace(
        "self.classifier(torch.relu(", "self.classifier(scale(torch.relu(").replace("self.body(x)))", "self.body(x))))")
    (tmp_path / "build.py").write_text(text)
    results = []
    for run, factor in (("a", "1"), ("b", "2")):
        (tmp_path / "layers.py").write_text(f"def scale(x):\n    return {factor} * x\n")
        monkeypatch.delitem(sys.modules, "layers", raising=False)
        results.append(_run(pipeline, run))
    monkeypatch.delitem(sys.modules, "layers", raising=False)
    assert [status for status, _, _ in results] == ["passed", "passed"]  # b: only layers.py changed
    assert not np.allclose(results[1][1], results[0][1])


def test_a_factory_whose_build_fails_is_not_cached(tmp_path):
    """mdeploy cannot tell what a failing build depends on: the step runs (and reports the failure) every time."""
    pipeline = _model(tmp_path)
    (tmp_path / "weights.pt").write_bytes(b"not a state_dict")
    for run in ("a", "b"):
        report = execute.run(spec.load(pipeline, out=tmp_path / "runs" / run))
        (entry,) = report.data["models"]
        assert entry["steps"][0]["status"] == "error" and not entry["steps"][0]["cached"]
    assert not list((tmp_path / "runs" / ".cache" / "steps").glob("*"))


def test_a_cache_hit_says_cached_once_and_the_hash_memo_keeps_no_gone_file(tmp_path):
    pipeline = _model(tmp_path)
    _run(pipeline, "a")
    _, _, lines = _run(pipeline, "b")
    line = next(x for x in lines if "01-convert: cached" in x)
    assert "cached (cached" not in line and "when it ran" in line, line  # was: "cached (cached, 0.02 s)"
    memo = json.loads((tmp_path / "runs" / ".cache" / "hashes.json").read_text())
    gone = [k for k in memo if not Path(k.rsplit("|", 3)[0]).exists()]
    assert memo and not gone  # was: the staging folders' paths of every cache entry, deleted on rename


@pytest.mark.parametrize("edit", ["touch", "same bytes"])
def test_an_unchanged_model_stays_cached(tmp_path, edit):
    """The key is content: rewriting the same weights (new mtime) still hits."""
    pipeline = _model(tmp_path)
    _state(tmp_path, 1.0)
    _run(pipeline, "a")
    if edit == "touch":
        (tmp_path / "weights.pt").touch()
    else:
        (tmp_path / "weights.pt").write_bytes((tmp_path / "weights.pt").read_bytes())
    status, _, _ = _run(pipeline, "b")
    assert status == "cached"
