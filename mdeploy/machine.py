"""The machine a figure was measured on: the CPU's model and the ISA flags that decide which kernels run.

Speed figures differ by machine (an AVX-512 VNNI CPU runs int8 GEMMs about twice as fast, relative to fp32, as an
AVX2-only one), so every benchmark prints these with its figures, and the quantizer picks 7-bit weights by them.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
             "amx_bf16", "asimd", "asimddp", "i8mm", "sve")


@cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown", frozenset()
    lines = text.splitlines()
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith(("model name", "Model"))), "unknown")
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith(("flags", "Features"))), [])
    return name, frozenset(flags)


def cpu_name() -> str:
    return _cpuinfo()[0]


def cpu_flags() -> list[str]:
    """The ISA flags of ISA_FLAGS this CPU has, in that order."""
    flags = _cpuinfo()[1]
    return [f for f in ISA_FLAGS if f in flags]


def has_vnni() -> bool:
    """x86 VNNI dot-product instructions (AVX-512 VNNI or AVX-VNNI): no saturation risk for u8*s8 products."""
    return any("vnni" in f for f in _cpuinfo()[1])


def describe() -> str:
    """One line for a benchmark's header: model name, CPU count, ISA flags."""
    return f"{cpu_name()}; {os.cpu_count()} CPUs; ISA flags: {' '.join(cpu_flags()) or 'none of ' + ' '.join(ISA_FLAGS)}"
