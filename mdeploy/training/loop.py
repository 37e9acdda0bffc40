"""The training loop: a torch student learns a teacher's outputs, judged each epoch on held-out data.

Only numpy arrays come in (inputs, the teacher's outputs, labels) and a state_dict goes out, so any teacher that
mdeploy can run feeds it, and the caller decides what to write. See mdeploy/training/__init__.py for the API.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from mdeploy.errors import MdeployError
from mdeploy.progress import ProgressFactory, no_progress
from mdeploy.training.augment import Mixup, Query, mixable
from mdeploy.training.loss import kd_loss, regression_loss
from mdeploy.training.metrics import evaluate as _evaluate
from mdeploy.training.metrics import metric_name as _metric_name
from mdeploy.training.metrics import pick as _pick
from mdeploy.training.metrics import score as _score

IN_MEMORY_BYTES = 1 << 30  # inputs up to this size become one tensor; larger ones (memmaps) are gathered per batch


class DivergedError(MdeployError):
    """The loss became NaN or Inf: the learning rate is too high for this student (or the data holds NaN)."""


@dataclass
class TrainConfig:
    """How to train. Distill's options set their own values (docs/distill.md says why); these defaults are prune's
    recovery's, which passes its epochs and lr.

    The schedule's length: `steps` optimizer steps when set (the last epoch may stop part-way), else `epochs` whole
    epochs. Steps are what a schedule needs to be the same on a pool of 600 samples and one of 60,000: counted in
    epochs, a small pool gets a few hundred steps at most and the student stays under-trained."""

    epochs: int = 30
    steps: int | None = None
    batch_size: int = 64
    lr: float = 1e-2
    weight_decay: float = 1e-4
    warmup: float = 0.05  # fraction of the steps with a linear warm-up, then cosine decay to 0
    temperature: float = 4.0
    alpha: float = 0.9  # weight of the KD term when there are labels (without labels it is 1)
    patience: int | None = 8  # epochs without a better held-out metric before stopping (None: half the schedule's
    # epochs, at least 8: on a small pool a schedule runs hundreds of short epochs, and the held-out metric of a few
    # hundred samples wanders on a plateau while the learning rate is still high)
    kind: str = "scores"  # "scores": KD on class scores; "regression": MSE to the teacher
    mixup: float = 0.0  # function matching (training/augment.py): each batch mixed with weights ~ Beta(mixup, mixup),
    # the teacher run on the mixed inputs in the loop (needs `teacher` in train/fit, floating-point inputs); 0: off
    output: str | int | None = None  # which student output is trained: a name or position in its flattened outputs
    seed: int = 0
    device: str = "cpu"

    def total_steps(self, samples: int) -> int:
        """The schedule's length in optimizer steps on `samples` training samples."""
        return max(1, self.steps if self.steps else math.ceil(samples / self.batch_size) * self.epochs)


@dataclass
class Dataset:
    """Samples along axis 0: `inputs` in the student's call order, the teacher's `targets`, optional `labels`
    (class ids; -1 marks a sample without a label: it is learnt from the teacher alone)."""

    inputs: dict[str, np.ndarray]
    targets: np.ndarray
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def take(self, index: np.ndarray) -> Dataset:
        return Dataset({k: v[index] for k, v in self.inputs.items()}, self.targets[index],
                       None if self.labels is None else self.labels[index])


@dataclass
class EpochRecord:
    epoch: int
    loss: float  # mean training loss
    held_out: dict[str, float]  # loss, and agreement / accuracy (class scores) or mse
    lr: float
    seconds: float  # the whole epoch: training steps, held-out evaluation, checkpoint copy
    best: bool = False
    train_seconds: float = 0.0  # the training steps alone (what a plain torch loop over the same data does)
    eval_seconds: float = 0.0  # the held-out evaluation alone
    step: int = 0  # optimizer steps taken by the end of this epoch

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "loss": round(self.loss, 6),
                "held_out": {k: round(v, 6) for k, v in self.held_out.items()}, "lr": self.lr,
                "seconds": round(self.seconds, 4), "train_seconds": round(self.train_seconds, 4),
                "eval_seconds": round(self.eval_seconds, 4), "best": self.best}

    def metrics(self) -> str:
        """The epoch's figures in a few words: the training loss, the held-out metrics, the learning rate."""
        held = "  ".join(f"{k} {v:.4f}" for k, v in self.held_out.items())
        return f"loss {self.loss:.4f}  " + (f"held-out {held}  " if held else "") + f"lr {self.lr:.2e}"

    def line(self, epochs: int, phase: str = "") -> str:
        return (f"{phase}epoch {self.epoch}/{epochs}  {self.metrics()}  ({self.seconds:.2f}s)"
                f"{'  *best' if self.best else ''}")


