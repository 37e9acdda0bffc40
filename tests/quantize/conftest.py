"""Quantization fixtures, built once per session: the digits classifier (trained on scikit-learn's digits)
and tiny hand-built ONNX graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> dict[str, Path]:
    from fixtures import digits as digits_fixture

    out = tmp_path_factory.mktemp("digits")
    paths = digits_fixture.build(out)
    paths["torch_accuracy"] = out / "digits_accuracy.txt"
    with np.load(paths["eval"]) as data:
        np.savez(out / "eval_images.npz", image=data["image"])
        np.save(out / "eval_labels.npy", data["labels"])
    paths["eval_images"], paths["eval_labels"] = out / "eval_images.npz", out / "eval_labels.npy"
    return paths


@pytest.fixture(scope="session")
def graphs(tmp_path_factory) -> dict[str, Path]:
    from fixtures import onnx_graphs

    out = tmp_path_factory.mktemp("graphs")
    return {
        "mlp": onnx_graphs.mlp(out / "mlp.onnx"),
        "transposed": onnx_graphs.mlp(out / "transposed.onnx", transposed=True),
        "data": onnx_graphs.mlp_data(out / "mlp_data.npz"),
    }


@pytest.fixture(scope="session")
def static_digits(digits, tmp_path_factory, cli):
    """The digits model quantized once with the CLI's defaults (static, from calibration data)."""
    out = tmp_path_factory.mktemp("static") / "digits_int8.onnx"
    result = cli("quantize", digits["model"], "-o", out, "--calib-data", digits["calib"], "--eval-data", digits["eval"], "--json")
    return out, result


@pytest.fixture(scope="session")
def encoder_dynamo(tmp_path_factory) -> Path:
    """fixtures/models/text_encoder.py (torch TransformerEncoder, padding mask) through torch's default (dynamo) exporter."""
    import warnings

    import torch

    from fixtures.models import text_encoder

    path = tmp_path_factory.mktemp("encoder") / "encoder.onnx"
    batch, seq = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("sequence", min=2, max=text_encoder.MAX_LEN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            text_encoder.build(),
            (),
            str(path),
            kwargs=text_encoder.example_inputs(),
            dynamo=True,
            dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
        )
    return path
