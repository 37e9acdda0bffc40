"""The training loop: a torch student learns a teacher's outputs, judged each epoch on held-out data.

Only numpy arrays come in (inputs, the teacher's outputs, labels) and a state_dict goes out, so any teacher that
mdeploy can run feeds it, and the caller decides what to write. See mdeploy/training/__init__.py for the API.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mdeploy.errors import MdeployError
from mdeploy.progress import ProgressFactory, no_progress
from mdeploy.training.loss import kd_loss, regression_loss

IN_MEMORY_BYTES = 1 << 30  # inputs up to this size become one tensor; larger ones (memmaps) are gathered per batch
EVAL_BATCH = 512


class DivergedError(MdeployError):
    """The loss became NaN or Inf: the learning rate is too high for this student (or the data holds NaN)."""


@dataclass
class TrainConfig:
    """How to train. The defaults are distill's (docs/distill.md says why)."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-2
    weight_decay: float = 1e-4
    warmup: float = 0.05  # fraction of the steps with a linear warm-up, then cosine decay to 0
    temperature: float = 4.0
    alpha: float = 0.9  # weight of the KD term when there are labels (without labels it is 1)
    patience: int = 8  # epochs without a better held-out metric before stopping
    kind: str = "scores"  # "scores": KD on class scores; "regression": MSE to the teacher
    output: str | int | None = None  # which student output is trained: a name or position in its flattened outputs
    seed: int = 0
    device: str = "cpu"


@dataclass
class Dataset:
    """Samples along axis 0: `inputs` in the student's call order, the teacher's `targets`, optional `labels`."""

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

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "loss": round(self.loss, 6), "held_out": {k: round(v, 6) for k, v in self.held_out.items()},
                "lr": self.lr, "seconds": round(self.seconds, 4), "train_seconds": round(self.train_seconds, 4),
                "eval_seconds": round(self.eval_seconds, 4), "best": self.best}

    def line(self, epochs: int) -> str:
        held = "  ".join(f"{k} {v:.4f}" for k, v in self.held_out.items())
        held = f"held-out {held}  " if held else ""
        return (f"epoch {self.epoch}/{epochs}  loss {self.loss:.4f}  {held}lr {self.lr:.2e}  "
                f"({self.seconds:.2f}s){'  *best' if self.best else ''}")


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
    """A seeded random held-out split (at least one sample on each side)."""
    n = len(data)
    if n < 2:
        raise MdeployError(f"{n} sample cannot be split into training and held-out data", hint="give more data")
    order = np.random.default_rng(seed).permutation(n)
    k = min(n - 1, max(1, round(n * fraction)))
    return data.take(np.sort(order[k:])), data.take(np.sort(order[:k]))