@dataclass
class TrainResult:
    best_state: dict[str, Any]  # the state_dict of the best epoch (on CPU)
    best_epoch: int  # 0: the student as it came (no epoch beat it, or interrupted before the first ended)
    best_metrics: dict[str, float]
    history: list[EpochRecord] = field(default_factory=list)
    stopped_early: bool = False
    interrupted: bool = False
    metric: str = ""  # the held-out metric that chose the best epoch
    refit: dict[str, Any] | None = None  # set by `fit` when the best state comes from a refit on all the data

    def to_dict(self) -> dict[str, Any]:
        out = {"best_epoch": self.best_epoch, "metric": self.metric, "best": {k: round(v, 6) for k, v in self.best_metrics.items()},
               "epochs_run": len(self.history), "stopped_early": self.stopped_early, "interrupted": self.interrupted,
               "history": [e.to_dict() for e in self.history]}
        if self.refit is not None:
            out["refit"] = self.refit
        return out


def split(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """A seeded random held-out split (at least one sample on each side). With labels for some samples only, the
    labelled and the unlabelled ones are split apart, each in `fraction`: 100 labels in a pool of 629 leave 15 for
    the held-out accuracy and 85 to train on, whatever the draw."""
    n = len(data)
    if n < 2:
        raise MdeployError(f"{n} sample cannot be split into training and held-out data", hint="give more data")
    rng = np.random.default_rng(seed)
    labelled = None if data.labels is None else np.asarray(data.labels) >= 0
    groups = [np.arange(n)] if labelled is None or labelled.all() or not labelled.any() else \
        [np.flatnonzero(labelled), np.flatnonzero(~labelled)]
    held, kept = [], []
    for group in groups:
        order = group[rng.permutation(len(group))]
        k = min(len(group) - 1, max(1, round(len(group) * fraction))) if len(group) > 1 else 0
        held.append(order[:k])
        kept.append(order[k:])
    held_idx, kept_idx = np.sort(np.concatenate(held)), np.sort(np.concatenate(kept))
    if len(held_idx) == 0:  # one labelled sample and one unlabelled: the unlabelled one is held out
        held_idx, kept_idx = kept_idx[-1:], kept_idx[:-1]
    return data.take(kept_idx), data.take(held_idx)


def train(
    student: Any,
    data: Dataset,
    config: TrainConfig,
    held_out: Dataset | None = None,
    progress: ProgressFactory = no_progress,
    echo: Callable[[str], None] | None = None,
    *,
    evaluate: bool = True,
    phase: str = "",
    teacher: Query | None = None,
) -> TrainResult:
    """Train `student` (a torch nn.Module, changed in place) on `data`; choose the best epoch on `held_out`
    (default: the training data itself). Returns the best checkpoint; on Ctrl-C, the best so far (interrupted).

    `evaluate=False`: no held-out evaluation and no early stopping; the whole schedule runs and its last state is
    the result (the refit of `fit`). `phase` names the run in progress bars and epoch lines ("refit: ").
    `teacher`: the teacher's output on a batch of inputs keyed by name, for `config.mixup` (function matching: the
    teacher run on each mixed batch); without it, or with inputs that are not all floating-point
    (augment.mixable), the batches stay as they are and the precomputed targets are used."""
    from mdeploy.frameworks.torch_models import torch

    t = torch()
    t.manual_seed(config.seed)
    device = t.device(config.device)
    student.to(device)
    held_out = held_out if held_out is not None else data
    train_tensors = _Tensors(data, device)
    held_tensors = _Tensors(held_out, device) if evaluate else None
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    total_steps = config.total_steps(len(data))
    epochs = math.ceil(total_steps / steps_per_epoch)
    optimizer = t.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup = int(total_steps * config.warmup)
    schedule = t.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, warmup, total_steps))
    generator = t.Generator().manual_seed(config.seed)
    loss_fn = _loss(config)
    mixup = (Mixup(config.mixup, teacher, list(data.inputs), config.seed)
             if config.mixup and teacher is not None and mixable(data.inputs) is None else None)

    metric = _metric_name(config, held_out)
    first = _evaluate(student, held_tensors, config, loss_fn) if evaluate else {}
    result = TrainResult(_cpu_state(student), 0, first, metric=metric)
    best_score = _score(first, metric) if first else None
    stale = step = 0
    patience = config.patience or max(8, epochs // 2)
    last: EpochRecord | None = None
    try:
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            student.train()
            order = t.randperm(len(data), generator=generator)
            # the loss is summed on the device and read once per epoch: no host sync per step (a NaN/Inf step
            # makes the sum NaN/Inf, so divergence is still caught, at the end of that epoch)
            total = t.zeros((), device=device)
            seen = 0
            todo = min(steps_per_epoch, total_steps - step)
            title = f"{phase}epoch {epoch}/{epochs}" + (f" (last: {last.metrics()})" if last is not None else "")
            with progress(title, todo) as advance:
                for i in range(0, todo * config.batch_size, config.batch_size):
                    idx = order[i : i + config.batch_size]
                    inputs, targets, labels = train_tensors.batch(idx)
                    mixing = None
                    if mixup is not None:
                        inputs, targets, mixing = mixup(inputs)
                    loss = loss_fn(_pick(student(*inputs), config.output), targets, labels, mixing)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    total += loss.detach() * len(idx)
                    seen += len(idx)
                    advance()
            step += todo
            mean_loss = float(total) / max(1, seen)
            if not math.isfinite(mean_loss):
                raise DivergedError(f"the training loss became {mean_loss} at epoch {epoch} of {epochs}"
                                    + (f" ({phase.rstrip(': ')})" if phase else ""),
                                    hint=f"lower the learning rate (--lr {config.lr / 10:g}), or check the data for NaN/Inf")
            trained = time.perf_counter()
            lr_now = optimizer.param_groups[0]["lr"]
            if not evaluate:
                last = EpochRecord(epoch, mean_loss, {}, lr_now, trained - start, train_seconds=trained - start, step=step)
                result.history.append(last)
                if echo is not None:
                    echo(last.line(epochs, phase))
                continue
            held = _evaluate(student, held_tensors, config, loss_fn)
            evaluated = time.perf_counter()
            score = _score(held, metric)
            last = EpochRecord(epoch, mean_loss, held, lr_now, 0.0, train_seconds=trained - start,
                               eval_seconds=evaluated - trained, step=step)
            if score > best_score:
                best_score, stale, last.best = score, 0, True
                result.best_state, result.best_epoch, result.best_metrics = _cpu_state(student), epoch, held
            else:
                stale += 1
            last.seconds = time.perf_counter() - start
            result.history.append(last)
            if echo is not None:
                echo(last.line(epochs, phase))
            if stale >= patience and epoch < epochs:
                result.stopped_early = True
                break
        if not evaluate and result.history:
            result.best_state, result.best_epoch, result.best_metrics = _cpu_state(student), len(result.history), {}
    except KeyboardInterrupt:
        result.interrupted = True
    return result


def fit(
    student: Any,
    data: Dataset,
    config: TrainConfig,
    held_out_fraction: float = 0.15,
    progress: ProgressFactory = no_progress,
    echo: Callable[[str], None] | None = None,
    teacher: Query | None = None,
) -> TrainResult:
    """Choose how long to train on a held-out split of `data`, then retrain on all of it with a complete schedule
    of that length.

    Why: early stopping needs samples the student does not train on, but a student that never sees 15% of the data
    is worse than one that does. So (as scikit-learn's `refit=True`) a first run on the split decides how long to
    train: the best epoch K when early stopping ended it, else its whole length (the held-out metric was still
    improving within `patience` epochs of the end: a best epoch inside that window is the noise of a few hundred
    held-out samples, not a length). Then the student restarts from its initial weights and trains on all of `data`
    for as many epochs with the whole schedule fitted to them: warm-up, then the cosine decay down to 0 at the last
    step. (Replaying the first
    K epochs of the longer schedule instead would stop with the learning rate still high whenever early stopping
    ended the first run: the refit student would never settle.) Its last state is the result. The returned
    `best_metrics` are the first run's held-out figures (the honest estimate: the refit student has trained on those
    samples), `refit` says what was refit and holds its epochs (loss, learning rate). An interrupted or diverged
    first run, or one whose best epoch is 0, is returned as it is."""
    initial = _cpu_state(student)
    train_set, held_out = split(data, held_out_fraction, config.seed)
    first = train(student, train_set, config, held_out=held_out, progress=progress, echo=echo,
                  phase=f"selection on {len(train_set)} samples: ", teacher=teacher)
    if first.interrupted or first.best_epoch == 0:
        return first
    epochs = first.best_epoch if first.stopped_early else len(first.history)
    steps = epochs * math.ceil(len(data) / config.batch_size)
    if echo is not None:
        why = "the best epoch before early stopping" if first.stopped_early else "the whole schedule: no early stop"
        echo(f"refit on all {len(data)} samples: {epochs} epochs ({why}), {steps} steps, with a complete schedule")
    student.load_state_dict(initial)
    again = train(student, data, replace(config, steps=steps), progress=progress, echo=echo, evaluate=False,
                  phase=f"refit on all {len(data)} samples: ", teacher=teacher)
    if again.interrupted:
        first.interrupted = True
        return first
    first.best_state = again.best_state
    first.refit = {"samples": len(data), "held_out_samples": len(held_out), "epochs": again.best_epoch, "steps": steps,
                   "length": "the best epoch before early stopping" if first.stopped_early else "the whole schedule",
                   "seconds": round(sum(e.seconds for e in again.history), 4),
                   "history": [{"epoch": e.epoch, "step": e.step, "loss": round(e.loss, 6), "lr": e.lr} for e in again.history]}
    return first


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _loss(config: TrainConfig) -> Callable[[Any, Any, Any], Any]:
    if config.kind == "regression":
        return regression_loss
    return lambda s, t, y, mix=None: kd_loss(s, t, y, config.temperature, config.alpha, mix)


def _cpu_state(module: Any) -> dict[str, Any]:
    return {k: v.detach().to("cpu", copy=True) for k, v in copy.copy(module.state_dict()).items()}


class _Tensors:
    """A Dataset's arrays as torch tensors on the device when they fit in memory, gathered per batch otherwise."""

    def __init__(self, data: Dataset, device: Any) -> None:
        from mdeploy.frameworks.torch_models import torch

        self.t = torch()
        self.device = device
        self.count = len(data)
        self.labels = data.labels
        arrays = [*data.inputs.values(), data.targets] + ([data.labels] if data.labels is not None else [])
        self.resident = sum(a.nbytes for a in arrays) <= IN_MEMORY_BYTES
        if self.resident:
            arrays = [self.t.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays]
        self.inputs = arrays[: len(data.inputs)]
        self.targets = arrays[len(data.inputs)]
        self.label_array = arrays[-1] if data.labels is not None else None

    def batch(self, idx: Any) -> tuple[list[Any], Any, Any]:
        if self.resident:
            pick = (lambda a: a[idx]) if self.device.type == "cpu" else (lambda a: a[idx.to(self.device)])
            labels = pick(self.label_array) if self.label_array is not None else None
            return [pick(a) for a in self.inputs], pick(self.targets), labels
        order = np.sort(idx.numpy())  # memmaps read fastest in order; a batch's order does not matter to the loss
        def load(a: np.ndarray) -> Any:
            return self.t.from_numpy(np.ascontiguousarray(a[order])).to(self.device)
        labels = load(self.label_array) if self.label_array is not None else None
        return [load(a) for a in self.inputs], load(self.targets), labels
