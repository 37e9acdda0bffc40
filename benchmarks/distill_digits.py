"""Figures for `mdeploy distill` (issue 9), on scikit-learn's digits (ships with scikit-learn; nothing downloaded).

    .venv/bin/python benchmarks/distill_digits.py [--epochs 30] [--seeds 5] [--rounds 3] [--threads N] [--cv-seeds 4]

Teacher: the trained digits CNN of fixtures/digits.py (exported to ONNX for (c)). Student: an MLP 64-32-10
(fixtures/models/digits_student.py). What each student gets, for every seed (the seed sets its initial weights
and its shuffling; the mean and spread over the seeds are printed, so one lucky seed decides nothing):
  (a) labels alone: cross-entropy, all 1,257 training images, `--epochs` epochs, AdamW at distill's default lr and
      weight decay with distill's schedule (5% linear warm-up, cosine to 0), last epoch kept;
  (b) plain KD with textbook settings (PyTorch's knowledge-distillation tutorial: T=2, 0.25 soft + 0.75 hard,
      Adam lr 1e-3, no schedule), all 1,257 images, `--epochs` epochs, last epoch kept;
  (c) `mdeploy distill` with its defaults (mdeploy.api.distill, the ONNX teacher, labels given): the epoch count
      chosen on a 15% held-out split of the same 1,257 images (at most `--epochs`), then the refit on all 1,257
      for that many epochs. So every student's final weights saw the same 1,257 images for at most `--epochs`
      epochs; (c) also spent one selection run on 85% of them.
Test accuracy on the 540 test images (never used for training or selection) for each and for the teacher.
Then the recipes of the selection below, each trained the same way (all 1,257 images, `--epochs` epochs, last epoch,
plain loop), side by side on the test set: it confirms what the selection found, it chooses nothing.

Recipe selection (`--cv-seeds K`, 0 skips it): which recipe to make distill's default is chosen WITHOUT the test set,
by 3-fold cross-validation over the 1,257 training images: for each fold a teacher is trained (fixtures/digits.py's
recipe) on the other two folds only, so the validation fold is unseen by teacher and student alike (a validation
split of the full teacher's own training data flatters KD: the teacher has memorised it). K seeds per fold.
The recipes: labels alone and KD at distill's lr and at higher ones, and gaussian pixel noise (sigma 0.1, a fresh
draw per batch) with labels alone and with KD where the teacher runs per batch on the same noisy view ("consistent
teaching", Beyer et al. 2022) or once on the clean images (its targets reused for the noisy view).

Time per epoch: the harness (mdeploy.training.train) and a plain torch loop with the same data (the 1,068-image
training part of the split), batch, KD loss, AdamW and schedule, interleaved epoch by epoch in one process (the
plain epoch runs inside the harness's per-epoch callback), `--rounds` runs of `--epochs` epochs. Printed: the median
of the per-epoch ratios of the training steps, the held-out evaluation cost separately, and the whole harness epoch
(evaluation and checkpoint copy included). The CPU's ISA flags and torch's thread count are printed first.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mdeploy import machine  # noqa: E402  (after the path is set)


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:  # noqa: ANN001
    import torch

    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def schedule(optimizer, steps: int, warmup: float):  # noqa: ANN001, ANN201
    """Distill's schedule, written as anyone would: linear warm-up, then cosine to 0, stepped per batch."""
    import torch

    w = int(steps * warmup)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: (k + 1) / w if w and k < w else 0.5 * (1 + math.cos(math.pi * min(1.0, (k - w) / max(1, steps - w)))))


class PlainLoop:
    """The loop anyone writes: shuffle, forward, loss, backward, step (optimizer and schedule), epoch by epoch."""

    def __init__(self, student, x, targets, y, batch: int, loss_fn, optimizer, sched, seed: int) -> None:  # noqa: ANN001
        import torch

        self.student, self.loss_fn, self.optimizer, self.sched, self.batch = student, loss_fn, optimizer, sched, batch
        self.x, self.t, self.y = torch.from_numpy(x), torch.from_numpy(targets), torch.from_numpy(y)
        self.g = torch.Generator().manual_seed(seed)

    def epoch(self) -> float:
        import torch

        start = time.perf_counter()
        self.student.train()
        order = torch.randperm(len(self.x), generator=self.g)
        for i in range(0, len(self.x), self.batch):
            idx = order[i : i + self.batch]
            loss = self.loss_fn(self.student(self.x[idx]), self.t[idx], self.y[idx])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.sched is not None:
                self.sched.step()
        return time.perf_counter() - start


