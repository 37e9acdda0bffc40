"""ResNet-50-style CNN (bottleneck blocks [3, 4, 6, 3], 224x224, random weights built in code), static INT8:
mdeploy's defaults side by side with onnxruntime's quantize_static called with its defaults, both
calibrated on the same data. Prints size ratio, latency ratio int8/fp32 at 1 and 2 threads, and error.

    python benchmarks/quantize_cnn.py [WORKDIR] [--seconds S] [--calib N]

Targets: size <= 0.30x, error no worse than onnxruntime's defaults. Latency is judged against this CPU's own int8
kernel bound (a fixed ratio means nothing across CPUs with and without VNNI): benchmarks/int8_limit.py.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from _common import mdeploy_quantize, report


def build():  # noqa: ANN201
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, width: int, stride: int) -> None:
            super().__init__()
            cout = width * 4
            self.body = nn.Sequential(
                nn.Conv2d(cin, width, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.Conv2d(width, width, 3, stride, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.Conv2d(width, cout, 1, bias=False),
                nn.BatchNorm2d(cout),
            )
            self.skip = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                if stride != 1 or cin != cout
                else nn.Identity()
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.body(x) + self.skip(x))

    layers, cin = [], 64
    for i, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
        for b in range(blocks):
            layers.append(Bottleneck(cin, width, 2 if b == 0 and i > 0 else 1))
            cin = width * 4
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
        *layers,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(cin, 1000),
    ).eval()
    with torch.no_grad():  # trained-looking batch-norm statistics; last BN of each block small (as in trained ResNets)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.2, 0.6)
    return model


def images(n: int, seed: int) -> np.ndarray:
    """Smooth, image-like inputs (low-frequency noise, normalised), not white noise."""
    import torch

    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n, 3, 14, 14, generator=g)
    x = torch.nn.functional.interpolate(low, size=(224, 224), mode="bilinear", align_corners=False)
    return x.numpy().astype(np.float32)


def export(path: Path) -> None:
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            build(),
            (torch.zeros(1, 3, 224, 224),),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
        )


class Reader:
    """onnxruntime's CalibrationDataReader protocol over batches of 4 images."""

    def __init__(self, data: np.ndarray) -> None:
        self.batches = iter([{"image": data[i : i + 4]} for i in range(0, len(data), 4)])

    def get_next(self):  # noqa: ANN201
        return next(self.batches, None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", nargs="?")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--calib", type=int, default=32, help="calibration images")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-cnn-"))
    work.mkdir(parents=True, exist_ok=True)
    fp32, ours, ort_default = work / "resnet.onnx", work / "resnet_mdeploy.onnx", work / "resnet_ort_default.onnx"
    calib = work / "calib.npz"
    t = time.time()
    if not fp32.exists():
        export(fp32)
    np.savez(calib, image=images(args.calib, 1))
    print(f"exported {fp32} in {time.time() - t:.0f}s")
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    t = time.time()
    ours.unlink(missing_ok=True)
    for note in mdeploy_quantize(fp32, ours, calib_data=str(calib)):
        print("  mdeploy:", note)
    print(f"mdeploy quantize (static via --calib-data, defaults): {time.time() - t:.0f}s")
    t = time.time()
    reader = type("R", (Reader, CalibrationDataReader), {})(np.load(calib)["image"])
    quantize_static(str(fp32), str(ort_default), reader)
    print(f"onnxruntime quantize_static (defaults): {time.time() - t:.0f}s")
    feed = {"image": images(1, 2)}
    evals = [{"image": images(4, 3 + i)} for i in range(4)]
    report(
        "ResNet-50-style CNN, static INT8, batch 1, 224x224",
        fp32,
        {"mdeploy (defaults)": ours, "onnxruntime defaults": ort_default},
        feed,
        evals,
        args.seconds,
    )


if __name__ == "__main__":
    main()
