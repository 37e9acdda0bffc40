"""Each step's options for one model: the artifact chain's values (chain.py's rows), the values the pipeline file
gives (a `data:` name or a path relative to the file, checked against the option's type), the model entry's values,
and the verb's defaults, each with where it came from (for `--dry-run` and the manifest)."""

from __future__ import annotations

from dataclasses import MISSING
from pathlib import Path
from typing import Any

from mdeploy.core import ModelRef
from mdeploy.errors import InputError, shown
from mdeploy.pipeline.chain import (
    ALL_MODEL_OPTIONS,
    ARTIFACT,
    ARTIFACT_VERBS,
    NEEDS_ARTIFACT,
    NEEDS_FILE,
    ROLES,
    WRITABLE,
    data_options,
    links,
)
from mdeploy.pipeline.plan import PlannedModel, PlannedStep
from mdeploy.pipeline.schema import options_keys, options_type
from mdeploy.pipeline.yaml_file import Doc
from mdeploy.pipeline.yaml_file import join as _join
from mdeploy.pipeline.yaml_file import suggest as _suggest


class StepSpec:
    """One entry of `steps:` as written: the verb, its given options (field -> (info, value node, keypath)) and where."""

    def __init__(self, index: int, verb: str, node: Any, given: dict[str, tuple[Any, Any, str]]) -> None:
        self.index, self.verb, self.node, self.given = index, verb, node, given


def plan_steps(doc: Doc, model: PlannedModel, model_given: dict[str, tuple[Any, str]], steps: list[StepSpec],
               data: dict[str, tuple[Path, str]]) -> None:
    """Append each step, its options resolved for this model, to `model.steps`; fail with `file:line:col` for what
    the chain cannot do (a step that needs a model file or an artifact before it) or the verb's own checks refuse."""
    from mdeploy.verbs.options import check, describe

    source_is_code = ModelRef.code_parts(model.source) is not None
    artifacts: list[tuple[str, str]] = []  # (path, the step that wrote it, or "source")
    precision_of: dict[str, str] = {}  # artifact step -> the precision of what it wrote
    for spec in steps:
        role = ROLES[spec.verb]
        name = f"{spec.index + 1:02d}-{spec.verb}"
        keypath = _join(_join("steps", spec.index), spec.verb)
        values, sources = _given(doc, spec, data)

        def plan(field: str, value: Any, why: str = "plan", values: dict[str, Any] = values,
                 sources: dict[str, str] = sources) -> None:
            values[field] = value
            sources[field] = why

        if role.needs == NEEDS_FILE and source_is_code and not artifacts:
            doc.fail(spec.node, keypath, f"needs a model file to {spec.verb}, and this model's source is Python code",
                     hint="put a `convert: {to: onnx}` step before it")
        if role.needs == NEEDS_ARTIFACT and not artifacts:
            doc.fail(spec.node, keypath, f"has nothing to {spec.verb}: no step before it writes a model",
                     hint=f"put a {' or '.join(ARTIFACT_VERBS)} step before it")
        if role.model_options == ALL_MODEL_OPTIONS:
            for field, (value, why) in model_given.items():
                if field not in values:
                    plan(field, value, why)
        if role.target_option:  # the format it writes
            key = options_keys(spec.verb)[role.target_option]
            if role.target_option not in values:
                reads = artifacts[-1][0] if artifacts else model.source
                target = role.target(values, reads)
                plan(role.target_option, target, f"plan ({spec.verb}'s target; default {target})")
            if role.suffix(values, "") is None:
                doc.fail(spec.node, f"{keypath}.{key}", f"expected {'|'.join(WRITABLE)}, got {shown(role.target(values))}")
        if role.baseline_is_input and not artifacts:
            artifacts.append((model.source, "source"))
        current = artifacts[-1][0] if artifacts else model.source
        for option, link in links(role, model.source, artifacts).items():
            plan(option, link.value, link.why)
            if link.source and role.model_options != ALL_MODEL_OPTIONS:
                for field in role.model_options:  # a file knows its own inputs; code is told them
                    if field not in values and field in model_given and (field != "inputs" or source_is_code):
                        plan(field, *model_given[field])
        if role.precision_option and artifacts and precision_of.get(artifacts[-1][1]) \
                and role.precision_option not in values:
            by = artifacts[-1][1]
            plan(role.precision_option, precision_of[by], f"plan (the candidate is {by}'s {precision_of[by].upper()} model)")
        if role.report_option:
            plan(role.report_option, None, "plan (the step's report is written to the run folder)")
        output: Path | None = None
        if role.writes:
            output = model.folder / f"{name}{role.suffix(values, current)}"
            plan("output", str(output), "plan (the run folder)")
            plan("force", True, "plan (the run folder is mdeploy's own; the step cache decides what re-runs)" if role.cached
                 else f"plan (the run folder is mdeploy's own; a {spec.verb} step always runs)")
        if role.writes == ARTIFACT:
            artifacts.append((str(output), name))
            if role.written_precision(values):
                precision_of[name] = role.written_precision(values)

        options = options_type(spec.verb)
        for info in describe(options):
            if info.name not in values:
                if info.default is MISSING:
                    doc.fail(spec.node, keypath, f"{info.key}: missing")
                values[info.name] = info.default
                sources[info.name] = "default"
        order = [i.name for i in describe(options)]
        values = {k: values[k] for k in order}
        sources = {k: sources[k] for k in order}
        try:
            check(options(**values))
        except InputError as exc:  # a combination only the verb's own checks see
            doc.fail(spec.node, keypath, exc.message, exc.hint)
        model.steps.append(PlannedStep(index=spec.index, verb=spec.verb, options=values, sources=sources, output=output,
                                       report=model.folder / f"{name}.json",
                                       where=doc.source(spec.node, _join("steps", spec.index))))


def _given(doc: Doc, spec: StepSpec, data: dict[str, tuple[Path, str]]) -> tuple[dict[str, Any], dict[str, str]]:
    """The file's values for one step (checked against the option's type), a data option's `data:` name or relative
    path resolved: (field -> value, field -> where it was written)."""
    from mdeploy.verbs.options import check_value

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for field, (info, value_node, where) in spec.given.items():
        raw = doc.value(value_node)
        if field in data_options(spec.verb) and isinstance(raw, str) and raw in data:
            path, written = data[raw]
            values[field] = str(path)
            sources[field] = f"data.{raw} ({written}; named at {doc.source(value_node, where)})"
            continue
        value = check_value(info, raw, f"{doc.at(value_node)}: {where}")
        if field in data_options(spec.verb) and isinstance(value, str):
            path = doc.file(value)
            if not path.exists():
                hint = ("data names: " + ", ".join(data)) if data else "paths are relative to the pipeline file's folder"
                doc.fail(value_node, where, f"file not found: {path}" + _suggest(value, data), hint=hint)
            value = str(path)
        values[field] = value
        sources[field] = doc.source(value_node, where)
    return values, sources


__all__ = ["StepSpec", "plan_steps"]
