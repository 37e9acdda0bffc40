"""Fixtures built once per session: fixtures/census_graphs.py's CNN and depthwise models, float and statically
quantized by mdeploy's ONNX pass (its defaults), and the CNN again with conv0 excluded (census); the tiny GPT-like
decoder exported by torch (weight-only quantization, the preparation and the dynamic quantizer)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest


def quantize(src: Path, out: Path, calib: Path, **options) -> Path:
    from mdeploy.core import ModelRef
    from mdeploy.quantization.onnx_quantize import OnnxQuantize, OnnxQuantizeOptions

    OnnxQuantize().run(ModelRef.parse(str(src)), out, OnnxQuantizeOptions(calib_data=str(calib), **options))
    return out


@pytest.fixture(scope="session")
def census_models(tmp_path_factory) -> dict[str, Path]:
    from fixtures import census_graphs

    out = tmp_path_factory.mktemp("census")
    cnn = census_graphs.cnn(out / "cnn.onnx")
    calib = census_graphs.calibration(out / "cnn_calib.npz", (1, 3, 32, 32))
    dw = census_graphs.depthwise(out / "dw.onnx")
    dw_calib = census_graphs.calibration(out / "dw_calib.npz", (1, 32, 28, 28))
    return {
        "cnn": cnn,
        "cnn_int8": quantize(cnn, out / "cnn_int8.onnx", calib),
        "cnn_int8_excluded": quantize(cnn, out / "cnn_int8_excluded.onnx", calib, exclude=["conv0"]),
        "cnn_calib": calib,
        "dw": dw,
        "dw_int8": quantize(dw, out / "dw_int8.onnx", dw_calib),
    }


@pytest.fixture(scope="session")
def cnn_feed() -> dict[str, np.ndarray]:
    return {"image": np.random.default_rng(3).random((1, 3, 32, 32)).astype(np.float32)}


SEQ = 16


@pytest.fixture(scope="session")
def decoder(tmp_path_factory) -> dict[str, Path]:
    """The decoder as torch's TorchScript exporter writes it (input_ids 1x16), and held-out token ids to prove on."""
    import torch

    from fixtures.models import text_decoder

    out = tmp_path_factory.mktemp("weight_only")
    path = out / "decoder.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(text_decoder.build(), (torch.zeros(1, SEQ, dtype=torch.int64),), str(path), dynamo=False,
                          input_names=["input_ids"], output_names=["logits"], opset_version=17)
    ids = np.random.default_rng(7).integers(0, text_decoder.VOCAB, (8, SEQ)).astype(np.int64)
    np.savez(out / "ids.npz", input_ids=ids)
    return {"model": path, "data": out / "ids.npz"}