@dataclass(frozen=True)
class Recipe:
    """One way to train the student in a plain loop: cross-entropy on labels or distill's KD loss, AdamW with distill's
    schedule; `noise`: gaussian pixel noise of this sigma on each batch (a fresh draw each time), the teacher run on
    the noisy batch (`teacher_per_batch`) or its clean-image targets reused."""

    name: str
    loss: str  # "ce" or "kd"
    lr: float
    temperature: float = 4.0
    alpha: float = 0.9
    noise: float = 0.0
    teacher_per_batch: bool = True


RECIPES = [
    Recipe("labels alone, lr 1e-2 (= a)", "ce", 1e-2),
    Recipe("KD T=4 alpha 0.9, lr 1e-2 (= c's loss)", "kd", 1e-2),
    Recipe("labels alone, lr 3e-2", "ce", 3e-2),
    Recipe("KD T=4 alpha 0.9, lr 1e-1", "kd", 1e-1),
    Recipe("KD T=1 alpha 0.9, lr 3e-2", "kd", 3e-2, temperature=1.0),
    Recipe("labels + noise 0.1, lr 3e-2", "ce", 3e-2, noise=0.1),
    Recipe("KD T=4 + noise 0.1, teacher per batch, lr 1e-1", "kd", 1e-1, noise=0.1),
    Recipe("KD T=4 + noise 0.1, clean-image targets, lr 1e-1", "kd", 1e-1, noise=0.1, teacher_per_batch=False),
]


