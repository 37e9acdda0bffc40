"""Distillation fixtures, built once per session: the digits CNN trained on scikit-learn's digits (fixtures/digits.py)
as an ONNX teacher and as a FILE.py:FACTORY teacher with its state_dict, and the training data split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import MODELS

STUDENT = f"{MODELS / 'digits_student.py'}:build"


@pytest.fixture(scope="session")
def digits_kd(tmp_path_factory) -> dict[str, Path | str]:
    import torch

    from fixtures import digits
    from fixtures.models import digits_teacher

    out = tmp_path_factory.mktemp("distill")
    x_train, x_test, y_train, y_test = digits.load()
    trained = digits.train(x_train, y_train)
    teacher = digits_teacher.build()
    teacher.net.load_state_dict(trained.state_dict())
    torch.save(teacher.state_dict(), out / "teacher.pt")
    digits.export(trained, out / "teacher.onnx", None)
    np.savez(out / "train.npz", image=x_train)
    np.save(out / "train_labels.npy", y_train)
    np.savez(out / "test.npz", image=x_test)
    np.save(out / "test_labels.npy", y_test)
    np.save(out / "test_images.npy", x_test)
    return {
        "dir": out,
        "onnx": out / "teacher.onnx",
        "factory": f"{MODELS / 'digits_teacher.py'}:build",
        "weights": out / "teacher.pt",
        "train": out / "train.npz",
        "train_labels": out / "train_labels.npy",
        "test": out / "test.npz",
        "test_labels": out / "test_labels.npy",
        "test_images": out / "test_images.npy",
        "student": STUDENT,
    }
