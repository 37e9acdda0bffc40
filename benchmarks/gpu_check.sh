#!/usr/bin/env bash
# The --device cuda checks of issue 11, for a GPU machine: run from the repo root, no network, a few minutes.
#
#     bash benchmarks/gpu_check.sh            # results also under $OUT (or build/gpu_check)
#
# What the machine needs: python3 with torch (a CUDA build that sees the GPU), onnx, onnxruntime, numpy, typer, rich,
# pyyaml and pytest, as the lent H200 image has them. Nothing is downloaded: mdeploy itself is installed without its
# dependencies (`pip install --no-deps --no-build-isolation -e .`); where that install fails (an older setuptools),
# its entry points are declared in a dist-info folder under build/ instead, which is all the plugin registry reads.
#
# It runs, each step under its own time limit and whatever the previous one gave:
#   1. the machine: GPU (nvidia-smi), CPU model and ISA flags, versions of torch/CUDA/onnxruntime (its providers)
#   2. pytest -m gpu tests/devices: torch CPU vs CUDA validate, the torch runner on CUDA, benchmark GPU memory, and the
#      onnxruntime CUDA tests (skipped with the reason without onnxruntime-gpu)
#   3. one `mdeploy validate --device cuda` and `mdeploy benchmark --device cuda` on the tiny CNN, printing figures:
#      CPU and CUDA benchmarks interleaved (cpu, cuda, cpu, cuda) so the ratio is measured side by side
#   4. `mdeploy benchmark --device cuda` on an ONNX model: runs on onnxruntime-gpu, or exit 2 naming onnxruntime-gpu
# The exit status is the number of steps that did not give what they should (0: all did).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RESULTS=${OUT:-build/gpu_check}
WORK=$(mktemp -d /tmp/mdeploy_gpu_check.XXXXXX)
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
failed=0
step() { echo; echo "== $*"; }

step "1. machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || echo "nvidia-smi: not available"
"$PY" - <<'EOF'
import platform

flags = set()
name = "?"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name") and name == "?":
            name = line.split(":", 1)[1].strip()
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
except OSError:
    pass
isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16") if f in flags]
print(f"cpu: {name}; ISA: {' '.join(isa) or 'none of avx2/avx512/vnni/amx'}; python {platform.python_version()}")
import torch

print(f"torch {torch.__version__} (CUDA {torch.version.cuda}); cuda available: {torch.cuda.is_available()}", end="")
print(f"; device: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "")
import onnxruntime

print(f"onnxruntime {onnxruntime.__version__}; providers: {', '.join(onnxruntime.get_available_providers())}")
try:
    import pynvml  # noqa: F401

    print("pynvml: importable (onnxruntime's GPU memory is read from NVML)")
except ImportError:
    print("pynvml: not importable (onnxruntime's GPU memory is reported as null)")
EOF
[ $? -eq 0 ] || failed=$((failed + 1))

step "install mdeploy without its dependencies"
if ! "$PY" -c "import typer, rich, yaml, pytest, numpy, onnx, onnxruntime, torch" 2>"$WORK/imports.txt"; then
    echo "missing a package mdeploy or its tests import (nothing can be downloaded here):"; cat "$WORK/imports.txt"
    exit 99
fi
if "$PY" -c "import mdeploy, pathlib, sys; sys.exit(pathlib.Path(mdeploy.__file__).parent != pathlib.Path('mdeploy').resolve())" \
    && "$PY" -c "from importlib.metadata import distribution; distribution('mdeploy')" 2>/dev/null; then
    echo "mdeploy from this checkout is installed already"
elif "$PY" -m pip install -q --no-deps --no-build-isolation -e . >"$WORK/pip.txt" 2>&1; then
    echo "pip install --no-deps --no-build-isolation -e . : done"
else
    echo "pip install -e . failed ($(tail -n 1 "$WORK/pip.txt")); declaring mdeploy's entry points in build/gpu_site"
    "$PY" - <<'EOF'
import tomllib
from pathlib import Path

project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
info = Path("build/gpu_site") / f"mdeploy-{project['version']}.dist-info"
info.mkdir(parents=True, exist_ok=True)
(info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: mdeploy\nVersion: {project['version']}\n")
lines = []
for group, entries in project["entry-points"].items():
    lines.append(f"[{group}]")
    lines += [f"{name} = {target}" for name, target in entries.items()]
lines += ["[console_scripts]"] + [f"{name} = {target}" for name, target in project["scripts"].items()]
(info / "entry_points.txt").write_text("\n".join(lines) + "\n")
EOF
    export PYTHONPATH="$PWD:$PWD/build/gpu_site${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c "from mdeploy import registry; from mdeploy.core import Format; print('runners:', registry.runner_for(Format.ONNX).__name__, registry.runner_for(Format.PYTORCH_EXPORTED).__name__)" \
    || { echo "mdeploy's plugin registry finds no runners"; exit 98; }

step "2. pytest -m gpu tests/devices"
timeout 240 "$PY" -m pytest -m gpu tests/devices -p no:xdist -q -rs --junitxml="$RESULTS/gpu_tests.xml" 2>&1 \
    | tee "$RESULTS/gpu_tests.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || failed=$((failed + 1))

step "3. validate and benchmark the tiny CNN on CUDA"
"$PY" - "$WORK" <<'EOF'
import sys
from pathlib import Path

import torch

sys.path.insert(0, ".")
from fixtures import onnx_graphs
from fixtures.models import tiny_cnn

out = Path(sys.argv[1])
cnn = tiny_cnn.build()
image = tiny_cnn.example_inputs()["image"]
ep = torch.export.export(cnn, (image,), dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1, max=64)}})
torch.export.save(ep, out / "tiny_cnn.pt2")
onnx_graphs.mlp(out / "mlp.onnx")
print("built", out / "tiny_cnn.pt2", out / "mlp.onnx")
EOF
[ $? -eq 0 ] || failed=$((failed + 1))
timeout 120 "$PY" -m mdeploy validate "$WORK/tiny_cnn.pt2" "$WORK/tiny_cnn.pt2" --device cuda --input image:16x3x32x32 \
    --samples 5 --report "$RESULTS/validate_cuda.json"
