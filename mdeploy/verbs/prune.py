"""`prune SRC -o OUT.onnx|OUT.pt2`: prune a PyTorch model so that the deployed model is really smaller and faster, recover
what it lost by distillation from the unpruned model, export it, and prove on data what it kept.

The steps: load the factory's module; prune it (mdeploy/pruning: structured with Torch-Pruning, or masks); recover
(distillation with --data, BatchNorm recalibration with --data --epochs 0); write the pruned weights with their
pruning history into the staging folder and export them with `convert` (FILE.py:FACTORY --weights, which replays
the history: the same path a user takes with --save-weights), which validates the ONNX model against the pruned
torch module (a `.pt2` output is torch.export-ed from that same rebuilt module and validated against it through the
runners); then prove the result against the unpruned original (agreement, cosine, accuracy with labels) and
measure parameters, MACs, file size and onnxruntime latency before and after, side by side.

A `.pt2` source is tried as `torch.export.load(p).module()`: Torch-Pruning cannot trace that graph module (it has
no nn.Conv2d / nn.Linear layers left, and refuses eval()), so it ends in exit 2 naming what prune reads.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdeploy import machine, registry
from mdeploy.core import Format, ModelRef, Tolerance, classifier_choice, parse_dynamic, parse_specs, tolerance_for
from mdeploy.errors import ConversionError, InputError
from mdeploy.outputs import atomic_output, check_output, size_of
from mdeploy.quantization.calibration import batches_from_data
from mdeploy.progress import ProgressFactory, no_progress
from mdeploy.reports.report import Report, Step
from mdeploy.validation import inputs as vinputs
from mdeploy.validation.bar import Bar, parse_bar
from mdeploy.validation.proof import bar_tolerance, prove, random_feeds
from mdeploy.verbs.options import check, option

METHODS = ("structured", "unstructured", "2:4")
DEFAULT_SPARSITY = 0.5
EVAL_BATCH = 64
RANDOM_SAMPLES = 16
RECOVERY_LR = 1e-2  # the training loop's default (TrainConfig.lr) for fine-tuning: a test holds the two equal


@dataclass
class Options:
    src: str = option(help="PyTorch model: FILE.py:FACTORY or package.module:FACTORY (with --weights).", argument=True)
    output: str = option(help="Where to write the pruned model (.onnx, or .pt2 with torch.export).", short="-o")
    weights: str | None = option(None, help="state_dict for the factory's module (loaded with weights_only=True).")
    sparsity: float | None = option(None, help="Fraction of channels (structured) or weights (unstructured) removed "
                                    "(default 0.5; 0 with --head-sparsity removes attention heads only).", min=0.0,
                                    below=1.0)
    target_macs: float | None = option(None, help="Structured: prune until MACs reach this fraction of the original.",
                                       above=0.0, below=1.0)
    head_sparsity: float | None = option(None, help="Structured: fraction of attention heads removed whole, in attention "
                                         "with separate q/k/v nn.Linear layers and a head count (default: --sparsity; 0 "
                                         "keeps every head).", min=0.0, below=1.0)
    method: str = option("structured", help="structured (channels, really faster) | unstructured | 2:4 (masks: a dense "
                         "runtime gains no speed).", choices=METHODS)
    importance: str = option("magnitude", help="Channel ranking: magnitude (L2) | taylor (gradients on --data).",
                             choices=("magnitude", "taylor"))
    global_ranking: bool = option(False, flag="--global/--per-layer",
                                  help="Rank channels over the whole model (global) or prune each layer alike (default).")
    ignore: list[str] = option([], help="Module name never pruned, as in named_modules() (repeatable).")
    round_to: int | None = option(None, help="Keep channel counts multiples of N (fast kernels like multiples of 8).", min=1)
    data: str | None = option(None, help=".npz of training inputs for recovery (distillation from the unpruned model).")
    labels: str | None = option(None, help=".npy of class ids for --data: adds cross-entropy to the distillation.")
    epochs: int = option(10, help="Recovery epochs on --data; 0 only recalibrates BatchNorm statistics.", min=0)
    lr: float = option(RECOVERY_LR, help="Recovery learning rate: AdamW's peak (linear warm-up, then cosine decay).",
                       above=0)  # lower than distill's: recovery fine-tunes, distill trains a student from scratch
    eval_data: str | None = option(None, help=".npz of inputs to prove the result on against the unpruned model.")
    eval_labels: str | None = option(None, help=".npy of class ids for --eval-data (or a `labels` array in it).")
    max_error: str | None = option(None, help="The bar, e.g. accuracy-drop<=0.005, top1>=0.95, cosine>=0.99.")
    save_weights: str | None = option(None, help="Also write the pruned weights (.pt) that FACTORY --weights rebuilds.")
    inputs: list[str] = option([], flag="--input", help="NAME:SHAPE[:DTYPE] example input (repeatable).")
    dynamic: list[str] = option([], help="NAME:AXIS[:DIMNAME] axis that stays dynamic (default: axis 0 of every input).")
    threads: int = option(2, help="onnxruntime threads for the latency measurement.", min=1)
    no_benchmark: bool = option(False, help="Skip measuring the unpruned model: its export, file size and latency.")
    classifier_output: list[str] = option([], help="Output that is class scores (repeatable; default: decided from the "
                                          "graph and the output names).")
    seed: int = option(0, help="Seed for random inputs and recovery (recorded in the report).")
    force: bool = option(False, help="Replace existing outputs.")


def run(options: Options, progress: ProgressFactory = no_progress) -> Report:
    """Prune a PyTorch model (channels, or masks), recover it, export it to ONNX and prove what it kept."""
    check(options)
    o = options
    ref = _source(o)
    out = Path(o.output)
    if out.suffix not in (".onnx", ".pt2"):
        raise InputError(f"prune writes an ONNX model (*.onnx) or an ExportedProgram (*.pt2), not '{out.name}'",
                         hint="the pruned torch module itself is written with --save-weights OUT.pt")
    check_output(out, o.force)
    weights_out = Path(o.save_weights) if o.save_weights else None
    if weights_out is not None:
        if weights_out.suffix != ".pt":
            raise InputError(f"--save-weights writes a .pt state_dict file, not '{weights_out.name}'")
        check_output(weights_out, o.force)
        if weights_out.resolve() == out.resolve():
            raise InputError("--save-weights and -o name the same file")
        if ref.weights is not None and weights_out.resolve() == ref.weights.resolve():
            raise InputError("--save-weights would overwrite the input weights", hint="choose another path")
    sparsity, target = _amount(o)
    bar = parse_bar(o.max_error) if o.max_error is not None else None
    for flag, path in (("--data", o.data), ("--labels", o.labels), ("--eval-data", o.eval_data), ("--eval-labels", o.eval_labels)):
        if path and not Path(path).exists():
            raise InputError(f"{flag}: file not found: {path}")
    if o.labels and not o.data:
        raise InputError("--labels needs the --data they label")
    if o.eval_labels and not o.eval_data:
        raise InputError("--eval-labels needs the --eval-data they label")
    if bar and bar.needs_labels and not (
            o.eval_labels or (o.eval_data and "labels" in vinputs.load_arrays(Path(o.eval_data), mmap=True))):
        raise InputError("--max-error on accuracy needs labelled evaluation data",
                         hint="give --eval-data E.npz with --eval-labels EL.npy (or a `labels` array in E.npz)")
    job = Job(o, ref, out, weights_out, sparsity, target, bar, progress)
    if weights_out is None:
        with atomic_output(out, o.force) as tmp:
            return job.execute(tmp, None)
    with atomic_output(out, o.force) as tmp, atomic_output(weights_out, o.force) as wtmp:
        return job.execute(tmp, wtmp)


def _source(o: Options) -> ModelRef:
    """The model to prune: a module built by code (it can lose channels and still be rebuilt), or a `.pt2` tried as
    the module torch.export.load gives back."""
    ref = ModelRef.parse(o.src, None, o.weights)
    if ref.format in (Format.PYTORCH_MODULE, Format.PYTORCH_EXPORTED):
        if ref.format == Format.PYTORCH_EXPORTED and o.weights:
            raise InputError("--weights goes with FILE.py:FACTORY; a .pt2 carries its own weights")
        return ref
    raise InputError(
        f"prune reads PyTorch models given as FILE.py:FACTORY (+ --weights), not {ref.format.value} ({ref.name})",
        hint="prune the PyTorch model this was made from, then convert or quantize the pruned ONNX model",
    )


def _amount(o: Options) -> tuple[float | None, float | None]:
    if o.sparsity is not None and o.target_macs is not None:
        raise InputError("give --sparsity or --target-macs, not both")
    if o.target_macs is not None:
        if o.method != "structured":
            raise InputError(f"--target-macs needs --method structured: {o.method} masks never change the MACs")
        if not 0 < o.target_macs < 1:
            raise InputError(f"--target-macs {o.target_macs:g} is not a fraction between 0 and 1 (exclusive)",
                             hint="e.g. --target-macs 0.4 keeps 40% of the MACs")
        if o.head_sparsity is not None:
            raise InputError("--head-sparsity goes with --sparsity: --target-macs removes channels only and keeps heads whole")
        return None, o.target_macs
    if o.head_sparsity is not None:
        if o.method != "structured":
            raise InputError(f"--head-sparsity needs --method structured: {o.method} masks remove no heads")
        if not 0 <= o.head_sparsity < 1:
            raise InputError(f"--head-sparsity {o.head_sparsity:g} is not a fraction between 0 (inclusive) and 1",
                             hint="e.g. --head-sparsity 0.5 removes half the heads of every attention")
    if o.method == "2:4":
        if o.sparsity is not None:
            raise InputError("--method 2:4 is 50% sparsity by definition: drop --sparsity")
        return 0.5, None
    sparsity = DEFAULT_SPARSITY if o.sparsity is None else o.sparsity
    heads_only = sparsity == 0 and o.method == "structured" and bool(o.head_sparsity)
    if not (0 < sparsity < 1 or heads_only):
        raise InputError(f"--sparsity {sparsity:g} is not a fraction between 0 and 1 (exclusive)",
                         hint="e.g. --sparsity 0.5 removes half the channels"
                         + ("; --sparsity 0 --head-sparsity F removes attention heads only" if sparsity == 0 else ""))
    return sparsity, None


@dataclass
class Job:
    o: Options
    ref: ModelRef
    out: Path
    weights_out: Path | None
    sparsity: float | None
    target_macs: float | None
    bar: Bar | None
    progress: ProgressFactory
    input_names: list[str] = field(default_factory=list)
    examples: dict[str, Any] = field(default_factory=dict)

    def execute(self, tmp: Path, weights_tmp: Path | None) -> Report:
        from mdeploy.frameworks import pruning_record, torch_models
        from mdeploy.pruning import examples as pruning_examples
        from mdeploy.pruning import measure, methods, structured

        o = self.o
        torch = torch_models.torch()
        torch.manual_seed(o.seed)
        report = Report(command="prune", data={"source": self.ref.name, "output": str(self.out), "method": o.method,
                                               "seed": o.seed})
        loaded = torch_models.load(self.ref)
        module = loaded.module
        examples = self.examples = pruning_examples.tracing_examples(loaded, parse_specs(o.inputs), o.seed)
        names = self.input_names = list(examples)
        if self.ref.format == Format.PYTORCH_EXPORTED:
            raise methods.exported_refusal(module, examples, self.sparsity or DEFAULT_SPARSITY, self.ref.name)
        specs = [{"name": k, "shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")} for k, v in examples.items()]
        original = copy.deepcopy(module).eval()
        sample = measure.first_sample(examples)
        macs_before, params_before = measure.macs_and_params(module, sample)
        widths_before = measure.widths(module)
        train = pruning_examples.training_data(o.data, o.labels, self.examples, names, report.notes) if o.data else None
        if train is not None and train[1] is not None:  # found now, not after pruning and an export
            from mdeploy.pruning import recover

            recover.check_labels_apply(module, train[0], names, "--labels" if o.labels else "the `labels` array in --data")
        if o.eval_data:  # refused now, not after pruning: NaN/Inf, labels that are not class ids
            from mdeploy.training.checks import load_data

            load_data(o.eval_data, o.eval_labels, "--eval-data", "--eval-labels")

        start = time.perf_counter()
        settings = structured.Settings(self.sparsity, self.target_macs, o.importance, o.global_ranking, list(o.ignore),
                                       o.round_to, o.head_sparsity)
        record, details = methods.prune(module, examples, o.method, settings, train, report.notes)
        report.steps.append(Step(f"prune {o.method}", "done", details, time.perf_counter() - start))

        start = time.perf_counter()
        recovery = self._recover(module, original, train, names, tmp.parent, report)
        if o.method != "structured":
            from mdeploy.pruning import masks

            masks.make_permanent(module)
        if recovery:
            report.steps.append(Step(f"recover ({recovery['how']})", "done", recovery, time.perf_counter() - start))
        macs_after, params_after = measure.macs_and_params(module, sample)
        if o.method == "structured" and macs_after >= macs_before:
            raise ConversionError("pruning changed nothing: the MACs are the same before and after",
                                  hint="raise --sparsity, or --ignore fewer layers")
        staged = tmp.parent / "pruned_weights.pt"
        pruning_record.save(staged, module, record, specs, details.get("heads"))
        changed = measure.changed_widths(widths_before, measure.widths(module))
        report.data["parameters"] = {"before": params_before, "after": params_after, "ratio": params_after / params_before,
                                     "nonzero_after": measure.nonzero_params(module)}
        report.data["macs"] = {"before": macs_before, "after": macs_after, "ratio": macs_after / macs_before,
                               "per_sample": True}
        report.data["layers_changed"] = changed
        if details.get("heads"):
            report.data["heads"] = details["heads"]
        del module, original
        pruned_ref = ModelRef(self.ref.path, Format.PYTORCH_MODULE, self.ref.factory, staged)
        original_out = tmp.parent / f"original{self.out.suffix}"
        if self.out.suffix == ".pt2":
            self._export_pt2(pruned_ref, tmp, report)
        else:
            self._export(pruned_ref, tmp, report, validate=True)
        report.data["size"] = {"after_bytes": size_of(tmp), "format": self.out.suffix[1:]}
        if o.no_benchmark:  # the unpruned model is exported only to be measured
            report.notes.append("--no-benchmark: the unpruned model was not exported; its file size and latency are not measured")
        else:
            if self.out.suffix == ".pt2":
                self._export_pt2(self.ref, original_out, None)
            else:
                self._export(self.ref, original_out, report, validate=False)
            report.data["size"].update(before_bytes=size_of(original_out), ratio=size_of(tmp) / size_of(original_out))
            start = time.perf_counter()
            onnx_before, onnx_after = original_out, tmp
            if self.out.suffix == ".pt2":  # onnxruntime latency, the same measure as for an ONNX output
                onnx_before, onnx_after = tmp.parent / "original.onnx", tmp.parent / "pruned.onnx"
                self._export(self.ref, onnx_before, report, validate=False)
                self._export(pruned_ref, onnx_after, report, validate=False)
                report.notes.append("latency measured with onnxruntime on ONNX exports of both models (the .pt2 runs in torch)")
            from mdeploy.measuring.latency import side_by_side

            before, after = side_by_side([onnx_before, onnx_after], threads=o.threads, seed=o.seed)
            report.data["latency"] = {"before_ms": before["median_ms"], "after_ms": after["median_ms"],
                                      "ratio": after["median_ms"] / before["median_ms"], "threads": o.threads, "batch": 1,
                                      "runs": before["runs"], "cpu_flags": machine.cpu_flags()}
            report.steps.append(Step("latency (onnxruntime, side by side)", "done", report.data["latency"],
                                     time.perf_counter() - start))
            slower = _slower(report.data["latency"], o.method)
            if slower:
                report.notes.append(slower)
        self._prove(tmp, report)
        if weights_tmp is not None:
            staged.replace(weights_tmp)
            report.data["weights"] = str(self.weights_out)
        return report

    def _recover(self, module: Any, original: Any, train: Any, names: list[str], workdir: Path, report: Report) -> dict | None:
        from mdeploy.pruning import recover

        o = self.o
        if train is None:
            report.notes.append("WARNING: no --data: the pruned model was not fine-tuned and its accuracy is unproven "
                                "unless --eval-data with labels shows it")
            return None
        inputs, labels = train
        if o.epochs == 0:
            if not recover.has_batchnorm(module):
                report.notes.append("--epochs 0 and no BatchNorm to recalibrate: nothing was recovered")
                return None
            n = recover.recalibrate_batchnorm(module, inputs, names)
            return {"how": "BatchNorm statistics recalibrated", "samples": n}
        result = recover.distil(module, original, inputs, labels, names, o.epochs, o.lr, o.seed, workdir, self.progress)
        return {"how": "distillation from the unpruned model" + (" + labels" if labels is not None else ""), **result}

    def _export(self, ref: ModelRef, out: Path, report: Report, validate: bool) -> None:
        """Export as `mdeploy convert` would (and, for the pruned model, prove it against the pruned torch module)."""
        from mdeploy.conversion import convert_model
        from mdeploy.converters.base import chosen_options

        dynamic = list(self.o.dynamic) or [f"{name}:0" for name in self.input_names]
        options = chosen_options({"inputs": parse_specs(self.o.inputs), "dynamic": [parse_dynamic(d) for d in dynamic]})
        done = convert_model(ref.with_load_options(options), out, Format.ONNX, options, self._tolerance(),
                             seed=self.o.seed, validate=validate, force=True)
        if validate:
            for step in done.steps:
                report.steps.append(Step(f"export: {step.name}", step.status, step.details, step.seconds))
            for comparison in done.comparisons:
                comparison.label = f"pruned ONNX vs pruned torch ({comparison.label})"
                comparison.notes = [n.replace(str(out), str(self.out)) for n in comparison.notes]
            report.comparisons.extend(done.comparisons)
            report.notes.extend(done.notes)

    def _tolerance(self) -> Tolerance:
        """fp32 tolerances for an export, top-1 judged on the outputs `--classifier-output` names (or the graph's)."""
        return tolerance_for("fp32", None, None, classifier_choice(self.o.classifier_output, False))

    def _export_pt2(self, ref: ModelRef, out: Path, report: Report | None) -> None:
        """torch.export the module `ref` builds (for the pruned one: the factory with the pruning record replayed, as
        --save-weights users get it) with a dynamic batch; with a report, validate the .pt2 against that module on two
        random samples, as `mdeploy validate` would."""
        import numpy as np

        from mdeploy.frameworks import torch_models
        from mdeploy.validation.run import compare, merged_specs

        loaded = torch_models.load(ref)
        example = []
        for name in self.input_names:
            value = self.examples[name]
            example.append(value if value.shape[0] >= 2 else value.repeat(2, *([1] * (value.ndim - 1))))  # batch 1 specializes
        what = "the pruned model" if report is not None else "the unpruned model"
        torch_models.export_pt2(loaded.module.eval(), tuple(example), out, what=what, hint="write the pruned model as .onnx")
        del loaded
        if report is None:
            return
        start = time.perf_counter()
        ref_runner = registry.open_runner(ref, input_specs=parse_specs(self.o.inputs) or None)
        cand_runner = registry.open_runner(ModelRef(out, Format.PYTORCH_EXPORTED))
        specs, rng = merged_specs(ref_runner, cand_runner), np.random.default_rng(self.o.seed)
        feeds = [vinputs.random_feed(specs, rng) for _ in range(2)]
        comparison = compare(ref_runner, cand_runner, feeds, self._tolerance())
        what = "pruned .pt2 vs pruned torch"
        comparison.label = f"{what} ({comparison.label})" if comparison.label else what
        comparison.notes = [n.replace(str(out), str(self.out)) for n in comparison.notes]
        report.comparisons.append(comparison)
        report.steps.append(Step("export: torch.export (.pt2), validated against the pruned torch module",
                                 "passed" if comparison else "failed", {}, time.perf_counter() - start))

    def _prove(self, tmp: Path, report: Report) -> None:
        """The pruned ONNX model against the unpruned original, on --eval-data (or random inputs)."""
        o = self.o
        cand = registry.open_runner(ModelRef(tmp, Format.PYTORCH_EXPORTED if tmp.suffix == ".pt2" else Format.ONNX))
        specs = cand.input_specs()
        ref_runner = registry.open_runner(self.ref, input_specs=specs)  # the exported batch axis is dynamic
        labels = None
        if o.eval_data:
            from mdeploy.training.checks import load_data

            arrays, labels = load_data(o.eval_data, o.eval_labels, "--eval-data", "--eval-labels")
            feeds = batches_from_data(arrays, specs, EVAL_BATCH, flag="--eval-data")
            report.notes.extend(feeds.notes)
            source = o.eval_data
        else:
            feeds, source = random_feeds(specs, o.seed, RANDOM_SAMPLES, RANDOM_SAMPLES)
            report.notes.append("proved on random inputs only: give --eval-data (with labels) for a real proof")
        tolerance = bar_tolerance(self.bar, Tolerance(atol=None, rtol=None, source="measured, not judged"),
                                  classifier_choice(o.classifier_output, False))
        start = time.perf_counter()
        proof = prove(ref_runner, cand, feeds, tolerance, labels, label=f"pruned vs unpruned on {source}")
        outputs = proof.comparison.to_dict()
        report.data["proof"] = {"data": source, "comparison": outputs}
        if proof.accuracy:
            report.data["accuracy"] = proof.accuracy.to_dict("before", "after")
        step = Step("prove against the unpruned model", "done", {"data": source}, time.perf_counter() - start)
        report.steps.append(step)
        if self.bar:
            verdict = self.bar.judge(proof)
            report.data["max_error"] = verdict.to_dict()
            report.steps.append(verdict.step())
            if not verdict.met:
                report.notes.append(f"the bar {self.bar} is not met ({'; '.join(verdict.missed)}); the pruned model is written "
                                    "anyway")


def _slower(latency: dict[str, Any], method: str) -> str | None:
    """A WARNING when the pruned model runs slower than the original (measured side by side): fewer MACs do not make
    a model faster when the channel counts left defeat the runtime's fast kernels, and a user pruning for speed must
    not learn it in production."""
    ratio = latency["ratio"]
    if ratio <= 1.0:
        return None
    fix = ("keep channel counts kernel-friendly with --round-to 8 (or 16), or prune less (--sparsity / --target-macs)"
           if method == "structured" else "masks keep every channel: only a sparse runtime can gain from them")
    return (f"WARNING: the pruned model is slower than the original: {latency['after_ms']:.3g} ms vs "
            f"{latency['before_ms']:.3g} ms median ({ratio:.2f}x, onnxruntime, batch 1, {latency['threads']} threads, "
            f"measured side by side); {fix}")
