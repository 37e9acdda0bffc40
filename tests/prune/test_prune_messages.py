"""Bad training and evaluation data for `mdeploy prune`, refused before any pruning and named by the flag that gave it:
NaN/Inf in --data or --eval-data (a prune user has no teacher to blame), labels that are not integer class ids from
--labels, --eval-labels or a `labels` array inside the data. Exit 2, one `error:` line naming the flag and the file, a
`hint:` line, no traceback, nothing written, the inputs unchanged."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from tests.checks import assert_clean_error


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _refused(cli, digits_torch, tmp_path, *args) -> list[str]:
    from fixtures import prune_data

    out = tmp_path / "out"
    out.mkdir()
    result = cli("prune", prune_data.FACTORY, "--weights", digits_torch["weights"], "-o", out / "pruned.onnx",
                 "--no-benchmark", "--epochs", "1", *args)
    assert_clean_error(result, hint=True, folder=out)
    return result.stderr.strip().splitlines()


def _with_holes(source, target):
    with np.load(source) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["image"] = arrays["image"].copy()
    arrays["image"][5, 0, 2, 2] = np.nan
    arrays["image"][40, 0, 0, 1] = -np.inf
    np.savez(target, **arrays)
    return target


@pytest.mark.parametrize("flag", ["--data", "--eval-data"])
def test_nan_in_the_data_names_the_flag_not_a_teacher(cli, digits_torch, tmp_path, flag):
    bad = _with_holes(digits_torch["subset"] if flag == "--data" else digits_torch["test"], tmp_path / "holes.npz")
    before = _digest(bad)
    lines = _refused(cli, digits_torch, tmp_path, flag, bad)
    assert f"{flag} {bad}: array 'image' holds 2 NaN/Inf values (the first in sample 5)" in lines[0]
    assert "teacher" not in lines[0] and flag in lines[1]
    assert _digest(bad) == before


@pytest.mark.parametrize(("data_flag", "flag"), [("--data", "--labels"), ("--eval-data", "--eval-labels")])
def test_float_labels_name_the_flag(cli, digits_torch, tmp_path, data_flag, flag):
    data = digits_torch["subset"] if data_flag == "--data" else digits_torch["test"]
    with np.load(data) as arrays:
        n = len(arrays["image"])
    labels = tmp_path / "float_labels.npy"
    np.save(labels, np.zeros(n, np.float32))
    lines = _refused(cli, digits_torch, tmp_path, data_flag, data, flag, labels)
    assert f"{flag} {labels} must be a 1-D integer array (class ids), got float32 [{n}]" in lines[0]
    assert "astype(np.int64)" in lines[1]


def test_float_labels_inside_the_data_name_the_array_and_the_flag(cli, digits_torch, tmp_path):
    with np.load(digits_torch["train"]) as train:
        x, y = train["image"][:100], train["labels"][:100]
    bad = tmp_path / "float_inside.npz"
    np.savez(bad, image=x, labels=y.astype(np.float64))
    lines = _refused(cli, digits_torch, tmp_path, "--data", bad)
    assert f"the `labels` array in --data {bad} must be a 1-D integer array (class ids), got float64 [100]" in lines[0]
