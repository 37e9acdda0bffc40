"""Figures for `mdeploy distill` (issue 9), on scikit-learn's digits (ships with scikit-learn; nothing downloaded).

    .venv/bin/python benchmarks/distill_digits.py [--epochs 30] [--repeats 3]

Teacher: the trained digits CNN of fixtures/digits.py (exported to ONNX). Student: an MLP 64-32-10
(fixtures/models/digits_student.py). The same training data (the 1,257 training images) and the same epoch budget
for three students, side by side:
  (a) labels alone: cross-entropy, AdamW at the same lr and schedule as (c), last epoch kept;
  (b) plain KD with textbook settings (PyTorch's knowledge-distillation tutorial: T=2, 0.25 soft + 0.75 hard,
      Adam lr 1e-3, no schedule, last epoch kept);
  (c) `mdeploy distill` with its defaults (through mdeploy.api.distill, the ONNX teacher, labels given).
Test accuracy on the 540 held-out test images for each and for the teacher.

Time per epoch: the harness (mdeploy.training.train, held-out evaluation and checkpointing included) against a plain
torch loop over the same data, the same batch size and the same KD loss, alternated `--repeats` times in one run;
the ratio of the medians is printed. The CPU's ISA flags are printed first.
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


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    wanted = ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"]
    return f"{model}; " + " ".join(f"{f}={'yes' if f in flags else 'no'}" for f in wanted)


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:  # noqa: ANN001
    import torch

    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def plain_loop(student, x, targets, y, epochs: int, batch: int, loss_fn, optimizer, seed: int) -> list[float]:  # noqa: ANN001
    """The loop anyone writes: shuffle, forward, loss, step. Returns seconds per epoch."""
    import torch

    xt, tt, yt = torch.from_numpy(x), torch.from_numpy(targets), torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        student.train()
        order = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), batch):
            idx = order[i : i + batch]
            loss = loss_fn(student(xt[idx]), tt[idx], yt[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F  # noqa: N812

    from fixtures import digits
    from fixtures.models import digits_student
    from mdeploy import api
    from mdeploy.training import Dataset, TrainConfig, TorchTeacher, teacher_outputs, train
    from mdeploy.training.loss import kd_loss
    from mdeploy.verbs.distill import Options

    print(f"cpu: {cpu_flags()}")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    defaults = Options(teacher="", student="", output="", data="")
    x_train, x_test, y_train, y_test = digits.load()
    teacher = digits.train(x_train, y_train)
    print(f"teacher (digits CNN) test accuracy: {accuracy(teacher, x_test, y_test):.4f}")
    targets = teacher_outputs(TorchTeacher(teacher, ["image"]), {"image": x_train}, "output")
    epochs, batch = args.epochs, defaults.batch_size

    # (a) labels alone: same optimizer, lr, schedule and epochs as the defaults of (c)
    student = digits_student.build()
    opt = torch.optim.AdamW(student.parameters(), lr=defaults.lr, weight_decay=defaults.weight_decay)
    steps = epochs * -(-len(x_train) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=defaults.lr, total_steps=steps, pct_start=0.05, anneal_strategy="cos")

    def ce(s, t, y):  # noqa: ANN001, ANN202
        return F.cross_entropy(s, y)

    class Stepper:  # the scheduler steps with the optimizer
        def __init__(self, o, s) -> None:  # noqa: ANN001
            self.o, self.s = o, s

        def zero_grad(self, set_to_none: bool = True) -> None:
            self.o.zero_grad(set_to_none=set_to_none)

        def step(self) -> None:
            self.o.step()
            self.s.step()

    plain_loop(student, x_train, targets, y_train, epochs, batch, ce, Stepper(opt, sched), 0)
    acc_a = accuracy(student.eval(), x_test, y_test)

    # (b) textbook KD
    student = digits_student.build()
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    plain_loop(student, x_train, targets, y_train, epochs, batch, lambda s, t, y: kd_loss(s, t, y, 2.0, 0.25), opt, 0)
    acc_b = accuracy(student.eval(), x_test, y_test)

    # (c) mdeploy distill defaults, through the public API with the ONNX teacher
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        digits.export(teacher, work / "teacher.onnx", None)
        np.savez(work / "train.npz", image=x_train, labels=y_train)
        report = api.distill(str(work / "teacher.onnx"), f"{ROOT / 'fixtures/models/digits_student.py'}:build",
                             str(work / "student.onnx"), str(work / "train.npz"), epochs=epochs, save_weights=str(work / "s.pt"))
        student = digits_student.build()
        student.load_state_dict(torch.load(work / "s.pt", weights_only=True))
        acc_c = accuracy(student.eval(), x_test, y_test)
        best = report.data["training"]
    print(f"\ntest accuracy on {len(y_test)} images, {epochs} epochs budget, batch {batch}:")
    print(f"  teacher (CNN, {sum(p.numel() for p in teacher.parameters()):,} parameters)  {accuracy(teacher, x_test, y_test):.4f}")
    print(f"  (a) MLP on labels alone                           {acc_a:.4f}")
    print(f"  (b) MLP, plain KD (T=2, alpha 0.25, Adam 1e-3)     {acc_b:.4f}")
    print(f"  (c) MLP, mdeploy distill defaults                  {acc_c:.4f}  (best epoch {best['best_epoch']} of "
          f"{best['epochs_run']}, T={defaults.temperature:g}, alpha={defaults.alpha:g}, lr={defaults.lr:g})")
    print(f"  (c) beats (a): {acc_c > acc_a}")

    # time per epoch: harness vs plain loop, same data, batch and loss, alternated
    config = TrainConfig(epochs=epochs, batch_size=batch, lr=defaults.lr, patience=epochs + 1)
    data = Dataset({"image": x_train}, targets, y_train)
    harness, plain = [], []
    for r in range(args.repeats):
        student = digits_student.build()
        start = time.perf_counter()
        result = train(student, data, config, held_out=Dataset({"image": x_test[:200]}, targets[:200], y_test[:200]))
        harness.append((time.perf_counter() - start) / len(result.history))
        student = digits_student.build()
        opt = torch.optim.AdamW(student.parameters(), lr=defaults.lr, weight_decay=defaults.weight_decay)
        plain.append(statistics.mean(plain_loop(student, x_train, targets, y_train, epochs, batch,
                                                lambda s, t, y: kd_loss(s, t, y, config.temperature, config.alpha), opt, r)))
    h, p = statistics.median(harness), statistics.median(plain)
    print(f"\ntime per epoch ({args.repeats} alternated runs of {epochs} epochs, medians): harness {h * 1000:.2f} ms "
          f"(held-out evaluation of 200 samples and checkpointing included), plain torch loop {p * 1000:.2f} ms; "
          f"ratio {h / p:.3f}x (target <= 1.2x)")


if __name__ == "__main__":
    main()
