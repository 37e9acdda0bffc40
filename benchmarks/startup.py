"""What mdeploy's start-up costs: `mdeploy --help` and every `mdeploy VERB --help`, side by side with the floors.

Measures the CPU time (user + system, of the child process alone: os.wait4) of each command, the median of
`--runs` runs, the commands interleaved so that noise on a shared machine hits them all alike. Beside mdeploy:

- `python -c pass`: the bare interpreter (with this venv's site: the editable install's finder is in it too);
- `import typer + its rich help formatter`: what any typer CLI with rich help pays before it does anything;
- `optimum-cli --help` (`--optimum-cli PATH`, or $OPTIMUM_CLI, or one on PATH): an argparse CLI of the same trade.

The target (issue 16): `mdeploy --help` and every `mdeploy VERB --help` at most 1.5x `optimum-cli --help`'s CPU time
when optimum-cli is there, else at most 4x `python -c pass`. `mdeploy inspect tiny.onnx` (numpy, onnx and
onnxruntime load, as they must) and `python -c 'import torch'` are shown for scale, outside the target.

Children run with bytecode caching on (as a pip install has it), each command once untimed first. The figures are
ratios measured in one run: compare them, not the milliseconds, across machines.

    python benchmarks/startup.py [--runs 9] [--optimum-cli /tmp/optvenv/bin/optimum-cli] [--no-torch]

`python -X importtime -m mdeploy VERB --help` shows what loads.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_X_OPTIMUM = 1.5
TARGET_X_PYTHON = 4.0
FLOOR = "import typer + rich help formatter"


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


def cpu_and_wall(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """CPU seconds (user + system) of the child alone, and wall seconds; a command that fails is an error."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read() if proc.stderr else b""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
    return usage.ru_utime + usage.ru_stime, wall


def commands(model: Path, optimum: str | None, torch: bool) -> dict[str, list[str]]:
    from mdeploy.cli.app import COMMANDS

    py = sys.executable
    found = {
        "python -c pass": [py, "-c", "pass"],
        FLOOR: [py, "-c", "import typer, typer.rich_utils"],
    }
    if optimum:
        found["optimum-cli --help"] = [optimum, "--help"]
    found["mdeploy --help"] = [py, "-m", "mdeploy", "--help"]
    for verb in COMMANDS:
        found[f"mdeploy {verb} --help"] = [py, "-m", "mdeploy", verb, "--help"]
    found["mdeploy report merge --help"] = [py, "-m", "mdeploy", "report", "merge", "--help"]
    found["mdeploy inspect tiny.onnx"] = [py, "-m", "mdeploy", "inspect", str(model)]
    if torch:
        found["python -c 'import torch'"] = [py, "-c", "import torch"]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--optimum-cli", default=os.environ.get("OPTIMUM_CLI") or shutil.which("optimum-cli"),
                        help="optimum-cli to compare with (install it in a venv of its own; default $OPTIMUM_CLI or PATH)")
    parser.add_argument("--no-torch", action="store_true", help="skip `python -c 'import torch'` (seconds per run)")
    args = parser.parse_args()
    from mdeploy.machine import describe

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["COLUMNS"] = "120"  # the same help text however this script is run
    with tempfile.TemporaryDirectory() as tmp:
        cmds = commands(tiny_onnx(Path(tmp)), args.optimum_cli, not args.no_torch)
        for cmd in cmds.values():  # untimed: writes the bytecode caches, warms the file cache
            cpu_and_wall(cmd, env)
        cpu: dict[str, list[float]] = {name: [] for name in cmds}
        wall: dict[str, list[float]] = {name: [] for name in cmds}
        for _ in range(args.runs):
            for name, cmd in cmds.items():
                c, w = cpu_and_wall(cmd, env)
                cpu[name].append(c)
                wall[name].append(w)
    med = {name: statistics.median(v) for name, v in cpu.items()}
    base, optimum = med["python -c pass"], med.get("optimum-cli --help")
    ref, limit = (optimum, TARGET_X_OPTIMUM) if optimum else (base, TARGET_X_PYTHON)
    ref_name = "optimum-cli --help" if optimum else "python -c pass"

    print(f"CPU: {describe()}")
    print(f"python {sys.version.split()[0]}; median of {args.runs} runs; CPU time = user + system of the child")
    print(f"{'command':36} {'CPU ms':>8} {'wall ms':>8} {'x python':>9} {'x optimum':>10}  target")
    judged = []
    for name in cmds:
        x_opt = f"{med[name] / optimum:9.2f}x" if optimum else f"{'-':>10}"
        in_target = name == "mdeploy --help" or (name.startswith("mdeploy ") and name.endswith(" --help"))
        mark = ""
        if in_target:
            ok = med[name] <= limit * ref
            judged.append((med[name] / ref, name, ok))
            mark = "ok" if ok else "OVER"
        print(f"{name:36} {1000 * med[name]:8.1f} {1000 * statistics.median(wall[name]):8.1f} {med[name] / base:8.2f}x "
              f"{x_opt}  {mark}")
    worst = max(judged)
    print(f"floor: {FLOOR} = {med[FLOOR] / ref:.2f}x {ref_name}")
    verdict = "MET" if all(ok for _, _, ok in judged) else "NOT MET"
    print(f"target: mdeploy --help and every VERB --help <= {limit}x {ref_name} CPU time: {verdict} "
          f"(slowest: {worst[1]}, {worst[0]:.2f}x)")


if __name__ == "__main__":
    main()
