"""Device fixtures, built once per session: the tiny CNN as a torch.export program (dynamic batch) and as a traced
TorchScript archive, the hand-built MLP as ONNX, and (only for the tests that ask) a Keras model and its TFLite form.

`torch_cuda_reason` / `ort_cuda_reason` say why the gpu-marked tests cannot run here (None where they can): these
tests run wherever torch sees a CUDA device, and the onnxruntime ones where onnxruntime-gpu is installed too.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def torch_cuda_reason() -> str | None:
    """Why torch cannot run on CUDA here, or None."""
    import torch

    if not torch.version.cuda:
        return f"torch {torch.__version__} is a CPU-only build"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device"
    return None


def ort_cuda_reason() -> str | None:
    """Why onnxruntime cannot run on CUDA here, or None."""
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return f"onnxruntime {onnxruntime.__version__} has no CUDA provider (onnxruntime-gpu is not installed)"
    return torch_cuda_reason()


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    import torch

    from fixtures import onnx_graphs
    from fixtures.models import tiny_cnn

    out = tmp_path_factory.mktemp("device_models")
    cnn = tiny_cnn.build()
    image = tiny_cnn.example_inputs()["image"]
    ep = torch.export.export(cnn, (image,), dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1, max=64)}})
    torch.export.save(ep, out / "tiny_cnn.pt2")
    torch.jit.save(torch.jit.trace(cnn, image), out / "tiny_cnn.pt")
    return {"pt2": out / "tiny_cnn.pt2", "pt": out / "tiny_cnn.pt", "onnx": onnx_graphs.mlp(out / "mlp.onnx")}


@pytest.fixture(scope="session")
def tf_models(tmp_path_factory) -> dict[str, Path]:
    """The Keras image classifier of fixtures/tf_models.py and its TFLite form (TensorFlow imported here only)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    pytest.importorskip("tensorflow", reason="the tensorflow extra is not installed")
    from fixtures import tf_models as build

    out = tmp_path_factory.mktemp("device_tf")
    model = build.image_classifier()
    model.save(out / "classifier.keras")
    model.export(str(out / "classifier_savedmodel"), format="tf_saved_model", verbose=False)
    build._tflite(out / "classifier_savedmodel", out / "classifier.tflite")
    return {"keras": out / "classifier.keras", "tflite": out / "classifier.tflite"}
