"""Bad input to `mdeploy distill`: exit 2, one `error:` line (and maybe a `hint:` line), nothing written."""

from __future__ import annotations

import numpy as np
import pytest

from tests.checks import assert_clean_error
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


def _named(lines: list[str], *words: str) -> None:
    """The error line names each of `words` (the flag and its bad value), and a hint follows."""
    assert all(w in lines[0] for w in words), lines
    assert len(lines) == 2 and lines[1].startswith("hint: "), lines


def test_student_class_count_differs(digits_kd, cli, tmp_path):
    """Said one way, the student's first: its shape, the teacher's, both class counts, and the fix."""
    lines = _bad(cli, tmp_path, "--teacher", digits_kd["onnx"], "--student", f"{STUDENTS}:wrong_classes", "--data", digits_kd["train"])
    assert lines[0] == ("error: the student's output 'output' is [2, 5] and the teacher's 'logits' is [2, 10] on a batch of "
                        "2: the student scores 5 classes, the teacher 10")
    assert lines[1] == f"hint: build the student ({STUDENTS}:wrong_classes) with 10 classes in its last layer"


def test_output_is_the_written_file_and_teacher_output_the_distilled_one(digits_kd, cli, tmp_path):
    """`--output` is `-o`'s long name, as in every verb; the teacher output to distill is `--teacher-output`."""
    out = tmp_path / "student.onnx"
    r = cli("distill", "--output", out, "--teacher", digits_kd["onnx"], "--student", digits_kd["student"],
            "--data", digits_kd["train"], "--teacher-output", "nosuch")
    assert_clean_error(r, hint=True)
    lines = r.stderr.strip().splitlines()
    assert lines == ["error: --teacher-output 'nosuch' is not an output of the teacher", "hint: its outputs are: logits"]
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_a_missing_teacher_names_the_flag(digits_kd, cli, tmp_path, device):
    lines = _bad(cli, tmp_path, "--teacher", tmp_path / "nope.onnx", "--student", digits_kd["student"], "--data",
                 digits_kd["train"], "--device", device)
    _named(lines, "--teacher:", "model not found", "nope.onnx")


@pytest.mark.parametrize(("flag", "words"), [
    ("--teacher-weights", ["--teacher-weights:", "gone.pt"]),
    ("--student-weights", ["--student-weights:", "gone.pt"]),
])
def test_missing_weights_name_their_flag(digits_kd, cli, tmp_path, flag, words):
    teacher = ["--teacher", digits_kd["factory"]] if flag == "--teacher-weights" else ["--teacher", digits_kd["onnx"]]
    lines = _bad(cli, tmp_path, *teacher, "--student", digits_kd["student"], "--data", digits_kd["train"],
                 flag, tmp_path / "gone.pt")
    _named(lines, *words)


def test_a_missing_student_names_the_flag(digits_kd, cli, tmp_path):
    lines = _bad(cli, tmp_path, "--teacher", digits_kd["onnx"], "--student", f"{tmp_path / 'gone.py'}:build",
                 "--data", digits_kd["train"])
    _named(lines, "--student:", "gone.py")


@pytest.mark.parametrize("flag", ["--data", "--eval-data"])
def test_data_holding_nan_names_its_flag_not_the_teacher(digits_kd, cli, tmp_path, flag):
    with np.load(digits_kd["train"]) as data:
        x = data["image"].copy()
    x[7, 0, 3, 3] = np.nan
    x[9, 0, 0, 0] = np.inf
    bad = tmp_path / "holes.npz"
    np.savez(bad, image=x)
    data = ["--data", bad] if flag == "--data" else ["--data", digits_kd["train"], "--eval-data", bad]
    lines = _bad(cli, tmp_path, "--teacher", digits_kd["onnx"], "--student", digits_kd["student"], *data)
    _named(lines, f"{flag} {bad}", "'image' holds 2 NaN/Inf values", "sample 7")
    assert "teacher" not in lines[0]
    assert bad.exists()


