"""`distill --teacher T --student FILE.py:FACTORY -o OUT --data D`: knowledge distillation from any teacher mdeploy can
run into a small torch student, exported and proven against the teacher on held-out data.

The teacher runs once per sample (mdeploy/training/teacher.py), and on each mixed training batch with --mixup (the
default: function matching, mdeploy/training/augment.py); the student trains with mdeploy/training/loop.py
(KD on class scores, MSE on other outputs); the best held-out checkpoint is exported through `convert` (torch ->
ONNX, with its own validation) or torch.export (`.pt2`), then proved against the teacher: agreement, cosine,
accuracy with labels, size, parameters and latency side by side. With `--max-error` the report fails (exit 1)
when the best student misses the bar, and that student is still written.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mdeploy import registry
from mdeploy.core import Format, ModelRef, TensorSpec, Tolerance, classifier_choice, parse_dynamic, parse_specs, tolerance_for
from mdeploy.errors import ConversionError, InputError, MdeployError
from mdeploy.interrupts import sigterm_as_interrupt
from mdeploy.lazy import numpy as np
from mdeploy.outputs import atomic_output, check_output, size_of
from mdeploy.quantization.calibration import batches_from_data, fixed_batch
from mdeploy.progress import ProgressFactory, no_progress
from mdeploy.reports.report import Report, Step
from mdeploy.validation import inputs as vinputs
from mdeploy.validation import scores
from mdeploy.validation.bar import Bar, parse_bar
from mdeploy.validation.proof import Proof, bar_tolerance, prove
from mdeploy.verbs.options import check, option

HELD_OUT_FRACTION = 0.15
# chosen by cross-validation inside the training data (benchmarks/distill_digits.py, docs/distill.md)
STEPS, STEPS_NO_MIXUP, LR = 6000, 2000, 3e-2  # with and without mixup, chosen by the same cross-validation
MIXUP_ALPHA = 1.0  # the mixing weight ~ Beta(1, 1): uniform on [0, 1]
EVAL_BATCH = 64
LATENCY_RUNS = 30


@dataclass
class Options:
    teacher: str = option(help="Teacher model in any format mdeploy runs (.onnx, .pt2, .pt, FILE.py:FACTORY, SavedModel, "
                          ".keras, .tflite).")
    student: str = option(help="Student: FILE.py:FACTORY (or pkg.module:FACTORY) building a torch nn.Module.")
    output: str = option(help="Where to write the trained student (.onnx, or .pt2).", short="-o")
    data: str = option(help="Training inputs: .npz keyed by the teacher's input names (or .npy / folder of .npy).")
    labels: str | None = option(None, help=".npy of class ids for --data (or a `labels` array in the .npz), -1 where a "
                                "sample has none; with --labelled-data, those samples' ids. Adds cross-entropy on the "
                                "labelled samples and reports accuracy.")
    labelled_data: str | None = option(None, help="Labelled samples (.npz, as --data) beside an unlabelled --data pool; "
                                       "their class ids: --labels, or a `labels` array in it.")
    eval_data: str | None = option(None, help="Held-out inputs for early stopping and the proof (default: 15% of --data).")
    eval_labels: str | None = option(None, help=".npy of class ids for --eval-data (or a `labels` array in it), -1: none.")
    teacher_weights: str | None = option(None, help="state_dict for a FILE.py:FACTORY teacher (loaded with weights_only=True).")
    teacher_from: str | None = option(None, help="Teacher format, when the name does not tell.")
    student_weights: str | None = option(None, help="Initial state_dict for the student (loaded with weights_only=True).")
    save_weights: str | None = option(None, help="Also write the trained student's state_dict here (for FACTORY --weights).")
    teacher_output: str | None = option(None, help="The teacher output to distill (default: the first that is class "
                                        "scores, else the first).")
    steps: int | None = option(None, help=f"Length of the schedule in optimizer steps, whatever the data's size (at most: "
                               f"early stopping may end sooner; default {STEPS} with mixup, {STEPS_NO_MIXUP} without).", min=1)
    epochs: int | None = option(None, help="Train for this many epochs instead of --steps.", min=1)
    batch_size: int = option(64, help="Samples per training step.", min=1)
    lr: float = option(LR, help="Peak AdamW learning rate (linear warm-up, then cosine decay).", above=0)
    weight_decay: float = option(1e-4, help="AdamW weight decay.", min=0)
    temperature: float = option(4.0, help="KD temperature T: softens both distributions.", above=0)
    alpha: float = option(0.9, help="Weight of the KD term against cross-entropy on labels (without labels: 1).", min=0, max=1)
    patience: int | None = option(None, help="Stop after this many epochs without a better held-out metric (default: half "
                                  "the schedule's epochs, at least 8).", min=1)
    mixup: bool | None = option(None, flag="--mixup/--no-mixup", help="Function matching: train on mixups of two --data "
                                "samples (weight uniform on [0, 1]), the teacher run on each mixed batch in the loop "
                                "(docs/distill.md). Default: on when some samples have no label, off when all do. Only for "
                                "floating-point inputs and a teacher with a dynamic batch: otherwise off, and a note says why.")
    no_refit: bool = option(False, help="Keep the best held-out checkpoint as it is, trained on 85% of --data (default: "
                            "once the held-out split has chosen the epoch count, retrain on all of --data for that many "
                            "epochs, with a complete schedule). Without effect with --eval-data.")
    keep_student_names: bool = option(False, help="Keep the ONNX student's own input/output names and axis names (default: "
                                      "the teacher's, so that it replaces the teacher without a code change).")
    max_error: str | None = option(None, help="The bar, as quantize's: e.g. accuracy-drop<=0.02,top1>=0.95 (exit 1 if missed).")
    classifier_output: list[str] = option([], help="Teacher output that is class scores (repeatable; default: decided "
                                          "from the graph and the output names).")
    no_classifier: bool = option(False, help="No output is class scores: MSE to the teacher, top-1 never judged.")
    seed: int = option(0, help="Seed for the split, initialisation and shuffling (same seed, same student on CPU).")
    device: str = option("cpu", help="cpu or cuda, for training and validation.", choices=("cpu", "cuda"))
    force: bool = option(False, help="Replace existing outputs.")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during training: nothing was written; `summary` says what the best checkpoint was."""

    def __init__(self, summary: str) -> None:
        super().__init__(summary)
        self.summary = summary


