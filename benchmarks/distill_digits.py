"""Figures for `mdeploy distill` (issue 9), on scikit-learn's digits (ships with scikit-learn; nothing downloaded).

    .venv/bin/python benchmarks/distill_digits.py [--epochs 30] [--seeds 5] [--rounds 3] [--threads N]

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


def summary(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"mean {statistics.mean(values):.4f} +- {sd:.4f}  [{' '.join(f'{v:.4f}' for v in values)}]"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
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
