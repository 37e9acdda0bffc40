"""Models and data nobody on the team wrote (issue 16.1): the ONNX backend node-test models that ship with onnx, each
with the inputs onnx's own tests feed it, validated against themselves (exit 0) and against a copy whose output is
changed beyond tolerance (exit 1).

A fixed sample: every 16th operator module in sorted order (clip's min/max scalars, the loss's class weights, RNN's
sequence lengths... ~100 models onnxruntime runs, ~40 of them data that is not a stack of samples, refused before).
Run in this process through mdeploy.api, exit codes as the CLI maps them; two through the real CLI. The sweep over
every node-test model is `python benchmarks/onnx_node_validate.py` (it prints the rates and what it left out).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures import onnx_node_cases as nodes
from mdeploy import api
from mdeploy.errors import MdeployError
from tests.conftest import run_cli

EVERY = 16


@pytest.fixture(scope="module")
def kept(tmp_path_factory) -> list[nodes.Written]:
    """The sampled cases onnxruntime itself runs on their data (the others say why they are left out)."""
    folder = tmp_path_factory.mktemp("node_cases")
    written = [nodes.write(case, folder / f"{i:03d}") for i, case in enumerate(nodes.load(nodes.sample_modules(EVERY)))]
    return [w for w in written if w.kept]


@pytest.fixture(scope="module")
def itself(kept) -> dict[str, tuple[int, str, list[str]]]:
    """Each kept model validated against itself on its data: exit code, why, notes."""
    return {w.name: _exit(w.model, w.model, w.data) for w in kept}


def _exit(reference: Path, candidate: Path, data: Path) -> tuple[int, str, list[str]]:
    """The exit code `mdeploy validate` gives, its error or failed outputs, and the comparison's notes."""
    try:
        report = api.validate(str(reference), str(candidate), data=str(data))
    except MdeployError as exc:
        return exc.exit_code, exc.message, []
    notes = [n for c in report.comparisons for n in c.notes]
    failed = [o.name for c in report.comparisons for o in c.outputs if not o.passed]
    return (0 if report else 1), ", ".join(failed), notes


def test_the_sample_holds_data_that_is_not_a_stack_of_samples(kept, itself):
    assert len(kept) >= 90
    one_feed = [name for name, (_, _, notes) in itself.items() if any("read as one feed" in n for n in notes)]
    assert len(one_feed) >= 30, one_feed  # before: "data arrays have different numbers of samples along axis 0"
    assert "test_clip_default_min" in one_feed  # x[3, 4, 5] beside a scalar min


def test_every_model_validates_against_itself(kept, itself):
    refused = {name: f"exit {code}: {why}" for name, (code, why, _) in itself.items() if code}
    assert len(refused) <= 0.01 * len(kept), refused


def test_a_copy_changed_beyond_tolerance_fails(kept, tmp_path):
    judged, passed = 0, {}
    for i, written in enumerate(kept):
        copy = tmp_path / f"perturbed_{i:03d}.onnx"
        output = nodes.perturb(written, copy)
        if output is None:  # only int8/int16/uint* outputs (Add has no such kernel), or none finite and non-empty
            continue
        judged += 1
        code, why, _ = _exit(written.model, copy, written.data)
        if code != 1:
            passed[written.name] = f"exit {code}: {why}"
    assert judged >= 0.85 * len(kept) and not passed, passed


def test_through_the_cli(kept, tmp_path):
    """One case whose data is one feed, as a user runs it: itself exit 0 with the note; a changed copy exit 1."""
    case = next(w for w in kept if w.name == "test_clip_default_min")
    same = run_cli("validate", case.model, case.model, "--data", case.data)
    assert same.code == 0, same.stderr
    assert "note: --data read as one feed, run once" in same.stdout
    copy = tmp_path / "perturbed.onnx"
    assert nodes.perturb(case, copy) is not None
    changed = run_cli("validate", case.model, copy, "--data", case.data, "--json")
    assert changed.code == 1, changed.stderr
    assert not changed.json["passed"] and changed.stderr == ""
