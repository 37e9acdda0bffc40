"""What `mdeploy convert` costs over the plain way: a BERT-base-size encoder (fixtures/models/bert_base.py, 110M
parameters built from code) converted to ONNX with dynamic batch and sequence,

- baseline: a fresh Python process that builds the model, calls `torch.onnx.export(..., dynamo=True)` with the
  same dynamic shapes and the exporter's defaults, opens an onnxruntime session and runs it once;
- mdeploy: `python -m mdeploy convert bert_base.py:build -o OUT --dynamic ...` (export, then validation: the torch
  module runs at the example inputs and at a second batch/sequence size, is released, onnx.checker reads the file,
  and the onnxruntime session runs against the kept outputs);
- optimum: `optimum-cli export onnx` on a transformers BertModel of the same size saved from code, only where
  optimum-cli is installed (give its path with --optimum-cli; it never downloads anything here). It exports with
  the TorchScript exporter and checks the outputs at one small shape.

Rounds interleave the tools, so machine noise hits them alike; each is a separate process, its wall time measured
around it, its CPU time and peak RSS read from os.wait4 (that child alone: CPU seconds tell more than wall time
on a machine shared with other work). Prints medians, the ratios to the baseline, the CPU's ISA flags, mdeploy's
own breakdown of where its time went (from its --json report), and a line per target.

    python benchmarks/convert.py [--rounds 3] [--optimum-cli /tmp/optvenv/bin/optimum-cli]

Targets (validation at two shapes included): mdeploy <= 1.5x the baseline's wall time and <= 1.2x its peak RSS;
with optimum-cli, <= 1.0x optimum-cli's wall time and <= 0.6x its peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mdeploy import machine  # noqa: E402  (after the path is set)

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "fixtures" / "models" / "bert_base.py"
DYNAMIC = ["input_ids:0", "input_ids:1:sequence", "attention_mask:0", "attention_mask:1:sequence"]

BASELINE = """
import sys, torch, onnxruntime as ort
sys.path.insert(0, {root!r})
from fixtures.models import bert_base
model = bert_base.build()
ids = torch.randint(0, bert_base.VOCAB, (2, bert_base.SEQ))  # batch 2: torch.export specializes a batch of 1
kwargs = {{"input_ids": ids, "attention_mask": torch.ones_like(ids)}}
batch, seq = torch.export.Dim("batch", max=64), torch.export.Dim("sequence", max=bert_base.MAX_LEN)
shapes = {{"input_ids": {{0: batch, 1: seq}}, "attention_mask": {{0: batch, 1: seq}}}}
torch.onnx.export(model, (), {out!r}, kwargs=kwargs, dynamo=True, dynamic_shapes=shapes,
                  input_names=["input_ids", "attention_mask"])
session = ort.InferenceSession({out!r}, providers=["CPUExecutionProvider"])
session.run(None, {{k: v.numpy() for k, v in kwargs.items()}})
"""

OPTIMUM_MODEL = """
import sys, torch, transformers

torch.manual_seed(0)
config = transformers.BertConfig()  # BERT-base: 12 layers, hidden 768, 12 heads, FFN 3072, vocab 30522
transformers.BertModel(config).eval().save_pretrained(sys.argv[1])
"""


def measure(cmd: list[str], cwd: Path, logs: Path) -> tuple[float, float, float, str]:
    """Wall seconds, CPU seconds (user + system), peak RSS in GB of this child alone (from os.wait4), and its stdout."""
    with open(logs / "stdout", "w+") as out, open(logs / "stderr", "w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd[:5]))} ... failed ({proc.returncode}):\n{stderr[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 2**20, stdout


def breakdown(report: dict, wall: float) -> dict[str, float]:
    """Where mdeploy's time went, from the timings its report records (the rest is start-up and imports)."""
    parts: dict[str, float] = {}
    for step in report["steps"]:
        for key, seconds in (step.get("details", {}).get("timings") or {}).items():
            parts[f"{step['name'].split()[0]}: {key}"] = seconds
    parts["start-up, imports, report"] = wall - sum(s.get("seconds") or 0 for s in report["steps"])
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--optimum-cli", default=shutil.which("optimum-cli"), help="optimum-cli to compare with, if installed")
    args = parser.parse_args()
    print(f"CPU: {machine.describe()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tools: dict[str, list[str]] = {
            "torch.onnx.export + 1 ort run": [sys.executable, "-c", BASELINE.format(root=str(ROOT), out=str(work / "base.onnx"))],
            "mdeploy convert": [sys.executable, "-m", "mdeploy", "convert", f"{MODEL}:build", "-o", str(work / "mdeploy.onnx"),
                                *[a for d in DYNAMIC for a in ("--dynamic", d)], "--force", "--json"],
        }
        if args.optimum_cli:
            optimum_python = str(Path(args.optimum_cli).parent / "python")
            subprocess.run([optimum_python, "-c", OPTIMUM_MODEL, str(work / "bert")], check=True, capture_output=True)
            tools["optimum-cli export onnx"] = [args.optimum_cli, "export", "onnx", "--model", str(work / "bert"),
                                                "--task", "feature-extraction", str(work / "optimum")]
        walls: dict[str, list[float]] = {name: [] for name in tools}
        cpus: dict[str, list[float]] = {name: [] for name in tools}
        rss: dict[str, list[float]] = {name: [] for name in tools}
        parts: list[dict[str, float]] = []
        for round_ in range(args.rounds):
            order = list(tools) if round_ % 2 == 0 else list(reversed(tools))
            for name in order:
                wall, cpu, peak, stdout = measure(tools[name], ROOT, work)
                walls[name].append(wall)
                cpus[name].append(cpu)
                rss[name].append(peak)
                if name == "mdeploy convert":
                    report = json.loads(stdout)
                    if not report["passed"]:
                        raise SystemExit("mdeploy's validation failed: " + json.dumps(report["comparisons"])[:2000])
                    parts.append(breakdown(report, wall))
                print(f"  round {round_ + 1}: {name:32} {wall:6.1f} s  {cpu:6.1f} CPU s  {peak:5.2f} GB", flush=True)
    wall, cpu, peak = ({name: statistics.median(v[name]) for name in tools} for v in (walls, cpus, rss))
    base = next(iter(tools))
    print(f"\n{'tool':32} {'wall s':>7} {'ratio':>6} {'CPU s':>7} {'ratio':>6} {'peak RSS GB':>12} {'ratio':>6}"
          f"   (medians of {args.rounds}; ratios to the first row)")
    for name in tools:
        print(f"{name:32} {wall[name]:7.1f} {wall[name] / wall[base]:5.2f}x {cpu[name]:7.1f} {cpu[name] / cpu[base]:5.2f}x "
              f"{peak[name]:12.2f} {peak[name] / peak[base]:5.2f}x")
    print("\nmdeploy convert, where the time went (median s):")
    for key in parts[0]:
        print(f"  {key:40} {statistics.median(p.get(key, 0.0) for p in parts):6.2f}")
    print(f"\nCPU: {machine.describe()}")
    targets = [("wall time", wall, base, 1.5), ("peak RSS", peak, base, 1.2)]
    if "optimum-cli export onnx" in tools:
        targets += [("wall time", wall, "optimum-cli export onnx", 1.0), ("peak RSS", peak, "optimum-cli export onnx", 0.6)]
    for what, values, other, limit in targets:
        ratio = values["mdeploy convert"] / values[other]
        verdict = "target met" if ratio <= limit else "target NOT met"
        print(f"{verdict}: mdeploy convert's {what} is {ratio:.2f}x {other}'s (target <= {limit}x)")


if __name__ == "__main__":
    main()
