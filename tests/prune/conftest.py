"""Prune fixtures, built once per session: the trained digits CNN as torch weights with its splits, a small training
subset without labels inside (its labels beside it, for --labels), and the digits CNN pruned to 0.4x MACs with no
recovery (the baseline that recovery must beat, and a run that misses its bar)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

RECOVERY_SAMPLES = 600  # of the 1,257 training images: enough for 3 epochs of distillation to win back the accuracy


@pytest.fixture(scope="session")
def digits_torch(tmp_path_factory) -> dict[str, Path]:
    from fixtures import prune_data

    out = tmp_path_factory.mktemp("digits_torch")
    paths = prune_data.build(out)
    train = np.load(paths["train"])
    paths["subset"] = out / "train_subset.npz"
    paths["subset_labels"] = out / "train_subset_labels.npy"
    np.savez(paths["subset"], image=train["image"][:RECOVERY_SAMPLES])
    np.save(paths["subset_labels"], train["labels"][:RECOVERY_SAMPLES])
    return paths


@pytest.fixture(scope="session")
def digits_unrecovered(tmp_path_factory, cli, digits_torch) -> tuple[Path, dict, Path]:
    """`--target-macs 0.4` without data, proved on the test split against a bar it misses (exit 1, still written)."""
    from fixtures import prune_data

    out = tmp_path_factory.mktemp("digits_unrecovered")
    result = cli("prune", prune_data.FACTORY, "--weights", digits_torch["weights"], "-o", out / "digits.onnx",
                 "--target-macs", "0.4", "--eval-data", digits_torch["test"], "--max-error", "accuracy-drop<=0.02",
                 "--save-weights", out / "digits.pt", "--no-benchmark", "--json")
    assert result.code == 1, result.stderr
    return out / "digits.onnx", result.json, out / "digits.pt"
