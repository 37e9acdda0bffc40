"""`mdeploy quantize` from start to proof: run the pass, validate the result on data, repair it to a bar.

Kept apart from api.py so that the verb's function stays a short list of checks; everything here works on
paths and numpy arrays and on whatever pass and runners the registry provides for the formats involved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mdeploy import registry
from mdeploy.core import Format, ModelRef, tolerance_for
from mdeploy.errors import InputError, MdeployError
from mdeploy.passes import accuracy
from mdeploy.passes.accuracy import Bar, parse_bar
from mdeploy.passes.calibration import batches_from_data, fixed_batch, load_arrays
from mdeploy.progress import ProgressFactory
from mdeploy.reports.report import Report, Step
from mdeploy.validation import inputs as vinputs
from mdeploy.validation.proof import Proof, prove

SUFFIXES = {Format.ONNX: ".onnx", Format.TFLITE: ".tflite"}
EVAL_BATCH = 64
RANDOM_SAMPLES = 16
LAYERWISE_SAMPLES = 64  # enough to rank layers by the error they add

__all__ = ["Plan", "check_output_suffix", "parse_bar", "size_of"]


def check_output_suffix(out: Path, pass_cls: type) -> None:
    want = SUFFIXES.get(pass_cls.target)
    if want and out.suffix != want:
        raise InputError(f"quantizing writes a {pass_cls.target.value} model here: name the output *{want}, not '{out.name}'")


def size_of(path: Path) -> int:
    """Bytes on disk: a file and its external data, or every file of a folder (SavedModel)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    total = path.stat().st_size
    try:
        from mdeploy.frameworks import onnx_models

        if path.suffix == ".onnx":
            total += sum((path.parent / f).stat().st_size for f in onnx_models.external_data_files(onnx_models.load_proto(path)))
    except MdeployError:
        pass
    return total


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
        if self.bar and self.bar.needs_labels and not (self.labels_path or (self.data and self._has_labels())):
            raise InputError(
                "--max-error on accuracy needs labels",
                hint="give --labels y.npy, or a `labels` array in the --eval-data / --calib-data .npz",
            )

    def _has_labels(self) -> bool:
        return Path(self.data).suffix == ".npz" and "labels" in load_arrays(Path(self.data))

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
        if not self.validate:
            report.data["size"] = _sizes(before, size_of(tmp))
            report.notes.append("not validated (--no-validate): nothing proves what the quantized model kept")
            return report
        try:
            cand_runner_cls = registry.runner_for(self.pass_cls.target)
        except InputError as exc:
            report.data["size"] = _sizes(before, size_of(tmp))
            report.steps.append(Step("validate", "skipped", {"reason": exc.message}))
            report.notes.append(f"not validated: {exc.message}")
            return report
        from mdeploy.api import open_runner

        ref_runner = open_runner(self.ref, self.device)
        feeds, labels, source = self._feeds(ref_runner, report)
        tolerance = replace(self.bar.tolerance() if self.bar else tolerance_for("int8"), classifier_outputs=self.classifier_outputs)

        def evaluate(path: Path) -> Proof:
            cand = cand_runner_cls(ModelRef(path, self.pass_cls.target), device=self.device)
            with self.progress("validating", len(feeds)) as advance:
                return prove(ref_runner, cand, feeds, tolerance, labels, label=f"int8 vs float on {source}", progress=advance)

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
        if self.bar:
            proof = self._meet_bar(quantizer, tmp, proof, evaluate, feeds, report)
        validated.status = "passed" if proof.comparison else "failed"  # of the model written, after any repair
        report.comparisons.append(proof.comparison)
        if proof.accuracy:
            report.data["accuracy"] = proof.accuracy.to_dict()
        report.data["size"] = _sizes(before, size_of(tmp))
        return report

    def _feeds(self, runner: Any, report: Report) -> tuple[list[dict], np.ndarray | None, str]:
        specs = runner.input_specs()
        labels = None
        if self.data:
            arrays = load_arrays(Path(self.data))
            labels = arrays.pop("labels", None)
            feeds = batches_from_data(arrays, specs, EVAL_BATCH)
            source = self.data
        else:
            rng = np.random.default_rng(self.seed)
            n = self.eval_samples or RANDOM_SAMPLES
            step = fixed_batch(specs) or 1
            feeds = [vinputs.random_feed(specs, rng, batch=step) for _ in range(max(1, n // step))]
            source = f"{len(feeds) * step} random samples"
            report.notes.append(
                "validated on random inputs: give --eval-data (or --calib-data) with real inputs for a real proof"
            )
        if self.labels_path:
            try:
                labels = np.load(self.labels_path, allow_pickle=False)
            except (ValueError, OSError) as exc:
                raise InputError(f"cannot read labels {self.labels_path}: {exc}") from None
        if labels is not None:
            labels = np.asarray(labels)
            if labels.ndim != 1 or labels.dtype.kind not in "iu":
                raise InputError(f"labels must be a 1-D integer array (class ids), got {labels.dtype} {list(labels.shape)}")
            if not self.data:
                raise InputError("--labels needs the data they label", hint="give --eval-data or --calib-data")
        return feeds, labels, source

    def _meet_bar(self, quantizer: Any, tmp: Path, proof: Proof, evaluate: Any, feeds: list[dict], report: Report) -> Proof:
        assert self.bar is not None
        margin, missed = self.bar.check(proof)
        info: dict[str, Any] = {"bar": str(self.bar), "met": margin >= 0}
        if margin < 0 and self.pass_cls.target != Format.ONNX:
            report.notes.append("accuracy-aware repair works on ONNX models only; the bar is not met")
        elif margin < 0:
            from mdeploy.validation.layerwise import compare_layers

            layer_feeds = _first_samples(feeds, LAYERWISE_SAMPLES)
            with accuracy.workspace() as work:
                found = accuracy.repair(
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
                accuracy.install(found.best_path, tmp)
            proof = found.best_proof
            _, missed = self.bar.check(proof)
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
                report.notes.append(f"the bar {self.bar} could not be met; wrote the best model found ({'; '.join(missed)})")
        report.data["max_error"] = info
        report.steps.append(
            Step(f"max-error {self.bar}", "passed" if info["met"] else "failed", {"missed": missed} if missed else {})
        )
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
