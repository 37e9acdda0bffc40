"""Memory a model takes: this process's resident memory sampled while a block runs, the GPU memory a runner holds,
and `release_freed_memory`, which gives freed heap back to the OS so that the next measurement starts from a true
baseline (benchmark measures each model's growth; convert releases the source framework before validating).
"""

from __future__ import annotations

import gc
import os
import resource
import sys
import threading
from typing import Any


def release_freed_memory(collect: bool = True) -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc keeps them otherwise), so that the
    next model's memory growth is measured from a true baseline and not hidden in the previous one's pages.
    `collect=False` for a caller that has just collected (after a torch export a collection walks a million objects)."""
    if collect:
        gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: growth is then measured from whatever the allocator kept


class MemorySampler:
    """Peak resident memory of this process while a block runs, from /proc (or ru_maxrss elsewhere)."""

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        release_freed_memory()
        self.baseline = self.rss()
        self.peak = self.baseline
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def growth(self) -> int:
        return max(self.peak - self.baseline, 0)


class GpuMemory:
    """The GPU memory one model takes (`--device cuda`), read before the model loads and after its timed runs.

    torch's caching allocator counts every byte the torch runner's model holds, so its peak is exact and excludes the
    CUDA context. onnxruntime and TensorRT allocate outside torch: only the process's total device memory, from NVML,
    shows what they took; onnxruntime's arena keeps what it grew to, so its value after the runs is its peak.
    """

    def __init__(self) -> None:
        self._torch_base = 0
        self._process_base: int | None = None

    def __enter__(self) -> GpuMemory:
        torch = cuda_torch()
        if torch is not None:
            torch.cuda.synchronize()
            self._torch_base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        self._process_base, _ = nvml_process_memory()
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def measure(self, runner: Any) -> dict[str, Any]:
        """The row's GPU fields; call after the timed runs, while the runner still holds its memory."""
        process, why = nvml_process_memory()
        row: dict[str, Any] = {"gpu_memory_bytes": None, "gpu_memory_source": None, "gpu_process_memory_bytes": process}
        torch = cuda_torch()
        if runner.gpu_memory == "torch" and torch is not None:
            torch.cuda.synchronize()
            row["gpu_memory_bytes"] = max(torch.cuda.max_memory_allocated() - self._torch_base, 0)
            row["gpu_memory_source"] = "torch.cuda.max_memory_allocated"
        elif process is not None and self._process_base is not None:
            row["gpu_memory_bytes"] = max(process - self._process_base, 0)
            row["gpu_memory_source"] = "nvml"
        else:
            why = "torch has not started CUDA in this process" if runner.gpu_memory == "torch" else why
            row["gpu_memory_note"] = f"GPU memory of {runner.framework} not measured: {why}"
        return row


def cuda_torch() -> Any:
    """torch, when it has started CUDA in this process (the torch and TensorRT runners); else None."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and torch.cuda.is_initialized() else None


_nvml_state: dict[str, Any] = {}


def nvml_process_memory() -> tuple[int | None, str | None]:
    """(bytes of device memory NVML lists for this process on every GPU, None) or (None, why not)."""
    if "error" in _nvml_state:
        return None, _nvml_state["error"]
    try:
        import pynvml
    except ImportError:
        _nvml_state["error"] = "pynvml is not importable (pip install nvidia-ml-py)"
        return None, _nvml_state["error"]
    try:
        if not _nvml_state:
            pynvml.nvmlInit()
            _nvml_state["ready"] = True
        pid, total, found = os.getpid(), 0, False
        for i in range(pynvml.nvmlDeviceGetCount()):
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(pynvml.nvmlDeviceGetHandleByIndex(i)):
                if proc.pid == pid and proc.usedGpuMemory is not None:
                    total, found = total + int(proc.usedGpuMemory), True
    except Exception as exc:  # noqa: BLE001 - NVML's own errors (no driver, no permission) mean: not measured
        _nvml_state["error"] = f"NVML failed: {exc}"
        return None, _nvml_state["error"]
    if not found:
        return None, "NVML lists no GPU memory for this process (in a container, NVML may see the host's process ids)"
    return total, None
