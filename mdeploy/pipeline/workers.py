"""Models of one run in parallel processes (`mdeploy run --jobs N`): one model per process, never one model split,
each process running model_run.run_model; echo lines and step records come back to the parent through a queue."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

from mdeploy.interrupts import raise_interrupt
from mdeploy.pipeline.manifest import Manifest
from mdeploy.pipeline.model_run import Echo, run_model
from mdeploy.pipeline.plan import Plan, PlannedModel

_QUEUE: Any = None


def _worker_init(queue: Any) -> None:
    """In a worker process: echo lines go to the parent; the parent stops workers with SIGTERM (Ctrl-C reaches the
    whole process group, so workers ignore SIGINT and leave the stopping to the parent)."""
    global _QUEUE
    _QUEUE = queue
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, raise_interrupt)


def _worker(plan: Plan, name: str, force: bool) -> dict[str, Any]:
    return run_model(plan, plan.model(name), force=force, echo=lambda line: _QUEUE.put(("line", line)),
                     on_step=lambda record: _QUEUE.put(("step", name, record)))


def run_parallel(plan: Plan, models: list[PlannedModel], force: bool, jobs: int, say: Echo,
                  results: dict[str, dict[str, Any]], manifest: Manifest) -> None:
    """Models in `jobs` processes (spawned, so no framework state is inherited); lines are echoed as they come."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    finished: dict[str, list[dict[str, Any]]] = {m.name: [] for m in models}  # step records as the workers send them

    def on_step(name: str, record: dict[str, Any]) -> None:
        finished[name].append(record)
        manifest.step(name, record)

    drain = threading.Thread(target=_drain, args=(queue, say, on_step), daemon=True)
    drain.start()
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(models)), mp_context=ctx, initializer=_worker_init, initargs=(queue,))
    try:
        futures = {pool.submit(_worker, plan, m.name, force): m.name for m in models}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            manifest.model(results[futures[future]])
    except BaseException:
        for process in list(getattr(pool, "_processes", {}).values()):  # running workers: stop them cleanly (SIGTERM)
            if process.is_alive():
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        queue.put(None)
        drain.join(timeout=5)
        for m in models:  # what the stopped models finished, as far as their workers said
            if m.name not in results and finished[m.name]:
                results[m.name] = {"name": m.name, "passed": False, "baseline": None, "artifacts": [], "steps": finished[m.name],
                                   "comparisons": [], "accuracy": None, "benchmark": [], "gates": []}
        raise
    pool.shutdown(wait=True)
    queue.put(None)
    drain.join(timeout=5)


def _drain(queue: Any, say: Echo, on_step: Callable[[str, dict[str, Any]], None]) -> None:
    while (message := queue.get()) is not None:
        if message[0] == "line":
            say(message[1])
        else:
            on_step(message[1], message[2])


__all__ = ["run_parallel"]