def test_float_labels_name_their_flag(digits_kd, cli, tmp_path):
    y = np.load(digits_kd["train_labels"])
    np.save(tmp_path / "float.npy", y.astype(np.float32))
    lines = _bad(cli, tmp_path, "--teacher", digits_kd["onnx"], "--student", digits_kd["student"], "--data", digits_kd["train"],
                 "--labels", tmp_path / "float.npy")
    _named(lines, f"--labels {tmp_path / 'float.npy'}", "integer", "float32 [1257]")
    assert "astype(np.int64)" in lines[1]
    with np.load(digits_kd["train"]) as data:
        np.savez(tmp_path / "inside.npz", image=data["image"], labels=y.astype(np.float64))
    lines = _bad(cli, tmp_path, "--teacher", digits_kd["onnx"], "--student", digits_kd["student"], "--data",
                 tmp_path / "inside.npz")
    _named(lines, f"the `labels` array in --data {tmp_path / 'inside.npz'}", "float64 [1257]")


def test_a_teacher_that_overflows_on_finite_data_is_named_as_such(digits_kd, cli, tmp_path):
    """Finite data, a teacher computing Inf (its logits scaled past float32's largest number): the error says the
    teacher computes it, not that the data holds it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Flatten", ["image"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["scores"]),
         helper.make_node("Mul", ["scores", "k"], ["logits"])],
        "overflows",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(np.ones((64, 10), np.float32), "w"), numpy_helper.from_array(np.float32(1e38), "k")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    teacher = tmp_path / "overflows.onnx"
    onnx.save(model, str(teacher))
    lines = _bad(cli, tmp_path, "--teacher", teacher, "--student", digits_kd["student"], "--data", digits_kd["train"])
    _named(lines, "the teacher computes NaN/Inf in 'logits'", "on this data")


@pytest.mark.parametrize("factory, words", [("not_a_module", "returned dict, not a torch.nn.Module"),
                                            ("broken", "failed: RuntimeError: the student could not be built")])
def test_student_factory_that_fails(digits_kd, cli, tmp_path, factory, words):
    lines = _bad(cli, tmp_path, "--teacher", digits_kd["onnx"], "--student", f"{STUDENTS}:{factory}", "--data", digits_kd["train"])
    assert words in lines[0]


def test_data_keys_are_not_the_teachers_inputs(digits_kd, cli, tmp_path):
    """Two arrays for a one-input teacher, neither named as its input (one array alone would feed the only input,
    with a note)."""
    with np.load(digits_kd["train"]) as data:
        np.savez(tmp_path / "pixels.npz", pixels=data["image"], rows=data["image"][:, 0, 0, :])
    lines = _bad(cli, tmp_path, "--teacher", digits_kd["onnx"], "--student", digits_kd["student"], "--data", tmp_path / "pixels.npz")
    assert "--data" in lines[0] and "missing image" in lines[0] and "unknown pixels, rows" in lines[0]


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


def test_partial_labels_that_do_not_fit(digits_kd, cli, tmp_path):
    """100 labels for a pool of 1257 without --labelled-data, every label -1, a class id below -1, --labelled-data
    without class ids: each refused before training, naming the flag."""
    y = np.load(digits_kd["train_labels"])
    np.save(tmp_path / "hundred.npy", y[:100])
    np.save(tmp_path / "none.npy", np.full(len(y), -1))
    np.save(tmp_path / "minus2.npy", np.where(np.arange(len(y)) < 5, -2, y))
    common = ("--teacher", digits_kd["onnx"], "--student", digits_kd["student"], "--data", digits_kd["train"])
    lines = _bad(cli, tmp_path, *common, "--labels", tmp_path / "hundred.npy")
    _named(lines, "--labels holds 100 labels for 1257 samples of --data")
    assert "-1 where a sample has none" in lines[1] and "--labelled-data L.npz --labels y.npy" in lines[1]
    lines = _bad(cli, tmp_path, *common, "--labels", tmp_path / "none.npy")
    _named(lines, "--labels labels none of the 1257 samples")
    lines = _bad(cli, tmp_path, *common, "--labels", tmp_path / "minus2.npy")
    _named(lines, "class ids -2..9", "-1: no label")
    with np.load(digits_kd["train"]) as data:
        np.savez(tmp_path / "labelled.npz", image=data["image"][:50])
    lines = _bad(cli, tmp_path, *common, "--labelled-data", tmp_path / "labelled.npz")
    _named(lines, "--labelled-data has no class ids")
    lines = _bad(cli, tmp_path, *common, "--labelled-data", tmp_path / "labelled.npz", "--labels", tmp_path / "hundred.npy")
    _named(lines, "--labels holds 100 labels for 50 samples of --labelled-data")
