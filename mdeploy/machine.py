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


def int8_isa() -> dict[str, object]:
    """The instruction set this CPU's int8 GEMM/Conv kernels use, and what it implies for an int8 model's speed.

    onnxruntime's MLAS picks its u8*s8 kernels by these flags, best first: AMX (tile matrix multiply, Sapphire
    Rapids on), AVX-512 VNNI and AVX-VNNI (a 4-way 8-bit dot product per instruction), plain AVX2 (pmaddubsw,
    which adds pairs into 16 bits and can saturate, hence 7-bit weights there), and on ARM the dot-product
    (asimddp) and i8mm extensions. What a path implies is what benchmarks/int8_limit.py measures on such CPUs.
    """
    have = set(cpu_flags())
    if "amx_int8" in have:
        path, implies = "AMX", "int8 GEMMs can run several times faster than fp32 (onnxruntime uses AMX for large GEMMs)"
    elif "avx512_vnni" in have:
        path, implies = "AVX-512 VNNI", "int8 GEMM/Conv kernels run about 2-4x faster than fp32"
    elif "avx_vnni" in have:
        path, implies = "AVX-VNNI", "int8 GEMM/Conv kernels run about 2-3x faster than fp32 (256-bit VNNI)"
    elif "avx2" in have:
        path = "AVX2 (no VNNI)"
        implies = "int8 kernels gain at most about 2x over fp32, and 8-bit products can saturate (7-bit weights are used)"
    elif "i8mm" in have or "asimddp" in have:
        path = "ARM " + " + ".join(name for f, name in (("asimddp", "dot product"), ("i8mm", "i8mm")) if f in have)
        implies = "int8 GEMMs run about 2-4x faster than fp32 with signed 8-bit activations"
    elif "asimd" in have:
        path, implies = "ARM NEON (no dot product)", "int8 kernels gain little over fp32"
    else:
        path, implies = "none known", "no fast int8 kernel path was recognised: expect little or no speed-up"
    depthwise = "" if is_arm() else "; depthwise convolutions have no fast int8 kernel on x86"
    return {"flags": sorted(have & set(ISA_FLAGS), key=ISA_FLAGS.index), "int8_path": path, "implies": implies + depthwise}


def is_arm() -> bool:
    import platform

    arch = platform.machine().lower()
    return arch in ("arm64", "aarch64") or arch.startswith("arm")
