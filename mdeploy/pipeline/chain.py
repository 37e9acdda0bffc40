"""The artifact chain of a pipeline: per step verb, which model it reads, what it writes, with what suffix, and
which pair of models it compares. One row per step verb; the plan (spec.py, steps.py) and the run (execute.py,
model_run.py) both read these rows, so adding a step verb is one row here plus the verb's own module
(mdeploy/verbs/<verb>.py with its Options and run): see docs/ci.md, "Adding a step verb".

The chain, as the rows say it: convert writes the baseline (the first artifact); quantize reads the previous
artifact (and, with no convert before it, makes the source the baseline); validate compares the current artifact with
the baseline (or the baseline with the source it was made from); benchmark measures both side by side; package
wraps the current artifact into a folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mdeploy.core import Format, ModelRef
from mdeploy.errors import MdeployError

CURRENT, REFERENCE, MEASURED = "current", "reference", "measured"  # which model(s) a read option names
ARTIFACT, FOLDER = "artifact", "folder"  # what a step writes: the next step's model, or a folder that ends the chain
NEEDS_FILE, NEEDS_ARTIFACT = "file", "artifact"  # a model file (not code) to read; a model an earlier step wrote
ALL_MODEL_OPTIONS = ("*",)
DEFAULT_TARGET = Format.ONNX.value


@dataclass(frozen=True)
class Role:
    """What one step verb does in the chain."""

    verb: str
    reads: dict[str, str]  # option -> CURRENT (the last artifact), REFERENCE (what CURRENT is compared with), MEASURED
    writes: str | None = None  # ARTIFACT, FOLDER, or nothing (its report only)
    target_option: str | None = None  # the option naming the format it writes (default onnx); None: from its input
    needs: str | None = None  # NEEDS_FILE, NEEDS_ARTIFACT: what must come before it, else the plan fails
    baseline_is_input: bool = False  # the first artifact step: its input (not its output) is the baseline
    model_options: tuple[str, ...] = ()  # the model entry's values it takes when it reads the source (* = always, all)
    compares: tuple[str, str] | None = None  # the options naming the reference and the candidate of its comparisons
    precision: str | None = None  # the precision of what it writes, which a later comparison of it uses
    precision_from: str | None = None  # the option that, when given, says that precision instead (weights: int4)
    precision_option: str | None = None  # the option a comparison's precision goes to
    report_option: str | None = None  # an option that writes the step's report elsewhere (the run folder holds it)
    measures: bool = False  # its report's `models` rows are the model's benchmark rows
    cached: bool = True  # False: always runs (package: its folder is not kept; a smoke test is a fact of now)

    def written_precision(self, options: dict[str, Any]) -> str | None:
        """The precision of what this step writes, with these options (quantize: int8, or its `weights`)."""
        return (options.get(self.precision_from) if self.precision_from else None) or self.precision

    def suffix(self, options: dict[str, Any], current: str) -> str | None:
        """The suffix of what it writes, reading the model `current`; None when its target is no format it can write.
        A folder has none; with no target option, the output's format follows the input's: quantize writes ONNX
        from ONNX, TFLite from a TensorFlow model, and an onnxruntime-genai folder from one with `weights`
        (the passes' targets, quantization/*.py)."""
        if self.writes == FOLDER:
            return ""
        if self.target_option:
            fmt = self.target(options)
            return Format(fmt).suffix if fmt in WRITABLE else None
        if current.endswith(Format.ONNX.suffix):
            return Format.ONNX.suffix
        # weight-only quantization of a folder: an onnxruntime-genai folder in, one out (quantization/genai_weights.py)
        return "" if options.get("weights") else Format.TFLITE.suffix

    def target(self, options: dict[str, Any], current: str | None = None) -> str:
        """The format named by its target option; when the option is not given, onnxruntime-genai for a Hugging Face
        language model folder `current` (the one format it converts to) and onnx for anything else."""
        given = options.get(self.target_option) if self.target_option else None
        return given or (Format.GENAI.value if current and _is_language_model(current) else DEFAULT_TARGET)

    @property
    def plan_set(self) -> frozenset[str]:
        """Options the plan sets itself: the chain (which model a step reads, where it writes) and the step's own
        report belong to the run folder, so a pipeline file cannot set them."""
        written = {"output", "force"} if self.writes else set()
        return frozenset({*self.reads, *written, *([self.report_option] if self.report_option else [])})


def _is_language_model(path: str) -> bool:
    try:
        return ModelRef.parse(path).format is Format.HF_MODEL
    except MdeployError:
        return False


ROLES: dict[str, Role] = {role.verb: role for role in (
    Role("convert", {"src": CURRENT}, writes=ARTIFACT, target_option="dst_format", model_options=ALL_MODEL_OPTIONS,
         compares=("src", "output"), precision_from="precision"),
    Role("quantize", {"src": CURRENT}, writes=ARTIFACT, needs=NEEDS_FILE, baseline_is_input=True,
         compares=("src", "output"), precision="int8", precision_from="weights"),
    Role("validate", {"reference": REFERENCE, "candidate": CURRENT}, needs=NEEDS_ARTIFACT,
         model_options=("inputs", "weights"), compares=("reference", "candidate"), precision_option="precision",
         report_option="report"),
    Role("benchmark", {"models": MEASURED}, model_options=("inputs",), measures=True),
    Role("package", {"model": CURRENT}, writes=FOLDER, needs=NEEDS_FILE, compares=("model", "output"),
         cached=False),
)}

STEP_VERBS = tuple(ROLES)
ARTIFACT_VERBS = tuple(verb for verb, role in ROLES.items() if role.writes == ARTIFACT)
PLAN_SET: dict[str, frozenset[str]] = {verb: role.plan_set for verb, role in ROLES.items()}
# what convert's `to:` may name (code and Hugging Face folders are sources only)
WRITABLE = tuple(f.value for f in Format if f not in (Format.PYTORCH_MODULE, Format.HF_MODEL))
# Options whose value is a data file the user names: a `data:` name, or a path relative to the pipeline file.
DATA_OPTIONS = ("calib_data", "eval_data", "labels", "data", "weights", "prompts", "text")  # in this order in reports
# and manifests (prompts, text: validate's proof by generation of a language model)
# Options named like a data option that are no file in one verb: quantize's `weights` is a bit width (int4 | int8).
NOT_FILES: dict[str, frozenset[str]] = {"quantize": frozenset({"weights"})}


def data_options(verb: str) -> tuple[str, ...]:
    """The data options of one step verb (DATA_OPTIONS less what names no file there)."""
    return tuple(f for f in DATA_OPTIONS if f not in NOT_FILES.get(verb, ()))


# Every option whose value names files (in a step's cache key they stand for the files' content, not their paths).
PATH_OPTIONS = frozenset(DATA_OPTIONS) | frozenset(option for role in ROLES.values() for option in role.reads)


@dataclass(frozen=True)
class Link:
    """A read option's value from the chain, why (for --dry-run and the manifest), and whether it is the model's
    source itself (then the model entry's `inputs`/`weights` go with it)."""

    value: Any
    why: str
    source: bool = False


def links(role: Role, source: str, artifacts: list[tuple[str, str]]) -> dict[str, Link]:
    """The models `role` reads, given the model's source and the artifacts so far as (path, the step that wrote it,
    or "source" for a source made the baseline). Raises nothing: what must come before a step is checked by the plan."""
    out: dict[str, Link] = {}
    current = artifacts[-1][0] if artifacts else source
    by = artifacts[-1][1] if artifacts else "source"
    current_why = "plan (the model's source)" if by == "source" else f"plan (the output of {by})"
    for option, which in role.reads.items():
        if which == CURRENT:
            out[option] = Link(current, current_why, source=not artifacts)
        elif which == REFERENCE:  # the baseline; the source it was made from when the current model is the baseline
            if len(artifacts) <= 1:
                out[option] = Link(source, "plan (the model's source)", source=True)
            else:
                baseline, step = artifacts[0]
                out[option] = Link(baseline, f"plan (the baseline: the output of {step})" if step != "source"
                                   else "plan (the baseline: the model's source)")
        elif which == MEASURED:
            if not artifacts:
                out[option] = Link([current], "plan (the model's source)", source=True)
            elif artifacts[0][0] == current:
                out[option] = Link([current], f"plan (the baseline: the output of {artifacts[0][1]})")
            else:
                out[option] = Link([artifacts[0][0], current], f"plan (the baseline, then the output of {by}; "
                                   "ratios are against the baseline)")
    return out


__all__ = [
    "ALL_MODEL_OPTIONS",
    "ARTIFACT",
    "ARTIFACT_VERBS",
    "DATA_OPTIONS",
    "FOLDER",
    "NOT_FILES",
    "PATH_OPTIONS",
    "PLAN_SET",
    "ROLES",
    "STEP_VERBS",
    "WRITABLE",
    "Link",
    "Role",
    "data_options",
    "links",
]
