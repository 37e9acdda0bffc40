"""What an ONNX quantize adds to its report about speed: the precision census of the int8 model as onnxruntime
runs it, the float and int8 models timed side by side against the int8 bound, a WARNING with the reason when
int8 is slower, and the verdict of a `speedup>=X` term of the bar.

The verb calls `add` once, with the model it is about to write; everything lands in `report.data["runtime"]`
(whole in --json and the reports) and a few lines in the notes (the terminal shows the short table).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mdeploy import machine
from mdeploy.quantization import census as census_mod
from mdeploy.quantization import speed_check

if TYPE_CHECKING:  # annotations only
    from mdeploy.reports.report import Report
    from mdeploy.validation.bar import Bar

THREADS = 1  # the census and the timing run at one intra-op thread: reproducible, and the bound's own setting


def add(report: Report, src: Path, out: Path, feed: dict[str, Any] | None, options: Any, bar: Bar | None,
        timing: bool = True) -> None:
    """Take the census of `out`, and unless `timing` is off time it against `src` with the int8 bound; record
    both in `report` and judge the bar's speed terms (a failed `speedup>=` step makes the report fail)."""
    from mdeploy.reports.report import Step

    if feed is None:
        feed = _random_feed(src)
    feed = speed_check.feed_for_timing(feed, _fixed_batch(out))
    start = time.perf_counter()
    kept = [n for s in (report.data.get("max_error") or {}).get("kept_in_float", []) for n in s.get("nodes", [])]
    c = census_mod.census(out, feed, threads=THREADS, excluded=getattr(options, "exclude", []) or [],
                          excluded_ops=getattr(options, "exclude_op", []) or [], kept_by_repair=kept)
    weights = getattr(options, "weights", None)
    kind = f"{weights} weight-only" if weights else "int8"  # weight-only models have no int8 bound: its kernels are others
    record: dict[str, Any] = {"census": c.to_dict(), "cpu": machine.int8_isa(), "kind": kind}
    if timing:
        family = c.mode if c.mode in ("static", "dynamic") and not weights else None
        activation = getattr(options, "activation_type", "auto")
        if activation not in ("int8", "uint8"):
            activation = "int8" if machine.is_arm() else "uint8"
        speed = speed_check.measure_speed(src, out, feed, family=family or "static", threads=THREADS, census=c,
                                          activation=activation, with_bound=family is not None, kind=kind)
        record["speed"] = speed.to_dict()
        if speed.warning:
            report.notes.append(speed.warning)
        elif speed.of_bound is not None and speed.of_bound < 0.8 and speed.reasons:
            report.notes.append(f"the {kind} model reaches {speed.of_bound:.0%} of the speed-up this CPU's kernels allow: "
                                + "; ".join(speed.reasons))
    record["seconds"] = round(time.perf_counter() - start, 3)  # what the census and the timing added to quantize
    report.data["runtime"] = record
    if bar is not None and bar.speed_criteria:
        verdict = bar.judge_speed(record["speed"]["speedup"])
        report.steps.append(Step(f"speed {', '.join(str(c) for c in bar.speed_criteria)}",
                                 "passed" if verdict.met else "failed", {"missed": verdict.missed} if verdict.missed else {}))
        judged = report.data.setdefault("max_error", {"bar": str(bar), "met": True, "missed": []})
        judged["met"] = bool(judged.get("met", True)) and verdict.met
        judged["missed"] = list(judged.get("missed", [])) + verdict.missed
        if not verdict.met:
            keep = " (no int8 form beats float here: keeping the float model is the faster choice)" if \
                record["speed"]["speedup"] < 1 else ""
            report.notes.append(f"the speed bar is not met: {'; '.join(verdict.missed)}{keep}")


def _random_feed(src: Path) -> dict[str, Any]:
    from mdeploy.core import Format, ModelRef
    from mdeploy.lazy import numpy as np
    from mdeploy.registry import open_runner
    from mdeploy.validation.inputs import random_feed

    specs = open_runner(ModelRef(Path(src), Format.ONNX), "cpu").input_specs()
    return random_feed(specs, np.random.default_rng(0), batch=1)


def _fixed_batch(path: Path) -> int | None:
    """The batch the model fixes (None: free), so timing feeds it what it takes and batch 1 otherwise."""
    from mdeploy.frameworks import onnx_models, onnx_skeleton
    from mdeploy.quantization.calibration import fixed_batch

    return fixed_batch(onnx_models.graph_inputs(onnx_skeleton.load_without_weights(Path(path))))


def inspect_record(ref: Any, input_specs: list[Any]) -> dict[str, Any]:
    """`inspect --runtime`: the census of any ONNX model on random inputs (`input_specs`: --input overrides for
    free dimensions), with what this CPU's instruction sets imply for int8."""
    from mdeploy.core import Format
    from mdeploy.errors import InputError
    from mdeploy.lazy import numpy as np
    from mdeploy.registry import open_runner
    from mdeploy.validation.inputs import random_feed

    if ref.format != Format.ONNX:
        raise InputError(f"--runtime shows what onnxruntime runs: {ref.name} is {ref.format.value}, not ONNX",
                         hint=f"convert it first (mdeploy convert {ref.name} -o model.onnx), then inspect the .onnx")
    specs = open_runner(ref, "cpu", input_specs or None).input_specs()
    feed = random_feed(specs, np.random.default_rng(0), batch=1)
    c = census_mod.census(ref.path, feed, threads=THREADS)
    return {"census": c.to_dict(), "cpu": machine.int8_isa()}
