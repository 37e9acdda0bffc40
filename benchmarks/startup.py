"""How much start-up mdeploy costs: `mdeploy --help` and `mdeploy inspect x.onnx` against `python -c pass`.

Prints the median wall time of several runs of each, and its ratio to the bare interpreter, measured side by
side in one run (the machine is shared and noisy: ratios, not absolute times, are what to compare).

    python benchmarks/startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def tiny_onnx(folder: Path) -> Path:
    """A two-node ONNX model built with onnx.helper (no torch needed)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [weight],
    )
    path = folder / "tiny.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10  # what onnxruntime 1.31 reads (onnx 1.23 writes 14 by default)
    onnx.save(model, str(path))
    return path


def median_seconds(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_onnx(Path(tmp))
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "mdeploy --help": [sys.executable, "-m", "mdeploy", "--help"],
            "mdeploy inspect tiny.onnx": [sys.executable, "-m", "mdeploy", "inspect", str(model)],
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        }
        # interleave the commands so that noise on the machine hits them all alike
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, cmd in commands.items():
                samples[name].append(median_seconds(cmd, 1))
    base = statistics.median(samples["python -c pass"])
    print(f"{'command':32} {'median s':>9} {'x python':>9}")
    for name, values in samples.items():
        m = statistics.median(values)
        print(f"{name:32} {m:9.3f} {m / base:9.1f}")


if __name__ == "__main__":
    main()