def run(options: Options, progress: ProgressFactory = no_progress, echo: Callable[[str], None] | None = None) -> Report:
    """Distill a teacher in any format into a small torch student, export it and prove it on held-out data."""
    check(options)
    o = options
    for name, value, ok in (("--temperature", o.temperature, o.temperature > 0), ("--lr", o.lr, 0 < o.lr < float("inf")),
                            ("--alpha", o.alpha, 0 <= o.alpha <= 1)):
        if not ok:
            raise InputError(f"{name} {value:g} is out of range",
                             hint={"--alpha": "0 <= alpha <= 1"}.get(name, f"{name} is a number > 0"))
    out = Path(o.output)
    if out.suffix not in (".onnx", ".pt2"):
        raise InputError(f"the student is written as .onnx or .pt2, not '{out.name}'", hint="name the output *.onnx or *.pt2")
    check_output(out, o.force)
    weights_out = Path(o.save_weights) if o.save_weights else None
    if weights_out is not None:
        check_output(weights_out, o.force)
        if weights_out.resolve() == out.resolve():
            raise InputError("--save-weights and -o name the same file")
    bar = parse_bar(o.max_error) if o.max_error is not None else None
    teacher_ref = _model("--teacher", o.teacher, o.teacher_from, o.teacher_weights)
    student_ref = _model("--student", o.student, Format.PYTORCH_MODULE, o.student_weights)
    if teacher_ref.path.exists() and out.resolve() == teacher_ref.path.resolve():
        raise InputError("the output would overwrite the teacher", hint="choose another output path")
    from mdeploy.training.checks import load_data

    train_x, train_y = load_data(o.data, None if o.labelled_data else o.labels, "--data", "--labels")
    labelled = load_data(o.labelled_data, o.labels, "--labelled-data", "--labels") if o.labelled_data else None
    if labelled is not None and labelled[1] is None:
        raise InputError("--labelled-data has no class ids", hint="give --labels y.npy, or save a `labels` array in it")
    eval_x, eval_y = load_data(o.eval_data, o.eval_labels, "--eval-data", "--eval-labels") if o.eval_data else (None, None)
    if o.eval_labels and not o.eval_data:
        raise InputError("--eval-labels needs --eval-data")
    if bar and bar.needs_labels and train_y is None and eval_y is None and labelled is None:
        raise InputError("--max-error on accuracy needs labels", hint="give --labels (and --eval-labels with --eval-data)")
    report = Report(command="distill", data={"teacher": teacher_ref.name, "student": student_ref.name, "output": str(out),
                                             "seed": o.seed})
    with sigterm_as_interrupt():
        return _Distill(o, teacher_ref, student_ref, out, weights_out, bar, progress, echo, report).execute(
            train_x, train_y, eval_x, eval_y, labelled)


