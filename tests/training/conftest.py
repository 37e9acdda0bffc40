"""mdeploy.training's own fixtures: the digits CNN (fixtures/digits.py) trained on 400 images as the teacher, and a pool
of 400 other images with its outputs, built once per session."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits_teacher():  # noqa: ANN201
    """The digits CNN trained on the first 400 training images, as a TorchTeacher (input `image`, output `output`)."""
    from fixtures import digits
    from mdeploy.training import TorchTeacher

    x, _, y, _ = digits.load()
    return TorchTeacher(digits.train(x[:400], y[:400], epochs=30), ["image"])


@pytest.fixture(scope="session")
def digits_pool(digits_teacher):  # noqa: ANN001, ANN201
    from fixtures import digits
    from mdeploy.training import Dataset, teacher_outputs

    x, _, y, _ = digits.load()
    pool, labels = x[400:800], y[400:800]
    targets = teacher_outputs(digits_teacher, {"image": pool}, "output")
    return Dataset({"image": pool}, targets, labels)


def student(seed: int = 0):  # noqa: ANN201
    import torch

    from fixtures.models import digits_student

    torch.manual_seed(seed)
    return digits_student.build()


def partly_labelled(data, labelled: int):  # noqa: ANN001, ANN201
    """`data` with labels on its first `labelled` samples only (-1 on the others)."""
    from mdeploy.training import Dataset

    labels = np.full(len(data), -1, dtype=np.int64)
    labels[:labelled] = data.labels[:labelled]
    return Dataset(data.inputs, data.targets, labels)
