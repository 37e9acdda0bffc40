"""Structured vs unstructured pruning, and prune + quantize, on a ResNet-style CNN: MACs and onnxruntime latency.

    python benchmarks/prune_cnn.py

A ResNet-style CNN (residual blocks with BatchNorm, 64-128-256 channels, 64x64 input) built from code; every model
goes through the real CLI (`mdeploy prune`, `mdeploy quantize`), then all are timed side by side in one process
(batch 1, 2 threads, rounds alternating between models, so a noisy machine slows all alike). Prints CPU flags.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = '''
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) if stride > 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return torch.relu(self.skip(x) + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.layers = nn.Sequential(Block(64, 64, 1), Block(64, 64, 1), Block(64, 128, 2), Block(128, 128, 1),
                                    Block(128, 256, 2), Block(256, 256, 1))
        self.head = nn.Linear(256, 10)

    def forward(self, image):
        return self.head(self.layers(self.stem(image)).mean((2, 3)))


def build():
    torch.manual_seed(0)
    net = Net()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2); m.running_var.uniform_(0.5, 1.5); m.weight.data.uniform_(0.5, 1.5)
    return net.eval()


def example_inputs():
    return {"image": torch.randn(1, 3, 64, 64)}
'''


def cli(*args: object) -> dict:
    proc = subprocess.run([sys.executable, "-m", "mdeploy", *map(str, args), "--json"], capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"mdeploy {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return json.loads(proc.stdout)


def main() -> None:
    from mdeploy.machine import cpu_flags
    from mdeploy.measuring.latency import side_by_side

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "resnet.py").write_text(MODEL)
        src = f"{work / 'resnet.py'}:build"
        structured = cli("prune", src, "-o", work / "structured.onnx", "--sparsity", "0.5", "--no-benchmark")
        masked = cli("prune", src, "-o", work / "masked.onnx", "--method", "unstructured", "--sparsity", "0.8", "--global",
                     "--no-benchmark")
        cli("convert", src, "-o", work / "original.onnx", "--dynamic", "image:0")
        cli("quantize", work / "original.onnx", "-o", work / "quantized.onnx", "--calib-samples", "32")
        cli("quantize", work / "structured.onnx", "-o", work / "pruned_quantized.onnx", "--calib-samples", "32")
        names = ["original", "structured", "masked", "quantized", "pruned_quantized"]
        timings = side_by_side([work / f"{n}.onnx" for n in names], threads=2, runs=400, runs_per_turn=10)
    base = timings[0]["median_ms"]
    print(f"CPU flags: {' '.join(cpu_flags()) or 'none found'}")
    print(f"MACs: structured 50% channels {structured['macs']['ratio']:.3f}x; unstructured 80% {masked['macs']['ratio']:.3f}x")
    print("onnxruntime, batch 1, 2 threads, side by side (median of 400 runs each):")
    for name, t in zip(names, timings):
        print(f"  {name:<18} {t['median_ms']:8.3f} ms  {t['median_ms'] / base:6.3f}x  (p90 {t['p90_ms']:.3f} ms)")


if __name__ == "__main__":
    main()