[ $? -eq 0 ] || failed=$((failed + 1))
for round in 1 2; do
    for device in cpu cuda; do
        timeout 120 "$PY" -m mdeploy benchmark "$WORK/tiny_cnn.pt2" --device "$device" --batch 32 --warmup 10 \
            --iterations 200 --json >"$RESULTS/bench_${device}_${round}.json" || { failed=$((failed + 1)); echo "benchmark $device failed"; }
    done
done
"$PY" - "$RESULTS" <<'EOF'
import json
import statistics
import sys
from pathlib import Path

results = Path(sys.argv[1])
try:
    validate = json.loads((results / "validate_cuda.json").read_text())
except (OSError, ValueError):
    print("validate --device cuda: no report")
else:
    for c in validate["comparisons"]:
        for o in c["outputs"]:
            print(f"validate {validate['reference_device']} vs {validate['candidate_device']}: output {o['name']} "
                  f"max abs error {o['max_abs_error']:.3g}, passed {o['passed']}")
rows = {}
for path in sorted([*results.glob("bench_cpu_*.json"), *results.glob("bench_cuda_*.json")]):
    try:
        row = json.loads(path.read_text())["models"][0]
    except (ValueError, KeyError, IndexError):
        print(f"{path.name}: no report")
        continue
    rows.setdefault(path.stem.split("_")[1], []).append(row)
for device, runs in rows.items():
    for row in runs:
        gpu = row.get("gpu_memory_bytes")
        print(f"benchmark {device}: batch {row['batch']}, p50 {row['latency_ms']['p50']:.3f} ms, mean "
              f"{row['latency_ms']['mean']:.3f} ms, {row['throughput_items_per_s']:.0f} items/s, host peak RSS "
              f"{row['peak_rss_bytes'] / 2**20:.1f} MiB (+{row['peak_memory_bytes'] / 2**20:.1f} MiB), GPU memory "
              + (f"{gpu / 2**20:.2f} MiB ({row['gpu_memory_source']})" if gpu is not None else "-"))
if {"cpu", "cuda"} <= set(rows):
    p50 = {d: statistics.median(r["latency_ms"]["p50"] for r in runs) for d, runs in rows.items()}
    print(f"tiny CNN, batch 32: CPU p50 / CUDA p50 = {p50['cpu'] / p50['cuda']:.2f}x (median of the interleaved runs)")
EOF

step "4. onnxruntime on CUDA"
timeout 120 "$PY" -m mdeploy benchmark "$WORK/mlp.onnx" --device cuda --iterations 200 --json >"$RESULTS/bench_ort_cuda.json" \
    2>"$WORK/ort.txt"
code=$?
cat "$WORK/ort.txt"
if "$PY" -c "import onnxruntime, sys; sys.exit('CUDAExecutionProvider' not in onnxruntime.get_available_providers())"; then
    if [ $code -ne 0 ]; then
        echo "onnxruntime-gpu is here but the CUDA benchmark failed (exit $code)"; failed=$((failed + 1))
    else
        "$PY" - "$RESULTS/bench_ort_cuda.json" <<'EOF' || failed=$((failed + 1))
import json
import sys

row = json.load(open(sys.argv[1]))["models"][0]
gpu = row["gpu_memory_bytes"]
print(f"onnxruntime-gpu: p50 {row['latency_ms']['p50']:.3f} ms; GPU memory "
      + (f"{gpu / 2**20:.2f} MiB ({row['gpu_memory_source']})" if gpu is not None else "not measured") + "; notes: "
      + " | ".join(row["notes"]))
EOF
    fi
else
    # no onnxruntime-gpu here: the run must be exit 2 with one error line naming it
    if [ $code -eq 2 ] && grep -q "onnxruntime-gpu" "$WORK/ort.txt" && ! grep -q Traceback "$WORK/ort.txt"; then
        echo "no onnxruntime-gpu here: exit 2 naming it, as it should"
    else
        echo "expected exit 2 naming onnxruntime-gpu, got exit $code"; failed=$((failed + 1))
    fi
fi

step "done: $failed step(s) did not give what they should; results in $RESULTS"
rm -rf "$WORK"
exit "$failed"