def _model(flag: str, spec: str, fmt: Format | str | None, weights: str | None) -> ModelRef:
    """ModelRef.parse, its refusal naming the flag that gave the model (or its weights)."""
    try:
        return ModelRef.parse(spec, fmt, weights)
    except InputError as exc:
        weights_flag = f"{flag}-weights"
        message = exc.message.replace("--weights", weights_flag)
        if message.startswith("weights file"):
            raise InputError(f"{weights_flag}: {message}", hint="a state_dict saved with torch.save(model.state_dict(), "
                             "PATH)") from None
        named = f"{flag}-from" if message.startswith("unknown format") else flag
        raise InputError(f"{named}: {message}", hint=exc.hint or (
            f"{flag} is a model file (.onnx, .pt2, .pt, .keras, .tflite), a SavedModel folder or FILE.py:FACTORY"
            if flag == "--teacher" else f"{flag} is FILE.py:FACTORY or package.module:FACTORY")) from None


@dataclass
class _Distill:
    o: Options
    teacher_ref: ModelRef
    student_ref: ModelRef
    out: Path
    weights_out: Path | None
    bar: Bar | None
    progress: ProgressFactory
    echo: Callable[[str], None] | None
    report: Report
    teacher_probe: dict[str, Any] | None = None

    def execute(self, train_x: dict, train_y: np.ndarray | None, eval_x: dict | None, eval_y: np.ndarray | None,
                labelled: tuple[dict, np.ndarray] | None = None) -> Report:
        from mdeploy.frameworks import torch_models
        from mdeploy.training import Dataset, TrainConfig, checks, fit, split, teacher_outputs, train
        from mdeploy.training.augment import by_default, mixable
        from mdeploy.training.teacher import query

        o, report = self.o, self.report
        start = time.perf_counter()
        teacher = self._open_teacher(train_x)
        specs = teacher.input_specs()
        train_x = checks.samples(train_x, specs, "--data", report.notes)
        eval_x = checks.samples(eval_x, specs, "--eval-data", report.notes) if eval_x is not None else None
        probe = {k: np.ascontiguousarray(v[: fixed_batch(specs) or min(_count(train_x), 2)]) for k, v in train_x.items()}
        teacher_probe = self.teacher_probe = teacher.infer(probe)
        output, kind, classes = self._choose_output(teacher, teacher_probe)
        train_x, train_y = checks.training_labels(train_x, train_y, eval_x, eval_y, labelled, specs, classes, output,
                                                  report)
        n = _count(train_x)
        torch_models.torch().manual_seed(o.seed)  # the student's initial weights follow --seed too
        student = torch_models.load(self.student_ref)
        student_index = checks.check_student(student, probe, teacher_probe, output, self.student_ref.name,
                                             self.teacher_ref.name)
        report.data.update({"distilled_output": output, "loss": "kd" if kind == "scores" else "mse"})
        if kind != "scores":
            report.notes.append(f"'{output}' is not class scores: the student learns it with MSE to the teacher (no KD, no "
                                "top-1); name a class-score output with --classifier-output if it is one")
        report.steps.append(Step("load", "done", {"teacher_inputs": [s.name for s in specs]}, time.perf_counter() - start))

        with tempfile.TemporaryDirectory(prefix="mdeploy-distill-") as work:
            start = time.perf_counter()
            batch = fixed_batch(specs)
            runs = -(-n // (batch or 256)) + (-(-_count(eval_x) // (batch or 256)) if eval_x is not None else 0)
            with self.progress("running the teacher", runs) as advance:
                targets = teacher_outputs(teacher, train_x, output, workdir=Path(work), advance=advance, fixed_batch=batch)
                eval_targets = (teacher_outputs(teacher, eval_x, output, workdir=Path(work), advance=advance, fixed_batch=batch)
                                if eval_x is not None else None)
            report.steps.append(Step("teacher", "done", {"samples": n + (_count(eval_x) if eval_x is not None else 0),
                                                         "cached_on_disk": isinstance(targets, np.memmap)},
                                     time.perf_counter() - start))
            data = Dataset(train_x, targets, train_y if kind == "scores" else None)
            if eval_x is not None:
                train_set, held_out = data, Dataset(eval_x, eval_targets, eval_y if kind == "scores" else None)
                held_source = o.eval_data
            else:
                train_set, held_out = split(data, HELD_OUT_FRACTION, o.seed)
                held_source = f"{len(held_out)} samples of --data ({HELD_OUT_FRACTION:.0%}, seed {o.seed})"
            if train_y is not None and eval_x is not None and eval_y is None:
                report.notes.append("labels were given for --data but not for --eval-data: held-out accuracy is not measured")
            wanted, default_note = (o.mixup, None) if o.mixup is not None else by_default(train_y)
            why_not = (mixable(train_x) or (f"the teacher takes a fixed batch of {batch}" if batch else None)) if wanted else None
            mixup = wanted and why_not is None
            report.notes += [n for n in (default_note, why_not and f"no mixup: {why_not}; the student learns the teacher's outputs on --data as they are") if n]
            steps = None if o.epochs else o.steps or (STEPS if mixup else STEPS_NO_MIXUP)
            config = TrainConfig(epochs=o.epochs or TrainConfig.epochs, steps=steps, batch_size=o.batch_size, lr=o.lr, weight_decay=o.weight_decay,
                                 temperature=o.temperature, alpha=o.alpha if train_y is not None else 1.0, patience=o.patience,
                                 mixup=MIXUP_ALPHA if mixup else 0.0, kind=kind, output=student_index, seed=o.seed,
                                 device=o.device)
            in_loop = query(teacher, output) if mixup else None
            start = time.perf_counter()
            if eval_x is None and not o.no_refit:
                result = fit(student.module, data, config, HELD_OUT_FRACTION, progress=self.progress, echo=self.echo,
                             teacher=in_loop)
            else:
                result = train(student.module, train_set, config, held_out=held_out, progress=self.progress, echo=self.echo,
                               teacher=in_loop)
            if result.refit:
                r = result.refit
                report.notes.append(f"refit: the written student trained on all {n} samples of --data for {r['epochs']} epochs "
                                    f"({r['steps']} steps, {r['length']}, with a complete schedule); the training figures are "
                                    "the held-out run's, and the proof below runs on samples the refit student has seen "
                                    "(give --eval-data or --no-refit for a proof on unseen data)")
            if result.interrupted:
                best = (f"best checkpoint: epoch {result.best_epoch}, held-out {_metrics_text(result.best_metrics)}"
                        if result.best_epoch else "no epoch finished")
                raise Interrupted(f"interrupted after {len(result.history)} epochs; {best}; nothing written")
            report.steps.append(Step("train", "done", result.to_dict(), time.perf_counter() - start))
            report.data["training"] = {"config": {k: v for k, v in vars(config).items() if k != "output"},
                                       "held_out": held_source, **{k: v for k, v in result.to_dict().items() if k != "history"}}
            student.module.load_state_dict(result.best_state)
            student.module.to("cpu").eval()
            title = ("student vs teacher on --eval-data" if eval_x is not None else
                     f"student vs teacher on the {len(held_out)} held-out samples, which the refit trained on" if result.refit
                     else "student vs teacher on held-out data")
            self._write(student, result.best_state, specs, teacher, held_out, output, kind, Path(work), title)
        return report

    def _open_teacher(self, data: dict[str, np.ndarray]) -> Any:
        """The teacher's runner. An eager torch module takes any batch: its input specs come from the data (named
        by its forward() arguments), so example inputs of batch 2 do not fix the batch."""
        ref = self.teacher_ref
        if ref.format == Format.PYTORCH_MODULE and "" not in data:
            specs = [TensorSpec(k, ("batch", *v.shape[1:]), str(v.dtype), dtype_given=True) for k, v in data.items()]
            try:
                return registry.open_runner(ref, self.o.device, input_specs=specs)
            except InputError as exc:
                if not exc.message.startswith("--input names"):
                    raise
                raise InputError(f"--data keys {', '.join(data)} are not the teacher's inputs ({exc.message.split('not an input')[0]})",
                                 hint=exc.hint) from None
        return registry.open_runner(ref, self.o.device)

    def _choose_output(self, teacher: Any, probe: dict[str, np.ndarray]) -> tuple[str, str, int | None]:
        """The teacher output to distill, whether it is class scores, and its class count."""
        names = list(probe)
        declared = classifier_choice(self.o.classifier_output, self.o.no_classifier)
        kinds = scores.decide(names, probe, declared, scores.graphs_of(teacher, pairs=[(n, n) for n in names]))
        if self.o.teacher_output:
            if self.o.teacher_output not in probe:
                raise InputError(f"--teacher-output '{self.o.teacher_output}' is not an output of the teacher",
                                 hint="its outputs are: " + ", ".join(names))
            output = self.o.teacher_output
        else:
            output = next((n for n in names if kinds[n].scores and probe[n].ndim == 2), names[0])
        is_scores = kinds[output].scores and probe[output].ndim == 2
        return output, "scores" if is_scores else "regression", int(probe[output].shape[-1]) if is_scores else None

    def _write(self, student: Any, state: dict, specs: list[TensorSpec], teacher: Any, held: Any, output: str, kind: str,
               work: Path, title: str) -> None:
        from mdeploy.frameworks.torch_models import torch
        from mdeploy.training import dropin

        report, o = self.report, self.o
        staged_weights = work / "student.pt"
        torch().save(state, staged_weights)
        with atomic_output(self.out, o.force) as tmp:
            start = time.perf_counter()
            fmt = Format.ONNX if self.out.suffix == ".onnx" else Format.PYTORCH_EXPORTED
            feeds = batches_from_data(held.inputs, specs, EVAL_BATCH)
            if fmt == Format.ONNX:
                self._export_onnx(student, staged_weights, specs, feeds[0], tmp)
                if not o.keep_student_names:
                    outputs = dropin.onnx_outputs(self.teacher_ref.path) or [
                        TensorSpec(k, (specs[0].shape[0] if specs and specs[0].shape else v.shape[0], *v.shape[1:]), str(v.dtype))
                        for k, v in self.teacher_probe.items()]
                    report.notes.extend(dropin.take_interface(tmp, specs, outputs))
            else:
                _export_pt2(student, feeds[0], specs, tmp)
            report.steps.append(Step("export", "done", {"format": fmt.value}, time.perf_counter() - start))
            start = time.perf_counter()
            cand = registry.open_runner(ModelRef(tmp, fmt), o.device)
            tolerance = bar_tolerance(self.bar, Tolerance(atol=None, rtol=None, source="distill (no bar)"),
                                      (output,) if kind == "scores" else ())
            if kind != "scores":  # a regression output: no top-1 to judge, whatever the bar says
                tolerance = replace(tolerance, min_top1=None)
            labels = held.labels if kind == "scores" else None
            known = None if labels is None or (labels >= 0).all() else labels >= 0
            with self.progress("proving the student", len(feeds)) as advance:
                proof = prove(teacher, cand, feeds, tolerance, labels if known is None else None, label=title, progress=advance)
            if known is not None and known.any():  # accuracy on the held-out samples that have a label
                subset = batches_from_data({k: v[known] for k, v in held.inputs.items()}, specs, EVAL_BATCH)
                proof = Proof(proof.comparison, prove(teacher, cand, subset, tolerance, labels[known]).accuracy)
            report.comparisons.append(proof.comparison)
            report.steps.append(Step("validate", "passed" if proof.comparison else "failed",
                                     {"inputs_sha256": vinputs.feeds_hash(feeds)}, time.perf_counter() - start))
            if proof.accuracy:
                report.data["accuracy"] = proof.accuracy.to_dict("teacher", "student")
            report.data["models"] = self._side_by_side(teacher, cand, feeds[0], tmp, fmt, student)
            if self.bar:
                verdict = self.bar.judge(proof)
                report.data["max_error"] = verdict.to_dict()
                report.steps.append(verdict.step())
                if verdict.missed:
                    report.notes.append(f"the best student misses {self.bar} ({'; '.join(verdict.missed)}); it is written anyway")
            del cand
            if self.weights_out is not None:
                with atomic_output(self.weights_out, o.force) as wtmp:
                    wtmp.write_bytes(staged_weights.read_bytes())
                report.data["weights"] = str(self.weights_out)

    def _export_onnx(self, student: Any, weights: Path, specs: list[TensorSpec], feed: dict, tmp: Path) -> None:
        """As `mdeploy convert` would (torch -> ONNX with a dynamic batch, proven against the student itself)."""
        from mdeploy.conversion import convert_model
        from mdeploy.converters.base import chosen_options

        names = student.input_names[: len(specs)]
        inputs = [f"{name}:{'x'.join(str(d) for d in (max(2, feed[s.name].shape[0]), *feed[s.name].shape[1:]))}:{s.dtype}"
                  for name, s in zip(names, specs)]
        dynamic = [] if fixed_batch(specs) else [parse_dynamic(f"{n}:0") for n in names]
        options = chosen_options({"inputs": parse_specs(inputs), "dynamic": dynamic})
        ref = ModelRef.parse(self.student_ref.factory or "", None, str(weights)).with_load_options(options)
        sub = convert_model(ref, tmp, Format.ONNX, options, tolerance_for("fp32", None, None, classifier_choice([], False)),
                            force=True)
        self.report.steps.extend(Step(f"export: {s.name}", s.status, s.details, s.seconds) for s in sub.steps)
        self.report.notes.extend(sub.notes)
        if not sub:
            raise ConversionError("the exported student does not compute what the trained student does",
                                  hint="run `mdeploy convert` on the student with --save-weights' state_dict to see why")

    def _side_by_side(self, teacher: Any, cand: Any, feed: dict, path: Path, fmt: Format, student: Any) -> dict[str, Any]:
        """Size, parameters and latency of teacher and student, timed interleaved on the same one-sample batch."""
        one = {k: v[:1] for k, v in feed.items()} if not fixed_batch(teacher.input_specs()) else feed
        from mdeploy.measuring.latency import time_runs
        from mdeploy.validation.run import candidate_feed

        cand_one = candidate_feed(one, teacher, cand)
        teacher_s, student_s = time_runs([(teacher, one), (cand, cand_one)], warmup=3, runs=LATENCY_RUNS)
        student_params = int(sum(p.numel() for p in student.module.parameters()))
        teacher_size = size_of(self.teacher_ref.path) if self.teacher_ref.factory is None else None
        return {
            "teacher": {"format": self.teacher_ref.format.value, "size_bytes": teacher_size, "parameters": _parameters(self.teacher_ref),
                        "latency_ms_median": statistics.median(teacher_s) * 1000},
            "student": {"format": fmt.value, "size_bytes": size_of(path), "parameters": student_params,
                        "latency_ms_median": statistics.median(student_s) * 1000},
            "latency_batch": int(next(iter(one.values())).shape[0]),
        }


def _count(arrays: dict[str, np.ndarray] | None) -> int:
    return int(next(iter(arrays.values())).shape[0]) if arrays else 0


def _metrics_text(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def _parameters(ref: ModelRef) -> int | None:
    try:
        return registry.runner_for(ref.format).describe(ref).get("parameters")
    except (MdeployError, NotImplementedError, AttributeError, OSError):
        return None


def _export_pt2(student: Any, feed: dict, specs: list[TensorSpec], tmp: Path) -> None:
    """torch.export with a dynamic batch (unless the teacher's is fixed), saved with torch.export.save."""
    from mdeploy.frameworks.torch_models import export_pt2, to_torch

    example = tuple(to_torch({k: np.concatenate([v, v])[: max(2, len(v))] for k, v in feed.items()}).values())
    export_pt2(student.module, example, tmp, dynamic_batch=not fixed_batch(specs), what="the student",
               hint="write the student as .onnx")
