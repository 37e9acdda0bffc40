"""The runner template: the base checks every feed against the model's input specs; a backend only says
how to load a model and how to run it (Polygraphy's runner design).
"""

from __future__ import annotations

import sys
import time
from typing import Any, ClassVar

from mdeploy.core import Format, ModelRef, TensorSpec
from mdeploy.errors import InputError
from mdeploy.lazy import numpy as np

Feed = dict[str, "np.ndarray"]


class Runner:
    """Loads one model and runs it on numpy feeds.

    Subclasses set `formats` and implement `_load`, `input_specs`, `output_names` and `_infer`;
    `describe` (for `mdeploy inspect`) reads the file without starting a session where it can.
    `notes` says what the user should know about how the model was loaded (e.g. an IR version lowered in
    memory); whoever reports on the run copies them into the report.
    """

    formats: ClassVar[tuple[Format, ...]] = ()
    framework: ClassVar[str] = ""
    # Who allocates the model's GPU memory with --device cuda: "torch" (its caching allocator counts every byte, so a
    # benchmark reads torch.cuda.max_memory_allocated) or "process" (a runtime's own allocator: only the process's
    # device memory, from NVML, shows it)
    gpu_memory: ClassVar[str] = "process"

    def __init__(
        self,
        ref: ModelRef,
        device: str = "cpu",
        input_specs: list[TensorSpec] | None = None,
        threads: int | None = None,
    ) -> None:
        self.ref = ref
        self.device = device
        self.threads = threads
        self._overrides = {s.name: s for s in input_specs or []}
        self.last_latency_s = 0.0
        self.notes: list[str] = []
        self._load()

    # --- what a backend implements -------------------------------------------------------------
    def _load(self) -> None:
        raise NotImplementedError

    def input_specs(self) -> list[TensorSpec]:
        raise NotImplementedError

    def output_names(self) -> list[str]:
        raise NotImplementedError

    def _infer(self, feed: Feed) -> dict[str, np.ndarray]:
        raise NotImplementedError

    @classmethod
    def describe(cls, ref: ModelRef) -> dict[str, Any]:
        """Facts about the model for `mdeploy inspect`."""
        raise NotImplementedError

    # --- shared behaviour --------------------------------------------------------------------------
    def apply_overrides(self, specs: list[TensorSpec]) -> list[TensorSpec]:
        """Replace model specs by `--input` ones (concrete shapes for dynamic axes), checking they fit."""
        if not self._overrides:
            return specs
        names = {s.name for s in specs}
        unknown = sorted(set(self._overrides) - names)
        if unknown:
            raise InputError(
                f"--input names {', '.join(unknown)}, which is not an input of {self.ref.name}",
                hint="inputs are: " + ", ".join(sorted(names)),
            )
        out = []
        for spec in specs:
            given = self._overrides.get(spec.name)
            if given is None:
                out.append(spec)
                continue
            if given.dtype != spec.dtype or len(given.shape) != len(spec.shape) or any(
                isinstance(g, int) and isinstance(m, int) and m > 0 and g != m for g, m in zip(given.shape, spec.shape)
            ):
                raise InputError(f"--input {given.name}{given.shape_text()}:{given.dtype} does not fit the model's {spec.shape_text()}:{spec.dtype}")
            out.append(TensorSpec(spec.name, given.shape, spec.dtype, spec.value_range))
        return out

    def check_feed(self, feed: Feed) -> None:
        """Data is never cast or reshaped to fit: a name, dtype or shape that differs is an error."""
        specs = {s.name: s for s in self.input_specs()}
        missing = sorted(set(specs) - set(feed))
        extra = sorted(set(feed) - set(specs))
        if missing or extra:
            parts = []
            if missing:
                parts.append("missing " + ", ".join(missing))
            if extra:
                parts.append("unknown " + ", ".join(extra))
            raise InputError(
                f"inputs do not match {self.ref.name}: " + "; ".join(parts),
                hint="the model's inputs are: " + ", ".join(f"{s.name}{s.shape_text()}:{s.dtype}" for s in specs.values()),
            )
        for name, array in feed.items():
            problem = specs[name].fits(array)
            if problem:
                raise InputError(f"input '{name}' does not fit {self.ref.name}: {problem}")

    def synchronize(self) -> None:
        """Wait until the work this runner queued on its device is done (CUDA kernels run asynchronously).

        The default waits on torch's CUDA streams when torch has started CUDA in this process (the TensorRT runner runs
        on torch's stream); a runtime whose run() hands back host arrays (onnxruntime) is already synchronous, and on
        the CPU there is nothing to wait for.
        """
        if self.device != "cuda":
            return
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    def infer(self, feed: Feed) -> dict[str, np.ndarray]:
        """Run the model on one feed; outputs keyed by name, as numpy arrays.

        `last_latency_s` is the backend call alone; on CUDA the device is synchronized before the clock starts and
        before it stops, so the time is that of this run's own work, the copies to and from the GPU included.
        """
        self.check_feed(feed)
        cuda = self.device == "cuda"
        if cuda:
            self.synchronize()
        start = time.perf_counter()
        out = self._infer(feed)
        if cuda:
            self.synchronize()
        self.last_latency_s = time.perf_counter() - start
        return out