def train(
    student: Any,
    data: Dataset,
    config: TrainConfig,
    held_out: Dataset | None = None,
    progress: ProgressFactory = no_progress,
    echo: Callable[[str], None] | None = None,
    *,
    stop_after: int | None = None,
) -> TrainResult:
    """Train `student` (a torch nn.Module, changed in place) on `data`; choose the best epoch on `held_out`
    (default: the training data itself). Returns the best checkpoint; on Ctrl-C, the best so far (interrupted).

    `stop_after=K`: replay the first K epochs of `config`'s schedule (the learning rate follows the same warm-up and
    cosine as a full `config.epochs` run) and keep epoch K, with no held-out evaluation and no early stopping: the
    refit of `fit`, once a held-out run has chosen K."""
    from mdeploy.frameworks.torch_models import torch

    t = torch()
    t.manual_seed(config.seed)
    device = t.device(config.device)
    student.to(device)
    held_out = held_out if held_out is not None else data
    train_tensors = _Tensors(data, device)
    held_tensors = _Tensors(held_out, device)
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    total_steps = max(1, steps_per_epoch * config.epochs)
    optimizer = t.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup = int(total_steps * config.warmup)
    schedule = t.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, warmup, total_steps))
    generator = t.Generator().manual_seed(config.seed)
    loss_fn = _loss(config)

    metric = _metric_name(config, held_out)
    replay = stop_after is not None
    epochs = min(config.epochs, stop_after) if replay else config.epochs
    first = {} if replay else _evaluate(student, held_tensors, config, loss_fn)
    result = TrainResult(_cpu_state(student), 0, first, metric=metric)
    best_score = _score(first, metric) if first else None
    stale = 0
    try:
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            student.train()
            order = t.randperm(len(data), generator=generator)
            # the loss is summed on the device and read once per epoch: no host sync per step (a NaN/Inf step
            # makes the sum NaN/Inf, so divergence is still caught, at the end of that epoch)
            total = t.zeros((), device=device)
            with progress(f"epoch {epoch}/{epochs}", steps_per_epoch) as advance:
                for i in range(0, len(data), config.batch_size):
                    idx = order[i : i + config.batch_size]
                    inputs, targets, labels = train_tensors.batch(idx)
                    loss = loss_fn(_pick(student(*inputs), config.output), targets, labels)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    total += loss.detach() * len(idx)
                    advance()
            mean_loss = float(total) / len(data)
            if not math.isfinite(mean_loss):
                raise DivergedError(f"the training loss became {mean_loss} at epoch {epoch} of {epochs}",
                                    hint=f"lower the learning rate (--lr {config.lr / 10:g}), or check the data for NaN/Inf")
            trained = time.perf_counter()
            lr_now = optimizer.param_groups[0]["lr"]
            if replay:
                record = EpochRecord(epoch, mean_loss, {}, lr_now, trained - start, train_seconds=trained - start)
                result.history.append(record)
                if echo is not None:
                    echo(record.line(epochs))
                continue
            held = _evaluate(student, held_tensors, config, loss_fn)
            evaluated = time.perf_counter()
            score = _score(held, metric)
            record = EpochRecord(epoch, mean_loss, held, lr_now, 0.0, train_seconds=trained - start,
                                 eval_seconds=evaluated - trained)
            if score > best_score:
                best_score, stale, record.best = score, 0, True
                result.best_state, result.best_epoch, result.best_metrics = _cpu_state(student), epoch, held
            else:
                stale += 1
            record.seconds = time.perf_counter() - start
            result.history.append(record)
            if echo is not None:
                echo(record.line(epochs))
            if stale >= config.patience and epoch < epochs:
                result.stopped_early = True
                break
        if replay and result.history:
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
) -> TrainResult:
    """Choose the epoch count on a held-out split of `data`, then retrain on all of it for that many epochs.

    Why: early stopping needs samples the student does not train on, but a student that never sees 15% of the data
    is worse than one that does. So (as scikit-learn's `refit=True`) a first run on the split finds the best epoch K,
    then the student restarts from its initial weights and replays the same seed and schedule on all of `data` for
    K epochs; that last state is the result. The returned `best_metrics` are the first run's held-out figures (the
    honest estimate: the refit student has trained on those samples), `refit` says what was refit. An interrupted or
    diverged first run, or one whose best epoch is 0, is returned as it is."""
    initial = _cpu_state(student)
    train_set, held_out = split(data, held_out_fraction, config.seed)
    first = train(student, train_set, config, held_out=held_out, progress=progress, echo=echo)
    if first.interrupted or first.best_epoch == 0:
        return first
    if echo is not None:
        echo(f"refit on all {len(data)} samples for the best epoch count, {first.best_epoch}")
    student.load_state_dict(initial)
    again = train(student, data, config, progress=progress, echo=echo, stop_after=first.best_epoch)
    if again.interrupted:
        first.interrupted = True
        return first
    first.best_state = again.best_state
    first.refit = {"samples": len(data), "held_out_samples": len(held_out), "epochs": again.best_epoch,
                   "seconds": round(sum(e.seconds for e in again.history), 4)}
    return first


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _loss(config: TrainConfig) -> Callable[[Any, Any, Any], Any]:
    if config.kind == "regression":
        return regression_loss
    return lambda s, t, y: kd_loss(s, t, y, config.temperature, config.alpha)


def _metric_name(config: TrainConfig, held_out: Dataset) -> str:
    if config.kind == "regression":
        return "mse"
    return "accuracy" if held_out.labels is not None else "agreement"


def _score(metrics: dict[str, float], metric: str) -> tuple[float, float]:
    """Higher is better: the metric (MSE negated), ties broken by the lower held-out loss."""
    value = -metrics[metric] if metric == "mse" else metrics[metric]
    return value, -metrics["loss"]


def _evaluate(student: Any, data: _Tensors, config: TrainConfig, loss_fn: Callable[[Any, Any, Any], Any]) -> dict[str, float]:
    from mdeploy.frameworks.torch_models import torch

    t = torch()
    student.eval()
    loss = agree = right = 0.0
    sq = 0.0
    n = data.count
    with t.no_grad():
        for i in range(0, n, EVAL_BATCH):
            idx = t.arange(i, min(n, i + EVAL_BATCH))
            inputs, targets, labels = data.batch(idx)
            out = _pick(student(*inputs), config.output)
            loss += float(loss_fn(out, targets, labels)) * len(idx)
            if config.kind == "regression":
                sq += float(((out - targets) ** 2).mean()) * len(idx)
                continue
            pred = out.argmax(-1)
            agree += float((pred == targets.argmax(-1)).float().mean()) * len(idx)
            if labels is not None:
                right += float((pred == labels).float().mean()) * len(idx)
    metrics = {"loss": loss / n}
    if config.kind == "regression":
        metrics["mse"] = sq / n
    else:
        metrics["agreement"] = agree / n
        if data.labels is not None:
            metrics["accuracy"] = right / n
    return metrics


def _pick(output: Any, which: str | int | None) -> Any:
    """The trained output among a student's outputs (a tensor, or a tuple/dict of them)."""
    import torch  # already loaded (through mdeploy.frameworks.torch_models.torch) by the caller

    if isinstance(output, torch.Tensor) and which in (None, 0, "output"):
        return output  # per step: nothing more than this check (torch_models.torch() re-quiets loggers at each call)
    from mdeploy.frameworks.torch_models import flatten_outputs

    named = flatten_outputs(output)
    if isinstance(which, int):
        return named[which][1]
    if which is None:
        return named[0][1]
    return dict(named)[which]


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
