"""Bad input to `mdeploy distill`: exit 2, one `error:` line (and maybe a `hint:` line), nothing written."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import MODELS

STUDENTS = MODELS / "digits_student.py"


def _bad(cli, tmp_path, *args):  # noqa: ANN001, ANN202
    out = tmp_path / "student.onnx"
    r = cli("distill", "-o", out, *args)
    lines = r.stderr.strip().splitlines()
    assert r.code == 2, r.stderr
    assert lines[0].startswith("error: ") and len(lines) <= 2 and all(x.startswith(("error: ", "hint: ")) for x in lines), r.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    return lines


def test_student_class_count_differs(digits_kd, cli, tmp_path):
    lines = _bad(cli, tmp_path, "--teacher", digits_kd["onnx"], "--student", f"{STUDENTS}:wrong_classes", "--data", digits_kd["train"])
    assert "'output' is [2, 5]" in lines[0] and "'logits' is [2, 10]" in lines[0] and "class counts differ (10 vs 5)" in lines[0]


@pytest.mark.parametrize("factory, words", [("not_a_module", "returned dict, not a torch.nn.Module"),
                                            ("broken", "failed: RuntimeError: the student could not be built")])
def test_student_factory_that_fails(digits_kd, cli, tmp_path, factory, words):
    lines = _bad(cli, tmp_path, "--teacher", digits_kd["onnx"], "--student", f"{STUDENTS}:{factory}", "--data", digits_kd["train"])
    assert words in lines[0]


def test_data_keys_are_not_the_teachers_inputs(digits_kd, cli, tmp_path):
    with np.load(digits_kd["train"]) as data:
        np.savez(tmp_path / "pixels.npz", pixels=data["image"])
    lines = _bad(cli, tmp_path, "--teacher", digits_kd["onnx"], "--student", digits_kd["student"], "--data", tmp_path / "pixels.npz")
    assert "missing image" in lines[0] and "unknown pixels" in lines[0]


def test_labels_that_do_not_fit(digits_kd, cli, tmp_path):
    y = np.load(digits_kd["train_labels"])
    np.save(tmp_path / "short.npy", y[:10])
    np.save(tmp_path / "range.npy", y + 5)
    lines = _bad(cli, tmp_path, "--teacher", digits_kd["onnx"], "--student", digits_kd["student"], "--data", digits_kd["train"],
                 "--labels", tmp_path / "short.npy")
    assert "holds 10 labels for 1257 samples" in lines[0]
    lines = _bad(cli, tmp_path, "--teacher", digits_kd["onnx"], "--student", digits_kd["student"], "--data", digits_kd["train"],
                 "--labels", tmp_path / "range.npy")
    assert "class ids 5..14" in lines[0] and "scores 10 classes" in lines[0]


def test_nan_loss_stops_with_the_epoch_and_a_lower_lr(digits_kd, cli, tmp_path):
    lines = _bad(cli, tmp_path, "--teacher", digits_kd["onnx"], "--student", digits_kd["student"], "--data", digits_kd["train"],
                 "--lr", "1e30", "--epochs", "3")
    assert "the training loss became nan at epoch" in lines[0].lower()
    assert lines[1].startswith("hint: lower the learning rate (--lr 1e+29)")


def test_existing_output_needs_force(digits_kd, cli, tmp_path):
    out = tmp_path / "student.onnx"
    out.write_bytes(b"keep me")
    r = cli("distill", "-o", out, "--teacher", digits_kd["onnx"], "--student", digits_kd["student"], "--data", digits_kd["train"])
    assert r.code == 2 and r.stderr.startswith("error: output exists") and "--force" in r.stderr
    assert out.read_bytes() == b"keep me"
