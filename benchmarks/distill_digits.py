"""Figures for `mdeploy distill` (issue 18), on scikit-learn's digits (ships with scikit-learn; nothing downloaded).

    .venv/bin/python benchmarks/distill_digits.py [--seeds 5] [--cv-seeds 1] [--threads 1] [--skip-large]

The production case first: a teacher deployed as ONNX, many unlabelled inputs it never saw, a few labels.
  - the 1,257 training images of fixtures/digits.py are split (stratified, seed 0) into 628 on which the digits CNN
    teacher is trained (fixtures/digits.py's recipe) and a pool of 629 other images: the unlabelled production
    inputs; 100 of them (stratified, seed 0) are labelled. The 540 test images are used for the printed test
    accuracy only: nothing is chosen on them.
  - (a) labels alone: the MLP 64-32-10 student (fixtures/models/digits_student.py) trained on the 100 labels with
        cross-entropy, its recipe (lr x epochs) chosen by 5-fold cross-validation inside those 100;
  - (b) `mdeploy distill` with its defaults on the 629 unlabelled inputs (mdeploy.api.distill, the ONNX teacher);
  - (c) the same with the 100 labels (`--labels` with -1 for the 529 unlabelled samples);
  - (b0), (c0): (b) and (c) with `--no-mixup --steps 2000`, the defaults before function matching, side by side.
  Targets: (c) >= (b), both >= (a) + 4 points, (b) within 1.0 point of the teacher (means over the seeds). The wall
  time per student is printed beside each (function matching runs the ONNX teacher at every step).

Defaults chosen without the test set: `--cv-seeds K` (0 skips it) runs 3-fold cross-validation inside the pool, the
teacher fixed (it never saw the pool; with mixup it runs in the loop as its ONNX export): for each recipe, a student is fitted on two folds (mdeploy.training.fit: the
selection run on a 15% split, then the refit) and its accuracy measured on the third fold (the pool's labels are
known in this data set, and used for this choice only). The best recipe should be distill's defaults.

The larger-data case of docs/distill.md (the teacher trained on all 1,257 images, the student distilled on the same
1,257 with their labels): distill's defaults side by side with the defaults before function matching (--no-mixup
--steps 2000) and those before issue 18 (lr 1e-2, 30 epochs, patience 8), same seeds, in the same run: the change
must not lose there.

The CPU's ISA flags and torch's thread count are printed first (training is seeded and, on one thread, deterministic).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mdeploy import machine  # noqa: E402  (after the path is set)

STUDENT = f"{ROOT / 'fixtures/models/digits_student.py'}:build"
# (name, TrainConfig fields): the candidates for distill's defaults
RECIPES = [
    ("previous defaults: lr 1e-2, 30 epochs, patience 8", {"lr": 1e-2, "epochs": 30, "patience": 8}),
    ("lr 3e-2, 1000 steps", {"lr": 3e-2, "steps": 1000, "patience": None}),
    ("lr 3e-2, 2000 steps", {"lr": 3e-2, "steps": 2000, "patience": None}),
    ("lr 1e-1, 2000 steps", {"lr": 1e-1, "steps": 2000, "patience": None}),
    ("lr 3e-2, 6000 steps", {"lr": 3e-2, "steps": 6000, "patience": None}),
    # function matching (mdeploy/training/augment.py): mixup with weights ~ Beta(a, a), the teacher run on each batch
    ("lr 3e-2, 2000 steps, mixup Beta(0.2)", {"lr": 3e-2, "steps": 2000, "patience": None, "mixup": 0.2}),
    ("lr 3e-2, 2000 steps, mixup Beta(1)", {"lr": 3e-2, "steps": 2000, "patience": None, "mixup": 1.0}),
    ("lr 3e-2, 6000 steps, mixup Beta(0.2)", {"lr": 3e-2, "steps": 6000, "patience": None, "mixup": 0.2}),
    ("lr 3e-2, 6000 steps, mixup Beta(1)", {"lr": 3e-2, "steps": 6000, "patience": None, "mixup": 1.0}),
    ("lr 3e-2, 12000 steps, mixup Beta(1)", {"lr": 3e-2, "steps": 12000, "patience": None, "mixup": 1.0}),
]
LABELS_ALONE = [(lr, epochs) for lr in (1e-2, 3e-2, 1e-1) for epochs in (100, 300)]  # 100 labels: 2 steps an epoch


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:  # noqa: ANN001
    import torch

    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def student(seed: int):  # noqa: ANN201
    import torch

    from fixtures.models import digits_student

    torch.manual_seed(seed)
    return digits_student.build()


def labels_alone(x: np.ndarray, y: np.ndarray, lr: float, epochs: int, seed: int):  # noqa: ANN201
    """Cross-entropy on (x, y), AdamW with distill's warm-up and cosine, the last epoch kept (a plain torch loop)."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    from mdeploy.training.loop import _lr_factor

    s = student(seed)
    opt = torch.optim.AdamW(s.parameters(), lr=lr, weight_decay=1e-4)
    per_epoch = -(-len(x) // 64)
    total = per_epoch * epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: _lr_factor(k, int(total * 0.05), total))
    xt, yt, g = torch.from_numpy(x), torch.from_numpy(y), torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        s.train()
        order = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 64):
            idx = order[i : i + 64]
            loss = F.cross_entropy(s(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return s.eval()


def folds(y: np.ndarray, k: int) -> list[np.ndarray]:
    from sklearn.model_selection import StratifiedKFold

    return [v for _, v in StratifiedKFold(k, shuffle=True, random_state=0).split(np.zeros(len(y)), y)]


def choose_labels_alone(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """5-fold cross-validation inside the labelled samples: the lr x epochs of (a)."""
    parts = folds(y, 5)
    scores = {}
    for lr, epochs in LABELS_ALONE:
        accs = []
        for v in parts:
            fit_idx = np.setdiff1d(np.arange(len(y)), v)
            accs.append(accuracy(labels_alone(x[fit_idx], y[fit_idx], lr, epochs, 0), x[v], y[v]))
        scores[(lr, epochs)] = statistics.mean(accs)
    best = max(scores, key=scores.get)
    print("  (a)'s recipe, 5-fold CV inside the 100 labels: " + ", ".join(
        f"lr {lr:g} x {e} epochs {a:.3f}" for (lr, e), a in scores.items()) + f" -> lr {best[0]:g}, {best[1]} epochs", flush=True)
    return best


def select_defaults(pool: np.ndarray, targets: np.ndarray, y_pool: np.ndarray, seeds: int, recipes: list,
                    teacher) -> None:  # noqa: ANN001
    """3-fold cross-validation of RECIPES inside the pool (the teacher never saw it), KD without labels; `teacher`:
    the teacher's output on a batch, for the recipes with mixup (run in the loop on the mixed inputs)."""
    import time

    from mdeploy.training import Dataset, TrainConfig, fit

    parts = folds(y_pool, 3)
    print(f"\ndefaults chosen by 3-fold cross-validation inside the {len(pool)}-image pool (the test set unused), {seeds} "
          "seed(s) per fold, KD without labels, mdeploy.training.fit (selection run + refit); accuracy on the held fold:",
          flush=True)
    for name, fields in recipes:
        accs = []
        start = time.perf_counter()
        for v in parts:
            fit_idx = np.setdiff1d(np.arange(len(pool)), v)
            for seed in range(seeds):
                s = student(seed)
                config = TrainConfig(seed=seed, **fields)
                result = fit(s, Dataset({"image": pool[fit_idx]}, targets[fit_idx]), config, teacher=teacher)
                s.load_state_dict(result.best_state)
                accs.append(accuracy(s.eval(), pool[v], y_pool[v]))
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"  {name:40} {statistics.mean(accs):.4f} +- {sd:.4f}  [{' '.join(f'{a:.4f}' for a in accs)}]  "
              f"{(time.perf_counter() - start) / len(accs):.1f} s per fit", flush=True)


def distilled(work: Path, teacher: Path, data: Path, seed: int, tag: str, **options) -> float:  # noqa: ANN003
    """The weights `mdeploy distill` writes (with its defaults, unless `options` say otherwise)."""
    import torch

    from mdeploy import api

    weights = work / f"{tag}{seed}.pt"
    api.distill(str(teacher), STUDENT, str(work / f"{tag}{seed}.onnx"), str(data), seed=seed, save_weights=str(weights),
                force=True, **options)
    s = student(seed)
    s.load_state_dict(torch.load(weights, weights_only=True))
    return s.eval()


def summary(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} +- {sd:.4f}  [{' '.join(f'{v:.4f}' for v in values)}]"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cv-seeds", type=int, default=1, help="seeds per fold of the defaults' selection (0: skip it)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--skip-large", action="store_true", help="skip the larger-data case")
    parser.add_argument("--cv-recipes", default="", help="comma-separated indices into RECIPES (default: all)")
    parser.add_argument("--cv-only", action="store_true", help="stop after the defaults' selection")
    args = parser.parse_args()

    import torch
    from sklearn.model_selection import train_test_split

    if args.threads:
        torch.set_num_threads(args.threads)
    from fixtures import digits
    from mdeploy.training import TorchTeacher, teacher_outputs
    from mdeploy import registry
    from mdeploy.core import ModelRef
    from mdeploy.training.teacher import query
    from mdeploy.verbs.distill import LR, STEPS, STEPS_NO_MIXUP

    print(f"cpu: {machine.describe()}")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; distill's defaults: lr {LR:g}; mixup with "
          f"{STEPS} steps when some samples have no label, no mixup with {STEPS_NO_MIXUP} steps when all do")
    x_train, x_test, y_train, y_test = digits.load()
    x_t, x_pool, y_t, y_pool = train_test_split(x_train, y_train, test_size=629, random_state=0, stratify=y_train)
    labelled = np.sort(train_test_split(np.arange(len(x_pool)), train_size=100, random_state=0, stratify=y_pool)[0])
    partial = np.full(len(x_pool), -1, dtype=np.int64)
    partial[labelled] = y_pool[labelled]
    teacher = digits.train(x_t, y_t)
    teacher_acc = accuracy(teacher, x_test, y_test)
    print(f"\nproduction case: teacher trained on {len(x_t)} images, test accuracy {teacher_acc:.4f}; pool of {len(x_pool)} "
          f"unlabelled images, {len(labelled)} of them labelled; {len(x_test)} test images", flush=True)
    if args.cv_seeds:  # first: the choice is made before any test-set figure is printed
        targets = teacher_outputs(TorchTeacher(teacher, ["image"]), {"image": x_pool}, "output")
        chosen = [RECIPES[int(i)] for i in args.cv_recipes.split(",")] if args.cv_recipes else RECIPES
        with tempfile.TemporaryDirectory() as tmp:  # in the loop, the teacher runs as distill runs it: its ONNX export
            digits.export(teacher, Path(tmp) / "teacher.onnx", None)
            runner = registry.open_runner(ModelRef.parse(str(Path(tmp) / "teacher.onnx")), "cpu")
            select_defaults(x_pool, targets, y_pool, args.cv_seeds, chosen, query(runner, "logits"))
        if args.cv_only:
            return
    lr, epochs = choose_labels_alone(x_pool[labelled], y_pool[labelled])

    # (b0), (c0): the same without function matching, at the schedule of the defaults before it (2000 steps)
    before = {"mixup": False, "steps": 2000}
    acc: dict[str, list[float]] = {k: [] for k in ("a", "b", "c", "b0", "c0")}
    wall: dict[str, float] = dict.fromkeys(acc, 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        digits.export(teacher, work / "teacher.onnx", None)
        np.savez(work / "pool.npz", image=x_pool)
        np.save(work / "partial.npy", partial)
        teach, pool, part = work / "teacher.onnx", work / "pool.npz", str(work / "partial.npy")
        for seed in range(args.seeds):
            runs = {"a": lambda: labels_alone(x_pool[labelled], y_pool[labelled], lr, epochs, seed),
                    "b": lambda: distilled(work, teach, pool, seed, "b"),
                    "c": lambda: distilled(work, teach, pool, seed, "c", labels=part),
                    "b0": lambda: distilled(work, teach, pool, seed, "b0", **before),
                    "c0": lambda: distilled(work, teach, pool, seed, "c0", labels=part, **before)}
            for key, make in runs.items():
                start = time.perf_counter()
                model = make()
                wall[key] += time.perf_counter() - start
                acc[key].append(accuracy(model, x_test, y_test))
            print(f"  seed {seed}: " + "  ".join(f"({k}) {v[-1]:.4f}" for k, v in acc.items()), flush=True)
    mean = {k: statistics.mean(v) for k, v in acc.items()}
    print(f"\ntest accuracy, {args.seeds} seeds (mean +- sd [per seed]; wall seconds per student, on this machine as loaded):")
    print(f"  teacher (CNN, 628 labelled images)                     {teacher_acc:.4f}")
    for key, name in (("a", "(a) labels alone (100 labels)"), ("b", "(b) distill, defaults, no labels"),
                      ("c", "(c) distill, defaults, 100 labels"),
                      ("b0", "(b0) (b) --no-mixup --steps 2000 (defaults before)"),
                      ("c0", "(c0) (c) --no-mixup --steps 2000 (defaults before)")):
        print(f"  {name:54} {summary(acc[key])}  {wall[key] / args.seeds:.1f} s")
    checks = [("(c) >= (b)", mean["c"] >= mean["b"]),
              ("(b) >= (a) + 4 points", mean["b"] - mean["a"] >= 0.04),
              ("(c) >= (a) + 4 points", mean["c"] - mean["a"] >= 0.04),
              ("(b) within 1.0 point of the teacher", teacher_acc - mean["b"] <= 0.01)]
    for name, met in checks:
        print(f"  target {name}: {'met' if met else 'MISSED'}")
    print(f"  (b) - (a) {100 * (mean['b'] - mean['a']):+.2f} points, (c) - (a) {100 * (mean['c'] - mean['a']):+.2f}, "
          f"(c) - (b) {100 * (mean['c'] - mean['b']):+.2f}, teacher - (b) {100 * (teacher_acc - mean['b']):+.2f}, "
          f"teacher - (c) {100 * (teacher_acc - mean['c']):+.2f}, teacher - (b0) {100 * (teacher_acc - mean['b0']):+.2f}, "
          f"teacher - (c0) {100 * (teacher_acc - mean['c0']):+.2f}", flush=True)

    if args.skip_large:
        return
    big = digits.train(x_train, y_train)
    print(f"\nlarger-data case (docs/distill.md): teacher trained on all {len(x_train)} training images, test accuracy "
          f"{accuracy(big, x_test, y_test):.4f}; the student distilled on the same {len(x_train)} images with their labels")
    variants = {"new": ("distill, defaults (every sample labelled: no mixup)", {}),
                "mixup": ("distill --mixup (6000 steps)", {"mixup": True, "steps": 6000}),
                "before": ("distill --no-mixup --steps 2000 (defaults before)", before),
                "old": ("distill --lr 1e-2 --epochs 30 --patience 8 (before issue 18)", {"lr": 1e-2, "epochs": 30, "patience": 8,
                                                                                        "mixup": False})}
    large: dict[str, list[float]] = {k: [] for k in variants}
    spent: dict[str, float] = dict.fromkeys(variants, 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        digits.export(big, work / "teacher.onnx", None)
        np.savez(work / "train.npz", image=x_train, labels=y_train)
        for seed in range(args.seeds):
            for key, (_, options) in variants.items():
                start = time.perf_counter()
                model = distilled(work, work / "teacher.onnx", work / "train.npz", seed, key, **options)
                spent[key] += time.perf_counter() - start
                large[key].append(accuracy(model, x_test, y_test))
            print(f"  seed {seed}: " + "  ".join(f"{k} {v[-1]:.4f}" for k, v in large.items()), flush=True)
    for key, (name, _) in variants.items():
        print(f"  {name:62} {summary(large[key])}  {spent[key] / args.seeds:.1f} s")
    for key in ("before", "old"):
        met = statistics.mean(large["new"]) >= statistics.mean(large[key])
        print(f"  target defaults >= {variants[key][0]}: {'met' if met else 'MISSED'}")


if __name__ == "__main__":
    main()
