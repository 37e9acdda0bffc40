"""`benchmark MODEL...`: what each model costs to run, measured through the same runners that validate it.

Every model gets the same random feed (shapes from its input specs, `--batch` for the batch axis, `--input`
for other dynamic axes), a warm-up, then a fixed number of iterations or a duration. Latency is the time
of the backend call alone (the runner's feed checks are not counted). Peak memory is the growth of the
process's resident memory while the model is loaded and run, sampled by a thread (onnxruntime releases the
GIL while it computes); models run one after the other, each in a fresh session, released before the next.
Ratios are given against the first model.

With `--device cuda` (measuring/memory.py's GpuMemory): each run is timed with the device synchronized before the clock starts and
before it stops (Runner.infer: torch.cuda.synchronize for the torch and TensorRT runners, which queue work on torch's
streams; onnxruntime's CUDA provider returns from run() only once its outputs are copied to host memory, so its call
is synchronous already). What is measured is then one whole run as a caller sees it: inputs copied to the GPU, the
model's kernels, outputs copied back to numpy. Each row also gets the GPU memory the model took: where torch owns the
memory (the torch runner), the peak torch allocated while the model was loaded and run
(torch.cuda.reset_peak_memory_stats / max_memory_allocated); where a runtime has its own allocator (onnxruntime-gpu,
TensorRT), the growth of this process's device memory as NVML reports it (nvidia-ml-py), or null with a note when
pynvml cannot be imported or NVML does not list this process. Host memory is measured as on the CPU.
"""

from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mdeploy.errors import InputError
from mdeploy.measuring.latency import latency_samples, percentiles, time_runs
from mdeploy.measuring.memory import GpuMemory, MemorySampler, cuda_torch, nvml_process_memory, release_freed_memory
from mdeploy.progress import ProgressFactory, no_progress
from mdeploy.verbs.options import check, option

if TYPE_CHECKING:
    import numpy as np

    from mdeploy.core import ModelRef, TensorSpec
    from mdeploy.reports.report import Report

DEFAULT_ITERATIONS = 50


@dataclass
class Options:
    models: list[str] = option(help="One or more models; ratios are given against the first.", argument=True)
    batch: int | None = option(None, help="Batch size for a dynamic batch axis (default 1).", min=1)
    threads: int | None = option(None, help="Intra-op threads (default: the runtime's choice).", min=1)
    inputs: list[str] = option([], flag="--input", help="NAME:SHAPE[:DTYPE], e.g. input_ids:1x128:int64 (repeatable).")
    warmup: int = option(5, help="Untimed runs first.", min=0)
    iterations: int | None = option(None, help=f"Timed runs (default {DEFAULT_ITERATIONS}).", min=1)
    duration: float | None = option(None, help="Time each model for this many seconds instead.", above=0.0)
    device: str = option("cpu", help="cpu or cuda.", choices=("cpu", "cuda"))
    src_format: str | None = option(None, flag="--from", help="Format of the models, when their names do not tell.")
    seed: int = option(0, help="Seed for the random inputs (recorded in the report).")
    prompt_tokens: int = option(32, help="Language models: tokens in the (random) prompt.", min=1)
    new_tokens: int = option(64, help="Language models: tokens generated per run; prompt ms and decode tokens/s are "
                             "reported (runs: --iterations, default 3; one warm-up).", min=2)


def model_size(ref: ModelRef) -> int | None:
    from mdeploy.outputs import size_of

    try:
        return size_of(ref.path) if ref.path.exists() and ref.factory is None else None
    except OSError:
        return None


def measure(
    ref: ModelRef,
    *,
    batch: int | None,
    threads: int | None,
    inputs: list[TensorSpec] | None,
    warmup: int,
    iterations: int | None,
    duration: float | None,
    device: str,
    seed: int,
    progress: ProgressFactory,
) -> dict[str, Any]:
    """Load one model, warm it up, time it; returns the numbers for the report."""
    import numpy as np

    from mdeploy.registry import open_runner
    from mdeploy.validation import inputs as vinputs

    cuda = device == "cuda"
    with MemorySampler() as memory, (GpuMemory() if cuda else contextlib.nullcontext()) as gpu:
        start = time.perf_counter()
        runner = open_runner(ref, device, inputs or None, threads)
        load_s = time.perf_counter() - start
        specs = runner.input_specs()
        feed = vinputs.random_feed(specs, np.random.default_rng(seed), batch=batch or 1)
        items = _batch_of(feed, specs)
        if batch and items != batch:
            raise InputError(
                f"{ref.name} has a fixed batch of {items}; --batch {batch} cannot apply",
                hint=f"drop --batch, or give --batch {items}",
            )
        runs = None if duration is not None else iterations or DEFAULT_ITERATIONS
        with progress(f"benchmarking {Path(ref.name).name}", runs) as advance:
            times = time_runs([(runner, feed)], warmup=warmup, runs=runs, duration=duration, advance=advance)[0]
        notes = list(runner.notes)  # how the model had to be loaded (an IR version lowered in memory)
        gpu_row = gpu.measure(runner) if cuda else {}
        del runner
        gc.collect()
        if cuda and cuda_torch() is not None:
            cuda_torch().cuda.empty_cache()  # the next model's GPU memory starts from what is really in use
    stats = percentiles(times)
    return {
        "model": ref.name,
        "format": ref.format.value,
        "size_bytes": model_size(ref),
        "batch": items,
        "inputs": {k: list(v.shape) for k, v in feed.items()},
        "iterations": len(times),
        "load_seconds": load_s,
        "latency_ms": stats,
        "latencies_ms": latency_samples(times),
        "throughput_items_per_s": items / (stats["mean"] / 1000.0) if stats["mean"] > 0 else None,
        "peak_memory_bytes": memory.growth,
        "peak_rss_bytes": memory.peak,
        "notes": notes + ([gpu_row.pop("gpu_memory_note")] if "gpu_memory_note" in gpu_row else []),
        **gpu_row,
    }


