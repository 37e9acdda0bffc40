"""`mdeploy distill` through the real CLI on the digits CNN (a real trained classifier) and a small MLP student:
an ONNX teacher, a torch FILE.py:FACTORY teacher, a Keras teacher; the bar; --save-weights; SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

EPOCHS = "8"


def _leftovers(folder) -> list[str]:  # noqa: ANN001
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_onnx_teacher_with_labels_writes_a_proven_student_and_its_weights(digits_kd, cli, tmp_path):
    out, weights = tmp_path / "student.onnx", tmp_path / "student.pt"
    r = cli("distill", "--teacher", digits_kd["onnx"], "--student", digits_kd["student"], "-o", out, "--data", digits_kd["train"],
            "--labels", digits_kd["train_labels"], "--epochs", EPOCHS, "--save-weights", weights, "--json")
    assert r.code == 0, r.stderr
    report = r.json
    assert report["command"] == "distill" and report["passed"] is True
    assert report["loss"] == "kd" and report["distilled_output"] == "logits"
    acc = report["accuracy"]
    assert acc["samples"] == 189 and acc["teacher"] > 0.95 and acc["student"] > 0.85, acc
    (comparison,) = report["comparisons"]
    (logits,) = comparison["outputs"]
    assert logits["top1_agreement"] > 0.85
    models = report["models"]
    assert models["student"]["parameters"] == 64 * 32 + 32 + 32 * 10 + 10
    assert models["teacher"]["parameters"] > 10 * models["student"]["parameters"]
    assert models["student"]["size_bytes"] < models["teacher"]["size_bytes"]
    assert models["student"]["latency_ms_median"] > 0 and models["teacher"]["latency_ms_median"] > 0
    assert report["training"]["best_epoch"] >= 1 and len(report["steps"]) >= 4
    assert _leftovers(tmp_path) == []

    # the state_dict reproduces the exported student: FACTORY --weights through mdeploy validate
    v = cli("validate", digits_kd["student"], out, "--weights", weights, "--data", digits_kd["test_images"], "--json")
    assert v.code == 0, v.stderr + v.stdout
    # and on the test split the student is a real classifier
    import onnxruntime as ort

    with np.load(digits_kd["test"]) as data:
        x = data["image"]
    y = np.load(digits_kd["test_labels"])
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    pred = session.run(None, {session.get_inputs()[0].name: x})[0].argmax(1)
    assert (pred == y).mean() > 0.85


def test_torch_factory_teacher_without_labels_misses_an_impossible_bar_and_still_writes(digits_kd, cli, tmp_path):
    out = tmp_path / "student.onnx"
    r = cli("distill", "--teacher", digits_kd["factory"], "--teacher-weights", digits_kd["weights"], "--student",
            digits_kd["student"], "-o", out, "--data", digits_kd["train"], "--eval-data", digits_kd["test"],
            "--epochs", "3", "--max-error", "top1>=0.9999,cosine>=0.9999", "--json")
    assert r.code == 1, r.stderr
    report = r.json
    assert report["passed"] is False
    missed = report["max_error"].pop("missed")  # prune's record and distill's are one (validation/bar.py: Verdict)
    assert report["max_error"] == {"bar": "top1>=0.9999,cosine>=0.9999", "met": False}
    assert [m.split()[0] for m in missed] == ["top1", "cosine"]
    assert "accuracy" not in report  # no labels: pure distillation on the teacher's soft targets
    assert report["training"]["metric"] == "agreement"
    assert report["training"]["held_out"].endswith("test.npz")
    assert out.is_file()
    failed = [s for s in report["steps"] if s["status"] == "failed"]
    assert [s["name"] for s in failed] == ["validate", "max-error top1>=0.9999,cosine>=0.9999"]  # judged by the bar


def test_keras_teacher(digits_kd, cli, tmp_path):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((1, 8, 8), name="image")
    hidden = keras.layers.Dense(48, activation="relu")(keras.layers.Flatten()(inp))
    model = keras.Model(inp, keras.layers.Dense(10, name="logits")(hidden))
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with np.load(digits_kd["train"]) as data:
        x = data["image"]
    model.fit(x, np.load(digits_kd["train_labels"]), epochs=15, batch_size=64, verbose=0)
    model.save(tmp_path / "teacher.keras")
    out = tmp_path / "student.onnx"
    r = cli("distill", "--teacher", tmp_path / "teacher.keras", "--student", digits_kd["student"], "-o", out,
            "--data", digits_kd["train"], "--labels", digits_kd["train_labels"], "--epochs", EPOCHS, "--json")
    assert r.code == 0, r.stderr
    report = r.json
    assert report["models"]["teacher"]["format"] == "keras"
    assert report["accuracy"]["teacher"] > 0.9 and report["accuracy"]["student"] > 0.8, report["accuracy"]
    assert out.is_file()


def test_sigterm_keeps_nothing_and_reports_the_best_checkpoint(digits_kd, tmp_path):
    out = tmp_path / "student.onnx"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mdeploy", "distill", "--teacher", str(digits_kd["onnx"]), "--student", digits_kd["student"],
         "-o", str(out), "--data", str(digits_kd["train"]), "--epochs", "500", "--patience", "500", "--batch-size", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        if "epoch 2/500" in line:
            break
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=60)[1]
    stderr = "".join(lines) + rest
    assert proc.returncode == 130, stderr
    assert "best checkpoint: epoch" in stderr and "nothing written" in stderr
    assert "Traceback" not in stderr
    assert not out.exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize("extra", [["--seed", "3"]])
def test_same_seed_same_student(digits_kd, tmp_path, extra):
    import torch

    from mdeploy import api

    states = []
    for i in range(2):
        weights = tmp_path / f"w{i}.pt"
        report = api.distill(str(digits_kd["onnx"]), digits_kd["student"], str(tmp_path / f"s{i}.onnx"), str(digits_kd["train"]),
                             epochs=2, seed=3, save_weights=str(weights))
        assert report
        states.append(torch.load(weights, weights_only=True))
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def _pool(digits_kd, samples: int, labelled: int):  # noqa: ANN001, ANN202
    """The first `samples` training images as a pool, labelled on the first `labelled` (-1 on the others)."""
    with np.load(digits_kd["train"]) as data:
        x = data["image"][:samples]
    y = np.load(digits_kd["train_labels"])[:samples]
    partial = np.where(np.arange(samples) < labelled, y, -1)
    return x, y, partial


def test_labels_for_some_samples_a_drop_in_student_and_a_clean_temp_folder(digits_kd, cli, tmp_path):
    """-1 marks the unlabelled samples; the ONNX student takes the teacher's names and axes, so `validate TEACHER
    STUDENT` pairs them by name; nothing is left in the temp folder (onnxruntime's .ses, torch's torchinductor_*)."""
    x, _, partial = _pool(digits_kd, 300, 60)
    np.savez(tmp_path / "pool.npz", image=x)
    np.save(tmp_path / "partial.npy", partial)
    temp = tmp_path / "temp"
    temp.mkdir()
    out = tmp_path / "student.onnx"
    r = cli("distill", "--teacher", digits_kd["onnx"], "--student", digits_kd["student"], "-o", out, "--data",
            tmp_path / "pool.npz", "--labels", tmp_path / "partial.npy", "--steps", "60", "--patience", "2", "--json",
            env={"TMPDIR": str(temp)})
    assert r.code == 0, r.stderr
    report = r.json
    assert report["labelled"] == {"--labels": 60}
    assert any(n.startswith("labels for 60 of 300 training samples") for n in report["notes"])
    training = report["training"]
    assert training["metric"] == "agreement" and "accuracy" in training["best"]  # chosen by agreement, accuracy beside
    assert training["held_out"] == "45 samples of --data (15%, seed 0)"
    assert report["accuracy"]["samples"] == 9  # the labelled held-out samples: 15% of 60
    refit = training["refit"]
    assert refit["history"][-1]["lr"] == 0.0 and refit["history"][-1]["step"] == refit["steps"]
    assert report["comparisons"][0]["label"] == "student vs teacher on the 45 held-out samples, which the refit trained on"
    assert list(temp.iterdir()) == []
    assert training["config"]["mixup"] == 1.0  # function matching, by default

    import onnxruntime as ort

    student, teacher = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (out, digits_kd["onnx"]))
    for a, b in ((student.get_inputs(), teacher.get_inputs()), (student.get_outputs(), teacher.get_outputs())):
        assert [(v.name, v.shape) for v in a] == [(v.name, v.shape) for v in b] == [(a[0].name, ["batch", *a[0].shape[1:]])]
    v = cli("validate", digits_kd["onnx"], out, "--data", digits_kd["test_images"], "--atol", "1000", "--json")
    assert v.code == 0, v.stderr + v.stdout
    notes = [n for c in v.json["comparisons"] for n in c["notes"]] + v.json["notes"]
    assert not [n for n in notes if "matched by position" in n], notes


def test_labelled_data_beside_an_unlabelled_pool(digits_kd, cli, tmp_path):
    x, y, _ = _pool(digits_kd, 300, 0)
    np.savez(tmp_path / "pool.npz", image=x[60:])
    np.savez(tmp_path / "labelled.npz", image=x[:60])
    np.save(tmp_path / "y.npy", y[:60])
    out = tmp_path / "student.onnx"
    r = cli("distill", "--teacher", digits_kd["onnx"], "--student", digits_kd["student"], "-o", out, "--data",
            tmp_path / "pool.npz", "--labelled-data", tmp_path / "labelled.npz", "--labels", tmp_path / "y.npy",
            "--steps", "30", "--no-refit", "--keep-student-names", "--no-mixup", "--json")
    assert r.code == 0, r.stderr
    report = r.json
    assert report["training"]["config"]["mixup"] == 0.0 and not [n for n in report["notes"] if "mixup" in n]
    assert report["labelled"] == {"--labels": 60} and report["accuracy"]["samples"] == 9
    assert any(n.startswith("labels for 60 of 300 training samples") for n in report["notes"])
    import onnxruntime as ort

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]  # --keep-student-names: the student's own


def test_help_shows_percent_signs_once(cli):
    r = cli("distill", "--help")
    assert r.code == 0 and "15%" in r.stdout and "85%" in r.stdout and "%%" not in r.stdout



def test_a_teacher_with_a_fixed_batch_is_not_asked_for_mixups(digits_kd, cli, tmp_path):
    """Mixup runs the teacher on the training batches (training/augment.py), which a teacher with a fixed batch cannot
    take: it is off there, with a note saying why (the default's --mixup and --no-mixup: the tests above)."""
    import torch

    from fixtures import digits
    from fixtures.models import digits_teacher

    x, _, _ = _pool(digits_kd, 136, 0)
    np.savez(tmp_path / "pool.npz", image=x[:96])
    np.savez(tmp_path / "eval.npz", image=x[96:])  # 40 samples: batches of 8 for the proof
    fixed = digits_teacher.build()
    fixed.load_state_dict(torch.load(digits_kd["weights"], weights_only=True))
    digits.export(fixed.net, tmp_path / "fixed8.onnx", 8)
    r = cli("distill", "--teacher", tmp_path / "fixed8.onnx", "--student", digits_kd["student"], "-o",
            tmp_path / "student.onnx", "--data", tmp_path / "pool.npz", "--eval-data", tmp_path / "eval.npz", "--steps", "5",
            "--json")
    assert r.code == 0, r.stderr
    assert r.json["training"]["config"]["mixup"] == 0.0
    assert "no mixup: the teacher takes a fixed batch of 8; the student learns the teacher's outputs on --data as they " \
           "are" in r.json["notes"]


def test_fully_labelled_data_trains_without_mixup_by_default_and_its_own_schedule(digits_kd, cli, tmp_path):
    """Mixup is distill's default where samples lack labels (the tests above); where every sample has one it is off
    (training/augment.by_default), with the shorter schedule, unless --mixup asks for it."""
    from mdeploy.verbs import distill

    x, y, _ = _pool(digits_kd, 200, 200)
    np.savez(tmp_path / "all.npz", image=x, labels=y)
    args = ["distill", "--teacher", digits_kd["onnx"], "--student", digits_kd["student"], "--data", tmp_path / "all.npz",
            "--patience", "1", "--no-refit", "--json"]
    r = cli(*args, "-o", tmp_path / "a.onnx")
    assert r.code == 0, r.stderr
    config = r.json["training"]["config"]
    assert config["mixup"] == 0.0 and config["steps"] == distill.STEPS_NO_MIXUP
    assert "no mixup: every --data sample is labelled (give --mixup to train on mixups anyway)" in r.json["notes"]
    asked = cli(*args, "-o", tmp_path / "b.onnx", "--mixup")
    assert asked.code == 0, asked.stderr
    assert asked.json["training"]["config"]["mixup"] == 1.0 and asked.json["training"]["config"]["steps"] == distill.STEPS
    assert not [n for n in asked.json["notes"] if "mixup" in n]