def train_recipe(recipe: Recipe, x: np.ndarray, y: np.ndarray, teacher, seed: int, epochs: int, batch: int,  # noqa: ANN001
                 weight_decay: float, warmup: float):  # noqa: ANN201
    """The student trained by `recipe` on (x, y) for `epochs` epochs, last epoch kept (a plain torch loop)."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    from fixtures.models import digits_student
    from mdeploy.training.loss import kd_loss

    torch.manual_seed(seed)
    s = digits_student.build()
    opt = torch.optim.AdamW(s.parameters(), lr=recipe.lr, weight_decay=weight_decay)
    sched = schedule(opt, epochs * -(-len(x) // batch), warmup)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    with torch.no_grad():
        clean = teacher(xt)
    order_g, noise_g = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1000)
    for _ in range(epochs):
        s.train()
        order = torch.randperm(len(xt), generator=order_g)
        for i in range(0, len(xt), batch):
            idx = order[i : i + batch]
            xb = xt[idx]
            if recipe.noise:
                xb = xb + torch.randn(xb.shape, generator=noise_g) * recipe.noise
            out = s(xb)
            if recipe.loss == "ce":
                loss = F.cross_entropy(out, yt[idx])
            else:
                if recipe.noise and recipe.teacher_per_batch:
                    with torch.no_grad():
                        targets = teacher(xb)
                else:
                    targets = clean[idx]
                loss = kd_loss(out, targets, yt[idx], recipe.temperature, recipe.alpha)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return s.eval()


def stratified_folds(y: np.ndarray, k: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    for c in np.unique(y):
        for j, i in enumerate(rng.permutation(np.where(y == c)[0])):
            folds[j % k].append(int(i))
    return [np.sort(np.array(f)) for f in folds]


def select(x: np.ndarray, y: np.ndarray, seeds: int, epochs: int, batch: int, weight_decay: float, warmup: float) -> None:
    """3-fold cross-validation of RECIPES over the training images only (a teacher per fold, on its training folds)."""
    from fixtures import digits

    folds = stratified_folds(y, 3)
    parts = []
    for f in range(3):
        fit_idx = np.sort(np.concatenate([folds[j] for j in range(3) if j != f]))
        parts.append((fit_idx, folds[f], digits.train(x[fit_idx], y[fit_idx])))
    teacher_acc = [accuracy(t, x[v], y[v]) for _, v, t in parts]
    print(f"\nrecipe selection: 3-fold cross-validation on the {len(y)} training images (test set unused), {seeds} seeds per "
          f"fold, {epochs} epochs, batch {batch}; each fold's teacher trained on its other two folds: validation accuracy "
          f"{statistics.mean(teacher_acc):.4f} ({' '.join(f'{a:.4f}' for a in teacher_acc)})", flush=True)
    base: list[float] | None = None
    for recipe in RECIPES:
        accs = [accuracy(train_recipe(recipe, x[fi], y[fi], t, seed, epochs, batch, weight_decay, warmup), x[v], y[v])
                for fi, v, t in parts for seed in range(seeds)]
        base = base or accs
        diff = [a - b for a, b in zip(accs, base)]
        print(f"  {recipe.name:52} {statistics.mean(accs):.4f} +- {statistics.stdev(accs):.4f}   vs first, paired: "
              f"{statistics.mean(diff):+.4f} +- {statistics.stdev(diff) / math.sqrt(len(diff)):.4f} (se)", flush=True)


def summary(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"mean {statistics.mean(values):.4f} +- {sd:.4f}  [{' '.join(f'{v:.4f}' for v in values)}]"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--cv-seeds", type=int, default=4, help="seeds per fold of the recipe selection (0: skip it)")
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F  # noqa: N812

    if args.threads:
        torch.set_num_threads(args.threads)
    from fixtures import digits
    from fixtures.models import digits_student
    from mdeploy import api
    from mdeploy.training import Dataset, TorchTeacher, TrainConfig, split, teacher_outputs, train
    from mdeploy.training.loss import kd_loss
    from mdeploy.verbs.distill import HELD_OUT_FRACTION, Options

    print(f"cpu: {machine.describe()}")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    d = Options(teacher="", student="", output="", data="")
    x_train, x_test, y_train, y_test = digits.load()
    teacher = digits.train(x_train, y_train)
    targets = teacher_outputs(TorchTeacher(teacher, ["image"]), {"image": x_train}, "output")
    epochs, batch = args.epochs, d.batch_size
    steps = epochs * -(-len(x_train) // batch)

    if args.cv_seeds:  # first: the choice is made before any test-set figure is printed
        select(x_train, y_train, args.cv_seeds, epochs, batch, d.weight_decay, TrainConfig.warmup)

    def student(seed: int):  # noqa: ANN202
        torch.manual_seed(seed)
        return digits_student.build()

    def ce(s, t, y):  # noqa: ANN001, ANN202
        return F.cross_entropy(s, y)

    acc: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    chosen: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        digits.export(teacher, work / "teacher.onnx", None)
        np.savez(work / "train.npz", image=x_train, labels=y_train)
        for seed in range(args.seeds):
            # (a) labels alone
            s = student(seed)
            opt = torch.optim.AdamW(s.parameters(), lr=d.lr, weight_decay=d.weight_decay)
            loop = PlainLoop(s, x_train, targets, y_train, batch, ce, opt, schedule(opt, steps, TrainConfig.warmup), seed)
            for _ in range(epochs):
                loop.epoch()
            acc["a"].append(accuracy(s.eval(), x_test, y_test))
            # (b) textbook KD
            s = student(seed)
            opt = torch.optim.Adam(s.parameters(), lr=1e-3)
            loop = PlainLoop(s, x_train, targets, y_train, batch, lambda s_, t, y: kd_loss(s_, t, y, 2.0, 0.25), opt, None, seed)
            for _ in range(epochs):
                loop.epoch()
            acc["b"].append(accuracy(s.eval(), x_test, y_test))
            # (c) mdeploy distill defaults
            out = work / f"student{seed}.onnx"
            report = api.distill(str(work / "teacher.onnx"), f"{ROOT / 'fixtures/models/digits_student.py'}:build", str(out),
                                 str(work / "train.npz"), epochs=epochs, seed=seed, save_weights=str(work / f"s{seed}.pt"))
            s = digits_student.build()
            s.load_state_dict(torch.load(work / f"s{seed}.pt", weights_only=True))
            acc["c"].append(accuracy(s.eval(), x_test, y_test))
            chosen.append(report.data["training"]["best_epoch"])
            print(f"seed {seed}: (a) {acc['a'][-1]:.4f}  (b) {acc['b'][-1]:.4f}  (c) {acc['c'][-1]:.4f} "
                  f"(refit for {chosen[-1]} epochs)", flush=True)
    print(f"\ntest accuracy on {len(y_test)} images, {args.seeds} seeds, {epochs} epochs budget, batch {batch}:")
    print(f"  teacher (CNN, {sum(p.numel() for p in teacher.parameters()):,} parameters)      {accuracy(teacher, x_test, y_test):.4f}")
    print(f"  (a) MLP on labels alone (AdamW lr {d.lr:g}, warm-up+cosine)  {summary(acc['a'])}")
    print(f"  (b) MLP, plain KD (T=2, alpha 0.25, Adam 1e-3)       {summary(acc['b'])}")
    print(f"  (c) MLP, mdeploy distill defaults                    {summary(acc['c'])}")
    print(f"      (T={d.temperature:g}, alpha={d.alpha:g}, lr={d.lr:g}, refit epochs {chosen})")
    diffs = [c - a for a, c in zip(acc["a"], acc["c"])]
    print(f"  (c) - (a) per seed: {' '.join(f'{v:+.4f}' for v in diffs)}; mean {statistics.mean(diffs):+.4f}; "
          f"(c) beats (a) on the mean: {statistics.mean(acc['c']) > statistics.mean(acc['a'])}")
    print(f"\nthe selection's recipes on the test set ({args.seeds} seeds, all {len(y_train)} images, {epochs} epochs, "
          "last epoch):")
    for recipe in RECIPES:
        accs = [accuracy(train_recipe(recipe, x_train, y_train, teacher, seed, epochs, batch, d.weight_decay, TrainConfig.warmup),
                         x_test, y_test) for seed in range(args.seeds)]
        print(f"  {recipe.name:52} {summary(accs)}", flush=True)

    # time per epoch: harness and plain loop interleaved epoch by epoch, same data, batch, loss, optimizer, schedule
    config = TrainConfig(epochs=epochs, batch_size=batch, lr=d.lr, weight_decay=d.weight_decay, temperature=d.temperature,
                         alpha=d.alpha, patience=epochs + 1)
    train_set, held_out = split(Dataset({"image": x_train}, targets, y_train), HELD_OUT_FRACTION, 0)
    xs, ts, ys = train_set.inputs["image"], train_set.targets, train_set.labels
    pairs: list[tuple[float, float, float, float]] = []  # harness train, plain, harness eval, harness whole epoch
    for r in range(args.rounds):
        plain_student = student(r)
        opt = torch.optim.AdamW(plain_student.parameters(), lr=d.lr, weight_decay=d.weight_decay)
        loop = PlainLoop(plain_student, xs, ts, ys, batch, lambda s_, t, y: kd_loss(s_, t, y, d.temperature, d.alpha), opt,
                         schedule(opt, epochs * -(-len(xs) // batch), config.warmup), r)
        plain_times: list[float] = []
        result = train(student(r), train_set, config, held_out=held_out, echo=lambda line: plain_times.append(loop.epoch()))
        pairs += [(e.train_seconds, p, e.eval_seconds, e.seconds) for e, p in zip(result.history, plain_times)]
    ratios = [h / p for h, p, _, _ in pairs]
    whole = [w / p for _, p, _, w in pairs]
    med = statistics.median
    print(f"\ntime per epoch, {len(pairs)} interleaved epoch pairs ({args.rounds} rounds of {epochs}), "
          f"{len(xs)} training images, batch {batch}:")
    print(f"  harness training steps {med([h for h, *_ in pairs]) * 1000:.2f} ms, plain torch loop {med([p for _, p, *_ in pairs]) * 1000:.2f} ms "
          f"(medians); per-epoch ratio median {med(ratios):.3f}x (quartiles {np.percentile(ratios, 25):.3f}-"
          f"{np.percentile(ratios, 75):.3f}; target <= 1.2x)")
    print(f"  held-out evaluation ({len(held_out)} images) {med([e for *_, e, _ in pairs]) * 1000:.2f} ms per epoch, counted apart; "
          f"the whole harness epoch (evaluation and checkpoint copy included) / plain: median {med(whole):.3f}x")


if __name__ == "__main__":
    main()
