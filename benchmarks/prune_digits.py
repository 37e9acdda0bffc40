"""The trained digits CNN pruned to <= 0.4x MACs, recovered by distillation on the digits training split:
test accuracy before and after (the real CLI: `mdeploy prune --target-macs 0.4 --data ... --eval-data ...`).

    python benchmarks/prune_digits.py [EPOCHS]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from fixtures import prune_data
    from mdeploy.machine import cpu_flags

    epochs = sys.argv[1] if len(sys.argv) > 1 else "30"
    with tempfile.TemporaryDirectory() as tmp:
        paths = prune_data.build(Path(tmp))
        rows = []
        for label, extra in (("no recovery", []), (f"distillation, {epochs} epochs", ["--data", paths["train"], "--epochs", epochs])):
            proc = subprocess.run(
                [sys.executable, "-m", "mdeploy", "prune", prune_data.FACTORY, "--weights", paths["weights"], "-o",
                 Path(tmp) / "pruned.onnx", "--target-macs", "0.4", *extra, "--eval-data", paths["test"], "--force", "--json"],
                capture_output=True, text=True)
            if proc.returncode not in (0, 1):
                raise SystemExit(proc.stderr)
            rows.append((label, json.loads(proc.stdout)))
    print(f"CPU flags: {' '.join(cpu_flags()) or 'none found'}")
    for label, r in rows:
        a, lat = r["accuracy"], r.get("latency", {})
        print(f"{label:<28} MACs {r['macs']['ratio']:.3f}x  params {r['parameters']['ratio']:.3f}x  test accuracy "
              f"{a['before']:.4f} -> {a['after']:.4f} (drop {a['drop'] * 100:+.2f} points, {a['samples']} samples)  "
              f"latency {lat.get('ratio', float('nan')):.3f}x")


if __name__ == "__main__":
    main()
