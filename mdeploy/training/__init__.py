"""The training loop shared by `mdeploy distill` and prune's accuracy recovery: a torch student learns from a
teacher's outputs (and labels, when there are any), with a held-out split for early stopping.

The API (stable; see each function's docstring):

    from mdeploy.training import Dataset, TrainConfig, teacher_outputs, train, split

    inputs = {"image": x}                            # numpy arrays (or memmaps), axis 0 = samples, in the
                                                     # student's call order
    targets = teacher_outputs(teacher, inputs, output="logits", batch_size=256, workdir=tmp)
                                                     # teacher: a Runner (any format: `registry.open_runner`)
                                                     # or an in-process torch nn.Module; run once per sample,
                                                     # cached on disk (np.memmap in `workdir`) when large
    train_set, held_out = split(Dataset(inputs, targets, labels), fraction=0.15, seed=0)
                                                     # labels: class ids, -1 for a sample without one
    result = train(student, train_set, TrainConfig(steps=2000, kind="scores"), held_out=held_out,
                   progress=progress, echo=print)
    student.load_state_dict(result.best_state)      # the best checkpoint on the held-out data
    # or fit(student, data, config): the length chosen on a split, then a refit on all of it (complete schedule)

- Loss (training/loss.py): class scores use Hinton's KD, `alpha * T^2 * KL(softmax(t/T) || softmax(s/T))`
  (batchmean), plus `(1 - alpha) * cross-entropy` on the labelled samples (weighted by their share of the batch);
  regression outputs use MSE to the teacher.
- Function matching (training/augment.py): `TrainConfig(mixup=1.0)` with `teacher=query(teacher, "logits")` given to
  train/fit mixes each batch (weights ~ Beta(1, 1)) and runs the teacher on the mixed inputs in the loop; inputs
  that are not all floating-point are not mixed.
- AdamW, linear warm-up then cosine decay per step, over `steps` optimizer steps (or `epochs` whole epochs); the
  same seed gives the same student on CPU.
- Held-out metric each epoch (training/metrics.py: accuracy when every held-out sample is labelled, else top-1
  agreement with the teacher, else -MSE): the best epoch's weights are kept, training stops after `patience`
  epochs without improvement.
- The ONNX student can take the teacher's interface (training/dropin.py: input/output names, axis names).
- A NaN/Inf loss stops training with `DivergedError` (an MdeployError: exit 2, with the epoch and a lower `lr`).
- Ctrl-C (or SIGTERM turned into KeyboardInterrupt by the caller) stops training: `train` returns the best
  checkpoint so far with `interrupted=True`, and the caller decides what to keep (distill keeps nothing).
"""

from mdeploy.training.loop import (
    Dataset,
    DivergedError,
    EpochRecord,
    TrainConfig,
    TrainResult,
    fit,
    split,
    train,
)
from mdeploy.training.teacher import TorchTeacher, teacher_outputs

__all__ = [
    "Dataset",
    "DivergedError",
    "EpochRecord",
    "TorchTeacher",
    "TrainConfig",
    "TrainResult",
    "fit",
    "split",
    "teacher_outputs",
    "train",
]
