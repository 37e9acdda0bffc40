"""`quantize SRC -o OUT`: INT8 quantization with the pass for the source's format, proved on data, repaired to a bar.

The pass (quantization/onnx_quantize.py, quantization/tflite_quantize.py) writes the quantized model; this verb then proves on
data what it kept (output agreement, and task accuracy with labels), and with `--max-error` keeps the costliest
nodes of an ONNX model in float until the bar holds. If it never does, the best model found is written and the
report fails (exit 1).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdeploy import registry
from mdeploy.converters.base import chosen_options
from mdeploy.core import Format, ModelRef, classifier_choice, parse_specs, tolerance_for
from mdeploy.errors import InputError, MdeployError
from mdeploy.lazy import numpy as np
from mdeploy.outputs import atomic_output, check_output, size_of
from mdeploy.quantization.base import build_pass_options
from mdeploy.quantization import weight_only
from mdeploy.quantization import goal as goal_search
from mdeploy.quantization.calibration import batches_from_data, fixed_batch
from mdeploy.quantization import runtime_report
from mdeploy.progress import ProgressFactory, no_progress
from mdeploy.reports.report import Report, Step
from mdeploy.validation import inputs as vinputs
from mdeploy.validation import repair
from mdeploy.validation.bar import Bar, parse_bar
from mdeploy.validation.proof import Proof, bar_tolerance, prove, random_feeds
from mdeploy.verbs.options import check, option

EVAL_BATCH = 64
RANDOM_SAMPLES = 16
LAYERWISE_SAMPLES = 64  # enough to rank layers by the error they add


@dataclass
class Options:
    src: str = option(help="Float model: .onnx (SavedModel / .keras go to TFLite when that pass is installed).", argument=True)
    output: str = option(help="Where to write the quantized model (.onnx, or .tflite).", short="-o")
    src_format: str | None = option(None, flag="--from", help="Source format, when the name does not tell.")
    mode: str | None = option(None, help="auto | dynamic | static. auto: static with calibration data, else dynamic.",
                              choices=("auto", "dynamic", "static"))
    calib_data: str | None = option(None, help=".npz (or .npy / folder of .npy) of real inputs for static calibration.")
    calib_method: str | None = option(None, help="minmax | entropy | percentile (default minmax).",
                                      choices=("minmax", "entropy", "percentile"))
    calib_samples: int | None = option(None, help="Calibrate on N RANDOM samples (no real data; rarely accurate).", min=1)
    calib_batch: int | None = option(None, help="Samples per calibration batch (default 16; a fixed model batch wins).", min=1)
    per_channel: bool | None = option(None, flag="--per-channel/--per-tensor",
                                      help="Weight scales per output channel (default: on for static).")
    quant_format: str | None = option(None, flag="--format", help="qdq | qoperator (default qdq).", choices=("qdq", "qoperator"))
    activation_type: str | None = option(None, help="uint8 | int8 (default: uint8 on x86, the fast one; int8 on ARM).",
                                         choices=("uint8", "int8"))
    weight_type: str | None = option(None, help="int8 | uint8 (default int8).", choices=("int8", "uint8"))
    reduce_range: bool | None = option(None, flag="--reduce-range/--full-range",
                                       help="7-bit weights (default: on for x86 without VNNI).")
    target: str | None = option(None, help="cpu | tensorrt. cpu (default): fast on this CPU; tensorrt: symmetric int8 QDQ, "
                                "the only INT8 form TensorRT takes (needs calibration data).", choices=("cpu", "tensorrt"))
    exclude: list[str] = option([], help="Node name kept in float (repeatable).")
    exclude_op: list[str] = option([], help="Operator type kept in float, e.g. Softmax (repeatable).")
    op_types: list[str] = option([], flag="--op-type", help="Quantize only these operator types (repeatable).")
    no_preprocess: bool = option(False, help="Skip constant folding and shape inference.")
    int8_io: bool = option(False, help="TFLite: int8 model inputs and outputs.")
    allow_float_fallback: bool = option(False, help="TFLite: keep ops without int8 kernels in float.")
    signature: str | None = option(None, help="TFLite: the SavedModel signature to convert.")
    inputs: list[str] = option([], flag="--input", help="NAME:SHAPE[:DTYPE], e.g. input_ids:1x128:int64 (repeatable).")
    weights: str | None = option(None, help="Weight-only quantization: int4 | int8 weights (MatMulNBits, embeddings "
                                 "too in int4), activations stay float; no calibration.", choices=("int4", "int8"))
    block_size: int | None = option(None, help="--weights: weights per scale, 16 | 32 | 64 | 128 | 256 (default 32).", min=1)
    method: str | None = option(None, help="--weights: rtn | hqq | k_quant (default rtn).", choices=("rtn", "hqq", "k_quant"))
    symmetric: bool | None = option(None, flag="--symmetric/--asymmetric",
                                    help="--weights: zero points or not (default: symmetric for rtn).")
    accuracy_level: int | None = option(None, help="--weights: MatMulNBits compute type 0-4 (default 4: int8, fast on CPU).",
                                        min=0, max=4)
    eval_data: str | None = option(None, help="Data to prove the result on (default: the calibration data); for a "
                                   "language model folder: token ids as input_ids, the prompts of its proof by generation.")
    prompts: str | None = option(None, help="A language model folder's proof by generation: a text file, one prompt per "
                                 "line (default: a few built-in prompts).")
    labels: str | None = option(None, help=".npy of class ids for the data: reports task accuracy before and after.")
    max_error: str | None = option(None, help="The bar, e.g. cosine>=0.995, top1>=0.99, accuracy-drop<=0.01 (comma-separated).")
    eval_samples: int | None = option(None, help="Random samples to validate on when no data is given (default 16).", min=1)
    no_validate: bool = option(False, help="Skip proving the result (not recommended).")
    no_speed: bool = option(False, help="Skip timing the float and int8 models and measuring the int8 bound (the "
                            "precision census is still taken).")
    classifier_output: list[str] = option([], help="Output that is class scores, the only kind top-1 agreement is judged "
                                          "on (repeatable; default: decided from the graph and the output names).")
    no_classifier: bool = option(False, help="No output is class scores: top-1 is never judged.")
    goal: str = option("accuracy", help="accuracy: the defaults (repaired to --max-error); latency: try the INT8 forms "
                       "that can be fast on this CPU, keep the fastest that clears the bar.", choices=goal_search.GOALS)
    budget: float | None = option(None, help="--goal latency: seconds the search may take (default 300).", above=0)
    device: str = option("cpu", help="cpu or cuda, for validation.", choices=("cpu", "cuda"))
    seed: int = option(0, help="Seed for random inputs (recorded in the report).")
    force: bool = option(False, help="Replace an existing output.")


def run(options: Options, progress: ProgressFactory = no_progress) -> Report:
    """Quantize a model to INT8 and prove on data what accuracy it kept. Exit 1 when it did not keep enough."""
    check(options)
    o = options
    pass_kwargs = {
        "mode": o.mode, "calib_data": o.calib_data, "calib_method": o.calib_method, "calib_samples": o.calib_samples,
        "calib_batch": o.calib_batch, "per_channel": _switch(o.per_channel), "quant_format": o.quant_format,
        "activation_type": o.activation_type, "weight_type": o.weight_type, "reduce_range": _switch(o.reduce_range),
        "exclude": o.exclude, "exclude_op": o.exclude_op, "op_types": o.op_types, "skip_preprocess": o.no_preprocess,
        "int8_io": o.int8_io, "allow_float_fallback": o.allow_float_fallback, "signature": o.signature,
        "inputs": parse_specs(o.inputs), "target": o.target,
        "weights": o.weights, "block_size": o.block_size, "method": o.method, "symmetric": _switch(o.symmetric),
        "accuracy_level": o.accuracy_level,
    }
    weight_only_flags = [("--asymmetric" if k == "symmetric" and v == "off" else f"--{k.replace('_', '-')}")
                         for k in ("block_size", "method", "symmetric", "accuracy_level") if (v := pass_kwargs[k]) is not None]
    if o.weights is None and weight_only_flags:
        raise InputError(f"{', '.join(weight_only_flags)} only apply to weight-only quantization (--weights)",
                         hint="add --weights int4 (or int8)")
    ref = ModelRef.parse(o.src, o.src_format).with_load_options(pass_kwargs)
    out = Path(o.output)
    pass_cls = registry.pass_for("quantize" if o.weights is None else weight_only.VERB, ref.format)
    check_output(out, o.force)
    if out.resolve() == ref.path.resolve():
        raise InputError("the output would overwrite the input", hint="choose another output path")
    want = pass_cls.target.suffix
    if want and out.suffix != want:
        raise InputError(f"quantizing writes a {pass_cls.target.value} model here: name the output *{want}, not '{out.name}'")
    bar = parse_bar(o.max_error, allow_speed=True) if o.max_error is not None else None
    plan = Plan(ref, out, pass_cls, build_pass_options(pass_cls, chosen_options(pass_kwargs)), bar,
                o.eval_data or o.calib_data, o.labels, o.eval_samples, not o.no_validate, o.device, o.seed, progress,
                classifier_choice(o.classifier_output, o.no_classifier), o.goal, o.budget, speed=not o.no_speed,
                prompts=o.prompts)
    plan.check()
    with atomic_output(out, o.force) as tmp:
        return plan.execute(tmp)


def _switch(value: bool | None) -> str | None:
    return None if value is None else ("on" if value else "off")


@dataclass
class Plan:
    ref: ModelRef
    out: Path
    pass_cls: type
    options: Any
    bar: Bar | None
    data: str | None
    labels_path: str | None
    eval_samples: int | None
    validate: bool
    device: str
    seed: int
    progress: ProgressFactory
    classifier_outputs: tuple[str, ...] | None = None  # the outputs top-1 is judged on (None: decided per output)
    goal: str = "accuracy"
    budget: float | None = None
    speed: bool = True  # time float vs int8 against the int8 bound (--no-speed: off)
    prompts: str | None = None  # a language model folder's proof by generation (None: data's input_ids, or built-in)
    prompt_ids: list = field(default_factory=list)  # ...read by check()

    def check(self) -> None:
        """Everything that can be checked before any work."""
        if self.device not in ("cpu", "cuda"):
            raise InputError(f"unknown device '{self.device}'", hint="choose cpu or cuda")
        if self.labels_path and not Path(self.labels_path).is_file():
            raise InputError(f"labels file not found: {self.labels_path}")
        if self.data and not Path(self.data).exists():
            raise InputError(f"data not found: {self.data}")
        if self.bar and not self.validate:
            raise InputError("--max-error needs validation; drop --no-validate")
        if self.bar and self.bar.speed_criteria and not self.speed:
            raise InputError("--max-error speedup needs the timing --no-speed skips", hint="drop --no-speed")
        if self.goal == "latency":
            goal_search.check(self.pass_cls, self.options, self.validate)
        if self.pass_cls.target == Format.GENAI and self.validate:  # the prompts are read (and refused) before any work
            from mdeploy.quantization import genai_weights

            self.prompt_ids = genai_weights.proof_prompts(self.ref, self.prompts, self.data)
        elif self.prompts:
            raise InputError("--prompts is for the proof by generation of a language model folder",
                             hint="give --eval-data to prove this model on tensors")
        if self.bar and self.bar.needs_labels and not (self.labels_path or (self.data and self._has_labels())):
            raise InputError(
                "--max-error on accuracy needs labels",
                hint="give --labels y.npy, or a `labels` array in the --eval-data / --calib-data .npz",
            )

    def _has_labels(self) -> bool:
        return Path(self.data).suffix == ".npz" and "labels" in vinputs.load_arrays(Path(self.data), mmap=True)

    def execute(self, tmp: Path) -> Report:
        quantizer = self.pass_cls()
        quantizer.progress = self.progress
        report = Report(
            command="quantize",
            data={
                "source": self.ref.name,
                "output": str(self.out),
                "format": self.pass_cls.target.value,
                "quantizer": self.pass_cls.name,
            },
        )
        start = time.perf_counter()
        result = quantizer.run(self.ref, tmp, self.options)
        report.steps.append(Step("quantize", "done", dict(result.details), time.perf_counter() - start))
        report.notes.extend(result.notes)
        report.data["mode"] = result.details.get("mode")
        before = size_of(self.ref.path)
        if self.pass_cls.target == Format.GENAI:  # a language model folder: proved by generation, not on tensors
            from mdeploy.quantization import genai_weights

            if self.validate:
                genai_weights.prove(self.ref, tmp, self.options.weights, self.bar, report, self.prompt_ids)
            report.data["size"] = _sizes(before, size_of(tmp))
            return report
        if not self.validate:
            report.data["size"] = _sizes(before, size_of(tmp))
            report.notes.append("not validated (--no-validate): nothing proves what the quantized model kept")
            self._runtime(tmp, None, report)
            return report
        try:
            cand_runner_cls = registry.runner_for(self.pass_cls.target)
        except InputError as exc:
            report.data["size"] = _sizes(before, size_of(tmp))
            report.steps.append(Step("validate", "skipped", {"reason": exc.message}))
            report.notes.append(f"not validated: {exc.message}")
            return report
        ref_runner = registry.open_runner(self.ref, self.device)
        feeds, labels, source = self._feeds(ref_runner, report)
        tolerance = bar_tolerance(self.bar, tolerance_for(getattr(self.options, "weights", "int8")), self.classifier_outputs)

        def evaluate(path: Path) -> Proof:
            cand = cand_runner_cls(ModelRef(path, self.pass_cls.target), device=self.device)
            with self.progress("validating", len(feeds)) as advance:
                return prove(ref_runner, cand, feeds, tolerance, labels, label=f"{getattr(self.options, 'weights', 'int8')} vs float on {source}", progress=advance)

        start = time.perf_counter()
        try:
            proof = evaluate(tmp)
        except MdeployError as exc:
            if self.pass_cls.target == Format.ONNX:
                raise
            # e.g. a TFLite model with int8 inputs: float data cannot be fed to it as it is
            report.steps.append(Step("validate", "skipped", {"reason": exc.message}))
            report.notes.append(f"not validated: the quantized model cannot run on the float model's inputs ({exc.message})")
            report.data["size"] = _sizes(before, size_of(tmp))
            return report
        validated = Step(
            "validate", "passed", {"data": source, "inputs_sha256": vinputs.feeds_hash(feeds)}, time.perf_counter() - start
        )
        report.steps.append(validated)
        if self.goal == "latency":
            proof, self.options = goal_search.search(goal_search.Setup(
                quantizer, self.ref, self.options, tmp, result, proof, evaluate, feeds, self.bar, self.budget, self.progress
            ), report)
            if report.data["goal"]["repaired"]:  # no form cleared the bar: repair the closest, as without the search
                proof = self._meet_bar(quantizer, tmp, proof, evaluate, feeds, report)
                report.data["goal"]["recommendation"] = "int8" if report.data["max_error"]["met"] else "float"
        elif self.bar:
            proof = self._meet_bar(quantizer, tmp, proof, evaluate, feeds, report)
        validated.status = "passed" if proof.comparison else "failed"  # of the model written, after any repair
        report.comparisons.append(proof.comparison)
        if proof.accuracy:
            report.data["accuracy"] = proof.accuracy.to_dict()
        report.data["size"] = _sizes(before, size_of(tmp))
        # the proof's float session goes before the speed check opens its own: a >2 GB model was held twice (2.5x)
        del ref_runner, evaluate
        self._runtime(tmp, feeds[0], report)
        return report

    def _runtime(self, tmp: Path, feed: dict | None, report: Report) -> None:
        """The census of what onnxruntime runs, and (unless --no-speed) the speed against the int8 bound."""
        if self.pass_cls.target == Format.ONNX:
            runtime_report.add(report, self.ref.path, tmp, feed, self.options, self.bar, self.speed)

    def _feeds(self, runner: Any, report: Report) -> tuple[list[dict], np.ndarray | None, str]:
        specs = runner.input_specs()
        labels = None
        if self.data:
            arrays = vinputs.load_arrays(Path(self.data), mmap=True)
            labels = arrays.pop("labels", None)
            feeds = batches_from_data(arrays, specs, EVAL_BATCH)
            report.notes.extend(f"proof {note}" for note in feeds.notes if note not in report.notes)
            source = self.data
        else:
            feeds, source = random_feeds(specs, self.seed, self.eval_samples or RANDOM_SAMPLES, fixed_batch(specs) or 1)
            report.notes.append(
                "validated on random inputs: give --eval-data (or --calib-data) with real inputs for a real proof"
            )
        if self.labels_path:
            labels = vinputs.read_labels(self.labels_path)
        if labels is not None:
            labels = vinputs.class_ids(labels)
            if not self.data:
                raise InputError("--labels needs the data they label", hint="give --eval-data or --calib-data")
        return feeds, labels, source

    def _meet_bar(self, quantizer: Any, tmp: Path, proof: Proof, evaluate: Any, feeds: list[dict], report: Report) -> Proof:
        assert self.bar is not None
        verdict = self.bar.judge(proof)
        info: dict[str, Any] = {}
        if not verdict.met and self.pass_cls.target != Format.ONNX:
            report.notes.append("accuracy-aware repair works on ONNX models only; the bar is not met")
        elif not verdict.met:
            from mdeploy.validation.layerwise import compare_layers

            layer_feeds = _first_samples(feeds, LAYERWISE_SAMPLES)
            with repair.workspace() as work:
                found = repair.repair(
                    run_pass=lambda opts, path: quantizer.run(self.ref, path, opts),
                    options=self.options,
                    first=tmp,
                    first_proof=proof,
                    bar=self.bar,
                    evaluate=evaluate,
                    layerwise=lambda path: compare_layers(self.ref.path, path, layer_feeds, proof.comparison.tolerance),
                    producers=lambda: quantizer.producers,
                    workdir=Path(work),
                )
                repair.install(found.best_path, tmp)
            proof = found.best_proof
            verdict = self.bar.judge(proof)
            info.update(
                met=found.met,
                rounds=[r.to_dict() for r in found.rounds],
                kept_in_float=[s.to_dict() for s in found.kept_in_float],
                exclude_args=found.exclude_args,
            )
            if found.kept_in_float:
                report.notes.append(
                    f"kept {sum(len(s.nodes) for s in found.kept_in_float)} nodes in float to meet {self.bar}; "
                    f"to reuse: {found.exclude_args}"
                )
            if not found.met:
                report.notes.append(
                    f"the bar {self.bar} could not be met; wrote the best model found ({'; '.join(verdict.missed)})"
                )
        # the verdict's record first (bar, met, missed: one shape for quantize, prune and distill), then the repair's
        report.data["max_error"] = {**verdict.to_dict(), **info}
        report.steps.append(verdict.step())
        return proof


def _first_samples(feeds: list[dict], n: int) -> list[dict]:
    out, seen = [], 0
    for feed in feeds:
        if seen >= n:
            break
        out.append(feed)
        seen += next(iter(feed.values())).shape[0] if feed else 1
    return out


def _sizes(before: int, after: int) -> dict[str, Any]:
    return {"before_bytes": before, "after_bytes": after, "ratio": after / before if before else None}
