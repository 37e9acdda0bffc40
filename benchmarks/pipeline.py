"""What `mdeploy run` costs over running the same verbs by hand, and what a re-run with nothing changed costs.

The pipeline (default examples/pipeline.yaml: the tiny CNN through convert -> static INT8 -> validate -> benchmark)
is resolved with spec.load, and the by-hand baseline is made from that same plan: one `mdeploy <verb> ... --json`
process per step, with exactly the options the pipeline resolved (so the two do the same work), each report written
to a file as the pipeline writes its step reports. Then, per round, interleaved (the order alternates so that machine
noise hits both alike):

- by hand: the four processes one after the other (wall time around all four);
- by hand, one process: the four verbs' `run` functions called in one Python process with the same options, each
  report written as JSON (what the pipeline does minus its own work: hashing, cache, manifest, gates), so its ratio
  is the executor's own overhead, free of the process start-ups the pipeline saves;
- pipeline: `mdeploy run PIPELINE --out NEW --force` (--force: every step runs, nothing from the cache);
- re-run: `mdeploy run PIPELINE --out NEWER` with nothing changed (every step from the step cache).

Prints medians, the ratio pipeline / by hand (target <= 1.05x), the re-run's wall time (target <= 2 s), and the CPU's
ISA flags. Figures, not tests: a noisy machine moves them; run it on an idle one for a closing note.

    python benchmarks/pipeline.py [--pipeline examples/pipeline.yaml] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mdeploy import machine  # noqa: E402  (after the path is set)


def cli_args(verb: str, options: dict[str, Any]) -> list[str]:
    """The command line that gives `mdeploy VERB` these options (the inverse of mdeploy/cli/generate.py)."""
    from mdeploy.verbs.options import describe

    module = __import__(f"mdeploy.verbs.{verb}", fromlist=["Options"])
    args: list[str] = [verb]
    for info in describe(module.Options):
        value = options.get(info.name)
        if not info.cli or value is None or value == [] or (value == info.default and not info.argument):
            continue
        main = info.flags[0]
        if info.argument:
            args += [str(v) for v in value] if isinstance(value, list) else [str(value)]
        elif info.kind == "bool":
            on, _, off = main.partition("/")
            if value:
                args.append(on)
            elif off:
                args.append(off)
        elif info.kind == "list":
            for v in value:
                args += [main, str(v)]
        else:
            args += [main, str(value)]
    return args


def by_hand_commands(pipeline: Path, out: Path) -> list[tuple[list[str], Path]]:
    """One `mdeploy VERB ... --json` per step of every model, with the plan's options, writing into `out`."""
    from mdeploy.pipeline import spec

    plan = spec.load(pipeline, out=out)
    commands = []
    for model in plan.models:
        model.folder.mkdir(parents=True, exist_ok=True)
        for step in model.steps:
            commands.append(([sys.executable, "-m", "mdeploy", *cli_args(step.verb, step.options), "--json"], step.report))
    return commands


IN_PROCESS = """
import importlib, json, sys
from pathlib import Path
from mdeploy.pipeline import spec
plan = spec.load(Path(sys.argv[1]), out=Path(sys.argv[2]))
for model in plan.models:
    model.folder.mkdir(parents=True, exist_ok=True)
    for step in model.steps:
        verb = importlib.import_module(f"mdeploy.verbs.{step.verb}")
        report = verb.run(verb.Options(**step.options))
        Path(step.report).write_text(json.dumps(report.to_dict(), indent=2, default=str))
"""


def run_in_process(pipeline: Path, out: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", IN_PROCESS, str(pipeline), str(out)], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"by hand, one process: failed ({proc.returncode}):\n{proc.stderr}")


def timed(run: Any) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def run_by_hand(commands: list[tuple[list[str], Path]]) -> None:
    for argv, report in commands:
        with open(report, "w") as f:
            proc = subprocess.run(argv, stdout=f, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"by hand: {' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}")


def run_pipeline(pipeline: Path, out: Path, force: bool) -> None:
    argv = [sys.executable, "-m", "mdeploy", "run", str(pipeline), "--out", str(out), "--quiet", *(["--force"] if force else [])]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"mdeploy run failed ({proc.returncode}):\n{proc.stderr}")


def cached_steps(run_dir: Path) -> tuple[int, int]:
    import json

    report = json.loads((run_dir / "report.json").read_text())
    steps = [s for m in report["models"] for s in m["steps"]]
    return sum(1 for s in steps if s["status"] == "cached"), len(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", type=Path, default=ROOT / "examples" / "pipeline.yaml")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from mdeploy import __version__
    from mdeploy.pipeline.cache import versions

    print(f"CPU: {machine.describe()}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()) + f" (mdeploy {__version__})")
    work = Path(tempfile.mkdtemp(prefix="mdeploy-pipeline-bench-"))
    times: dict[str, list[float]] = {"by hand": [], "by hand, one process": [], "mdeploy run": [], "re-run (cached)": []}
    try:
        for r in range(args.rounds):
            commands = by_hand_commands(args.pipeline, work / "hand" / f"r{r}")
            hand = lambda: run_by_hand(commands)  # noqa: E731
            piped = lambda: run_pipeline(args.pipeline, work / "runs" / f"r{r}", force=True)  # noqa: E731
            one = lambda: run_in_process(args.pipeline, work / "one" / f"r{r}")  # noqa: E731
            order = [("by hand", hand), ("by hand, one process", one), ("mdeploy run", piped)]
            for name, fn in order if r % 2 == 0 else reversed(order):
                times[name].append(timed(fn))
            again = work / "runs" / f"r{r}-again"
            times["re-run (cached)"].append(timed(lambda: run_pipeline(args.pipeline, again, force=False)))  # noqa: B023
            hits, total = cached_steps(again)
            figures = ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items())
            print(f"round {r + 1}: {figures} ({hits}/{total} steps cached)")
            if r == 0:
                print("  by hand: " + " ; ".join(" ".join(a[3:]) for a, _ in commands))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nmedians over {args.rounds} rounds: " + ", ".join(f"{k} {v:.2f} s" for k, v in med.items()))
    for base in ("by hand", "by hand, one process"):
        ratio = med["mdeploy run"] / med[base]
        print(f"mdeploy run / {base}: {ratio:.3f}x (target <= 1.05x) {'OK' if ratio <= 1.05 else 'OVER'}")
    rerun = med["re-run (cached)"]
    print(f"re-run with nothing changed: {rerun:.2f} s (target <= 2 s) {'OK' if rerun <= 2 else 'OVER'}")


if __name__ == "__main__":
    main()
