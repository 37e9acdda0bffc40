"""`mdeploy validate` over every ONNX backend node-test model (onnx's operator tests, with their inputs).

For each case that onnxruntime itself runs on its data: validate the model against itself with that data (must
be exit 0) and against a copy whose first float output is offset beyond tolerance (must be exit 1). Cases mdeploy
cannot be handed (sequence/optional/map inputs, dtypes an .npz cannot hold) and cases onnxruntime refuses are
counted, by reason, and left out of the rates. Runs in-process through mdeploy.api (exit codes as the CLI maps them).

    python benchmarks/onnx_node_validate.py [--every 1] [--show 20]
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def exit_code(reference: Path, candidate: Path, data: Path) -> tuple[int, str]:
    """The exit code `mdeploy validate REF CAND --data DATA` gives, and its error or failed outputs."""
    from mdeploy import api
    from mdeploy.errors import MdeployError

    try:
        report = api.validate(str(reference), str(candidate), data=str(data))
    except MdeployError as exc:
        return exc.exit_code, exc.message
    except Exception as exc:  # noqa: BLE001 - a bug: the CLI exits 3 with a traceback
        return 3, f"{type(exc).__name__}: {exc}"
    failed = [o.name for c in report.comparisons for o in c.outputs if not o.passed]
    return (0, "") if report else (1, "failed: " + ", ".join(failed))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=1, help="every N-th operator module (1: all)")
    parser.add_argument("--show", type=int, default=20, help="list at most this many cases per outcome")
    args = parser.parse_args()

    from fixtures import onnx_node_cases as nodes
    from mdeploy.logs import set_verbose

    set_verbose(False)
    start = time.perf_counter()
    cases = nodes.load(nodes.sample_modules(args.every))
    excluded: collections.Counter[str] = collections.Counter()
    same: dict[int, list[str]] = collections.defaultdict(list)
    perturbed: dict[int, list[str]] = collections.defaultdict(list)
    unperturbable = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(cases):
            folder = Path(tmp) / f"{i:04d}"
            written = nodes.write(case, folder)
            if not written.kept:
                assert written.why is not None
                excluded[written.why.split(":")[0] if written.why.startswith("onnxruntime") else written.why] += 1
                continue
            assert written.model and written.data
            code, why = exit_code(written.model, written.model, written.data)
            same[code].append(f"{case.name}: {why}" if why else case.name)
            copy = folder / "perturbed.onnx"
            if nodes.perturb(written, copy) is None:
                unperturbable += 1
                continue
            code, why = exit_code(written.model, copy, written.data)
            perturbed[code].append(f"{case.name}: {why}" if why else case.name)
    kept = sum(len(v) for v in same.values())
    judged = sum(len(v) for v in perturbed.values())
    print(f"{len(cases)} node-test cases from {len(nodes.sample_modules(args.every))} operator modules, "
          f"{time.perf_counter() - start:.0f} s")
    print(f"left out ({sum(excluded.values())}): " + ", ".join(f"{v} {k}" for k, v in excluded.most_common()))
    print(f"kept (onnxruntime runs the model on its data): {kept}")
    rate = len(same[0]) / kept if kept else 0.0
    print(f"model vs itself: exit 0 in {len(same[0])}/{kept} = {rate:.1%} (target >= 99%) "
          f"{'MET' if rate >= 0.99 else 'NOT MET'}")
    for code in sorted(c for c in same if c):
        print(f"  exit {code}: {len(same[code])}")
        for line in same[code][: args.show]:
            print(f"    {line[:200]}")
    prate = len(perturbed[1]) / judged if judged else 0.0
    print(f"perturbed copy (an output offset by 1 + 2*max|y|, or flipped): exit 1 in {len(perturbed[1])}/{judged} = {prate:.1%} "
          f"({unperturbable} have no finite, non-empty float/int/bool output to change)")
    for code in sorted(c for c in perturbed if c != 1):
        print(f"  exit {code}: {len(perturbed[code])}")
        for line in perturbed[code][: args.show]:
            print(f"    {line[:200]}")
    return 0 if rate >= 0.99 else 1


if __name__ == "__main__":
    sys.exit(main())