def _batch_of(feed: dict[str, np.ndarray], specs: list[TensorSpec]) -> int:
    for spec in specs:
        array = feed[spec.name]
        if array.ndim:
            return int(array.shape[0])
    return 1


def run(options: Options, progress: ProgressFactory = no_progress) -> Report:
    """Measure latency (mean/p50/p90/p99), throughput, peak memory and size of each model."""
    from mdeploy.core import ModelRef, parse_specs
    from mdeploy.reports.report import Report, Step

    check(options)
    models, batch, threads, warmup = options.models, options.batch, options.threads, options.warmup
    iterations, duration, device, seed = options.iterations, options.duration, options.device, options.seed
    inputs = parse_specs(options.inputs)
    if not models:
        raise InputError("give at least one model to benchmark")
    if duration is not None and duration <= 0:
        raise InputError("--duration must be positive (seconds)")
    if iterations is not None and duration is not None:
        raise InputError("give --iterations or --duration, not both")
    refs = [ModelRef.parse(m, options.src_format) for m in models]  # every path checked before any work
    lm = _language_models(refs)
    if lm:
        from mdeploy.measuring import generation_speed

        unused = {"--batch": batch, "--input": options.inputs, "--duration": duration, "--device cuda": device != "cpu"}
        if any(unused.values()):
            raise InputError(f"{next(k for k, v in unused.items() if v)} does not apply to language models",
                             hint="they are timed by generation: --prompt-tokens, --new-tokens, --iterations, --threads")
    else:
        _start_frameworks(refs, device, inputs, threads)
    results = []
    for ref in refs:
        start = time.perf_counter()
        row = generation_speed.measure(ref, options.prompt_tokens, options.new_tokens, threads, iterations or 3,
                                       min(warmup, 1), seed) if lm else measure(
            ref,
            batch=batch,
            threads=threads,
            inputs=inputs,
            warmup=warmup,
            iterations=iterations,
            duration=duration,
            device=device,
            seed=seed,
            progress=progress,
        )
        if lm:
            row["size_bytes"] = model_size(ref)
        row["seconds"] = time.perf_counter() - start
        results.append(row)
    base = results[0]
    for row in results:
        row["ratio_to_first"] = {
            "latency_p50": _ratio(row["latency_ms"]["p50"], base["latency_ms"]["p50"]),
            "latency_mean": _ratio(row["latency_ms"]["mean"], base["latency_ms"]["mean"]),
            "throughput": _ratio(row["throughput_items_per_s"], base["throughput_items_per_s"]),
            "size": _ratio(row["size_bytes"], base["size_bytes"]),
        }
    settings = {
        "batch": batch,
        "threads": threads,
        "warmup": warmup,
        "iterations": iterations,
        "duration_s": duration,
        "device": device,
        "seed": seed,
    }
    if lm:
        settings.update(prompt_tokens=options.prompt_tokens, new_tokens=options.new_tokens,
                        timing="prompt: prefill to the first new token; decode: each later token through the KV cache")
    if device == "cuda":
        settings["timing"] = "CUDA synchronized before and after each run; copies to and from the GPU included"
    report = Report(command="benchmark", data={"settings": settings, "models": results})
    report.steps.extend(Step(f"benchmark {r['model']}", "done", {}, r["seconds"]) for r in results)
    return report


def _language_models(refs: list[ModelRef]) -> bool:
    """True when every model is a language-model folder (timed by generation), False when none is; a mix is refused."""
    from mdeploy.measuring.generation_speed import LM_FORMATS

    kinds = {ref.format in LM_FORMATS for ref in refs}
    if len(kinds) > 1:
        raise InputError("language-model folders are timed by generation, other models by one forward pass: "
                         "benchmark them apart", hint="give only language models, or none")
    return kinds == {True}


def _start_frameworks(refs: list[ModelRef], device: str, inputs: list[TensorSpec] | None, threads: int | None) -> None:
    """Load and release each backend once, unmeasured, so that one-time start-up (the framework's import, its
    thread pools and allocators) is charged to no model: otherwise the first model's memory looks worse."""
    from mdeploy.registry import open_runner

    seen = set()
    for ref in refs:
        if ref.format not in seen:
            seen.add(ref.format)
            runner = open_runner(ref, device, inputs or None, threads)
            del runner
    if device == "cuda":
        gc.collect()
        if cuda_torch() is not None:
            cuda_torch().cuda.empty_cache()
        nvml_process_memory()  # NVML's start-up (pynvml's import, nvmlInit) is charged to no model either
    release_freed_memory()


def _ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None
