"""The pipeline file (`mdeploy run pipeline.yaml`): read it, check every key and value, and resolve it into a Plan.

Checking happens here, before anything runs, so that a typo costs a second and not a half-finished CI job. The file
is read with `yaml.compose` within limits (pipeline/yaml_file.py), which keeps the line and column of every node: an
error names `file:line:col` and the
key path (`pipeline.yaml:12:7: steps[2].quantize.mode: expected auto|dynamic|static, got 'fast'`), and an unknown
key suggests the nearest known one. A step's options are the verb's own options type (mdeploy/verbs/<verb>.py), so
the names and checks are those of the CLI flags, and every resolved value records where it came from (the file, a
`data:` name, the model entry, the plan itself, or the verb's default) for `--dry-run` and the manifest.
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import MISSING, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from mdeploy.errors import InputError, OutputExistsError, shown
from mdeploy.pipeline import gates as gating
from mdeploy.pipeline.plan import VERSION, Gate, Plan, PlannedModel, PlannedStep
from mdeploy.pipeline.yaml_file import Doc
from mdeploy.pipeline.yaml_file import join as _join
from mdeploy.pipeline.yaml_file import suggest as _suggest

STEP_VERBS = ("convert", "quantize", "validate", "benchmark", "package")
# Options the plan sets itself: the artifact chain (which model a step reads and where it writes) and the step's own
# report belong to the run folder, so a pipeline file cannot set them.
PLAN_SET: dict[str, frozenset[str]] = {
    "convert": frozenset({"src", "output", "force"}),
    "quantize": frozenset({"src", "output", "force"}),
    "validate": frozenset({"reference", "candidate", "report"}),
    "benchmark": frozenset({"models"}),
    "package": frozenset({"model", "output", "force"}),
}
# Short names a pipeline file may use for a verb's option (`quantize: {calib: calib}`), key -> the option's key.
ALIASES: dict[str, dict[str, str]] = {
    "quantize": {"calib": "calib-data", "eval": "eval-data"},
}
# Options whose value is a file: a `data:` name, or a path relative to the pipeline file.
PATH_OPTIONS = frozenset({"calib_data", "eval_data", "labels", "data", "weights"})
# What a gate can measure: the executor's gates module evaluates them (one list, one parser).
GATE_METRICS: dict[str, str] = {metric: what for metric, (what, _) in gating.METRICS.items()}
TOP_KEYS = ("version", "name", "models", "data", "steps", "gates")
MODEL_KEYS = ("name", "source", "inputs", "dynamic", "weights", "from")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_EXT = {"onnx": ".onnx", "tflite": ".tflite", "savedmodel": "", "keras": ".keras", "torchscript": ".pt",
        "pytorch-exported": ".pt2", "tensorrt": ".engine"}
_FACTORY = re.compile(r"^(?P<target>.+\.py):(?P<attr>[A-Za-z_]\w*)$")


def load(path: str | Path, out: str | Path | None = None, force: bool = False, now: datetime | None = None) -> Plan:
    """The checked, resolved plan of the pipeline file at `path`. `out`: the run folder (default
    `mdeploy-runs/<pipeline>-<timestamp>`); an existing folder that is not a run folder is only used with `force`.
    Raises InputError (exit 2) naming `file:line:col` and the key path for anything wrong in the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"pipeline file not found: {path}", hint="give the path of a pipeline .yaml file")
    doc = Doc(path)
    root = doc.root()
    items = doc.mapping(root, "", TOP_KEYS)

    if "version" not in items:
        raise InputError(f"{doc.at(root)}: version: missing", hint=f"start the file with `version: {VERSION}`")
    node = items["version"][1]
    version = doc.value(node)
    if version != VERSION:
        doc.fail(node, "version", f"expected {VERSION}, got {shown(version)}",
                 hint=f"this mdeploy reads pipeline files of version {VERSION}")

    name = path.stem
    if "name" in items:
        name = _name(doc, items["name"][1], "name")
    data = _data(doc, items.get("data"))
    for required in ("models", "steps"):
        if required not in items:
            raise InputError(f"{doc.at(root)}: {required}: missing", hint="see docs/ci.md for the pipeline file format")
    run_dir = Path(out) if out is not None else Path("mdeploy-runs") / f"{name}-{(now or datetime.now()):%Y%m%d-%H%M%S}"
    models = _models(doc, items["models"][1], run_dir)
    _check_run_dir(run_dir, [m.name for m, _ in models], force)
    steps = _steps(doc, items["steps"][1])
    gates = _gates(doc, items["gates"][1]) if "gates" in items else []
    for model, model_given in models:
        _plan_steps(doc, model, model_given, steps, data)
    return Plan(pipeline=path, run_dir=run_dir, data={k: v for k, (v, _) in data.items()}, models=[m for m, _ in models],
                gates=gates)


def list_jobs(plan: Plan) -> dict[str, Any]:
    """One job per model, as GitHub Actions' `strategy.matrix` takes it through `fromJSON` ({"include": [...]})."""
    return {"include": [{"job": m.name} for m in plan.models]}


def schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of the whole pipeline file, built from the verbs' options types."""
    from mdeploy.verbs.options import json_schema

    step_kinds = []
    for verb in STEP_VERBS:
        options = json_schema(_options_type(verb), f"{verb} step options", exclude=PLAN_SET[verb], aliases=ALIASES.get(verb))
        step_kinds.append({"type": "object", "title": f"{verb} step",
                           "properties": {verb: {"anyOf": [options, {"type": "null"}]}},
                           "required": [verb], "additionalProperties": False})
    shape = {"anyOf": [{"type": "string", "description": "SHAPE[:DTYPE], e.g. 1x3x224x224 or 1x128:int64"},
                       {"type": "array", "items": {"type": "integer"}}]}
    model = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "pattern": _NAME.pattern,
                     "description": "Job and folder name (default: the source's stem)."},
            "source": {"type": "string", "description": "Model file, SavedModel folder, FILE.py:FACTORY or pkg.module:FACTORY "
                                                        "(relative to the pipeline file)."},
            "inputs": {"type": "object", "additionalProperties": shape, "description": "Input shapes for convert's --input."},
            "dynamic": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
                        "description": "NAME:AXIS[:DIMNAME] axes kept dynamic (convert's --dynamic)."},
            "weights": {"type": "string", "description": "state_dict for a FILE.py:FACTORY source (convert's --weights)."},
            "from": {"type": "string", "description": "Source format, when its name does not tell (convert's --from)."},
        },
        "required": ["source"],
        "additionalProperties": False,
    }
    gate = {"type": "string", "pattern": r"^\s*(" + "|".join(map(re.escape, GATE_METRICS)) + r")\s*(<=|>=)\s*\S+\s*$",
            "description": "METRIC <= BAR or METRIC >= BAR; metrics: " + ", ".join(GATE_METRICS)}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "mdeploy pipeline file",
        "type": "object",
        "properties": {
            "version": {"const": VERSION},
            "name": {"type": "string", "pattern": _NAME.pattern, "description": "Run folder prefix (default: the file's stem)."},
            "models": {"anyOf": [model, {"type": "array", "items": model, "minItems": 1}]},
            "data": {"type": "object", "additionalProperties": {"type": "string"},
                     "description": "Named data files (relative to the pipeline file), usable as the value of a step's "
                                    "path options."},
            "steps": {"type": "array", "items": {"oneOf": step_kinds}, "minItems": 1},
            "gates": {"type": "array", "items": gate},
        },
        "required": ["version", "models", "steps"],
        "additionalProperties": False,
    }


# --- reading the file ---------------------------------------------------------------------------------------------


def _name(doc: Doc, node: Any, keypath: str) -> str:
    value = doc.string(node, keypath)
    if not _NAME.match(value):
        doc.fail(node, keypath, f"expected a name of letters, digits, '.', '_' or '-', got {shown(value)}")
    return value


def _resolve(doc: Doc, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else doc.base / path


def _display_path(path: Path) -> Path:
    """A resolved path, relative to the working folder when it lies under it (shorter plans and reports)."""
    path = Path(os.path.normpath(path))
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


# --- data, models, steps, gates -----------------------------------------------------------------------------------


def _data(doc: Doc, item: tuple[Any, Any] | None) -> dict[str, tuple[Path, str]]:
    """`data:` names -> (resolved path, where it was written)."""
    if item is None:
        return {}
    import yaml

    node = item[1]
    if isinstance(node, yaml.ScalarNode) and doc.value(node) is None:
        return {}
    data: dict[str, tuple[Path, str]] = {}
    for key, (key_node, value_node) in doc.mapping(node, "data", None).items():
        keypath = _join("data", key)
        if not _NAME.match(key):
            doc.fail(key_node, keypath, "a data name is letters, digits, '.', '_' or '-'")
        path = _display_path(_resolve(doc, doc.string(value_node, keypath)))
        if not path.exists():
            doc.fail(value_node, keypath, f"file not found: {path}", hint="paths are relative to the pipeline file's folder")
        data[key] = (path, doc.source(value_node, keypath))
    return data


def _models(doc: Doc, node: Any, run_dir: Path) -> list[tuple[PlannedModel, dict[str, tuple[Any, str]]]]:
    """The models, each with the values its entry gives convert (field -> (value, where))."""
    import yaml

    nodes = [node] if isinstance(node, yaml.MappingNode) else doc.sequence(node, "models")
    if not nodes:
        doc.fail(node, "models", "expected at least one model")
    models: list[tuple[PlannedModel, dict[str, tuple[Any, str]]]] = []
    seen: dict[str, str] = {}
    for i, model_node in enumerate(nodes):
        keypath = _join("models", i) if not isinstance(node, yaml.MappingNode) else "models"
        items = doc.mapping(model_node, keypath, MODEL_KEYS)
        if "source" not in items:
            doc.fail(model_node, _join(keypath, "source"), "missing", hint="source: a model file, or FILE.py:FACTORY")
        source_node = items["source"][1]
        source = _source(doc, doc.string(source_node, _join(keypath, "source")), source_node, _join(keypath, "source"))
        if "name" in items:
            name = _name(doc, items["name"][1], _join(keypath, "name"))
        else:
            stem = Path(source.rsplit(":", 1)[0] if _FACTORY.match(source) else source).stem or f"model{i}"
            name = re.sub(r"[^A-Za-z0-9._-]", "-", stem)
        if name in seen:
            doc.fail(items.get("name", (model_node, model_node))[1], _join(keypath, "name"),
                     f"the name {shown(name)} is taken by {seen[name]}", hint="give each model its own `name:`")
        seen[name] = keypath
        model = PlannedModel(name=name, source=source, folder=run_dir / name)
        models.append((model, _model_convert_options(doc, items, keypath, name)))
    return models


def _source(doc: Doc, text: str, node: Any, keypath: str) -> str:
    """A model source resolved relative to the pipeline file: a path, or FILE.py:FACTORY with FILE resolved; a
    `pkg.module:FACTORY` stays as written (importing it to check would load its framework)."""
    factory = _FACTORY.match(text)
    if factory:
        file = _display_path(_resolve(doc, factory["target"]))
        if not file.is_file():
            doc.fail(node, keypath, f"file not found: {file}", hint="paths are relative to the pipeline file's folder")
        return f"{file}:{factory['attr']}"
    if re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", text):
        return text
    path = _display_path(_resolve(doc, text))
    if not path.exists():
        doc.fail(node, keypath, f"file not found: {path}", hint="paths are relative to the pipeline file's folder")
    return str(path)


def _model_convert_options(doc: Doc, items: dict[str, tuple[Any, Any]], keypath: str, name: str) -> dict[str, tuple[Any, str]]:
    """The model entry's values that feed convert (and the source's own runs): field -> (value, source)."""
    import yaml

    given: dict[str, tuple[Any, str]] = {}
    if "inputs" in items:
        node = items["inputs"][1]
        specs = []
        for input_name, (key_node, value_node) in doc.mapping(node, _join(keypath, "inputs"), None).items():
            where = _join(_join(keypath, "inputs"), input_name)
            if isinstance(value_node, yaml.SequenceNode):
                dims = doc.value(value_node)
                if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
                    doc.fail(value_node, where, f"expected positive integer dimensions, got {shown(dims)}")
                shape = "x".join(map(str, dims))
            else:
                shape = str(doc.value(value_node)) if isinstance(value_node, yaml.ScalarNode) else doc.fail(
                    value_node, where, "expected SHAPE[:DTYPE], e.g. 1x3x224x224")
                if not re.match(r"^\d+(x\d+)*(:\w+)?$", shape):
                    doc.fail(value_node, where, f"expected SHAPE[:DTYPE], e.g. 1x3x224x224 or 1x128:int64, got {shown(shape)}")
            specs.append(f"{input_name}:{shape}")
        given["inputs"] = (specs, f"model {name} ({doc.source(node, _join(keypath, 'inputs'))})")
    if "dynamic" in items:
        node = items["dynamic"][1]
        value = doc.value(node)
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) and re.match(r"^[^:]+:\d+(:\w+)?$", v) for v in values):
            doc.fail(node, _join(keypath, "dynamic"), f"expected NAME:AXIS[:DIMNAME] (a string or a list), got {shown(value)}")
        given["dynamic"] = (values, f"model {name} ({doc.source(node, _join(keypath, 'dynamic'))})")
    if "weights" in items:
        node = items["weights"][1]
        path = _display_path(_resolve(doc, doc.string(node, _join(keypath, "weights"))))
        if not path.is_file():
            doc.fail(node, _join(keypath, "weights"), f"file not found: {path}")
        given["weights"] = (str(path), f"model {name} ({doc.source(node, _join(keypath, 'weights'))})")
    if "from" in items:
        node = items["from"][1]
        where = _join(keypath, "from")
        given["src_format"] = (doc.string(node, where), f"model {name} ({doc.source(node, where)})")
    return given


class _StepSpec:
    """One entry of `steps:` as written: the verb, its given options (field -> (value node, keypath)) and where."""

    def __init__(self, index: int, verb: str, node: Any, given: dict[str, tuple[Any, Any, str]]) -> None:
        self.index, self.verb, self.node, self.given = index, verb, node, given


def _steps(doc: Doc, node: Any) -> list[_StepSpec]:
    import yaml

    from mdeploy.verbs.options import describe

    nodes = doc.sequence(node, "steps")
    if not nodes:
        doc.fail(node, "steps", "expected at least one step")
    steps = []
    for i, step_node in enumerate(nodes):
        keypath = _join("steps", i)
        if isinstance(step_node, yaml.ScalarNode) and isinstance(doc.value(step_node), str):
            verb_node, options_node = step_node, None  # `- validate` with no options
        else:
            items = doc.mapping(step_node, keypath, None)
            if len(items) != 1:
                doc.fail(step_node, keypath,
                         f"expected one verb ({'|'.join(STEP_VERBS)}) per step, got {', '.join(items) or 'none'}",
                         hint="write each step as its own list item: `- quantize: {mode: static}`")
            verb_node, options_node = next(iter(items.values()))
        verb = str(doc.value(verb_node))
        if verb not in STEP_VERBS:
            doc.fail(verb_node, _join(keypath, verb), f"unknown step{_suggest(verb, STEP_VERBS)}",
                     hint="steps: " + ", ".join(STEP_VERBS))
        keypath = _join(keypath, verb)
        infos = {i.key: i for i in describe(_options_type(verb)) if i.pipeline and i.name not in PLAN_SET[verb]}
        by_field = {i.name: i for i in infos.values()}
        aliases = ALIASES.get(verb, {})
        given: dict[str, tuple[Any, Any, str]] = {}
        if options_node is not None and not (isinstance(options_node, yaml.ScalarNode) and doc.value(options_node) is None):
            for key, (key_node, value_node) in doc.mapping(options_node, keypath, None).items():
                where = _join(keypath, key)
                flag = key.lstrip("-").replace("_", "-")
                flag = aliases.get(flag, flag)
                info = infos.get(flag) or by_field.get(flag.replace("-", "_"))  # the Options field's name works too
                if info is None:
                    plan_set = {i.key for i in describe(_options_type(verb)) if i.name in PLAN_SET[verb]}
                    if flag in plan_set:
                        doc.fail(key_node, where,
                                 "set by the pipeline itself (the run folder holds every step's model and report)",
                                 hint="a step reads the previous step's model; see `mdeploy run --dry-run`")
                    doc.fail(key_node, where, "unknown option" + _suggest(flag, [*infos, *aliases]),
                             hint=f"{verb} options: " + ", ".join(sorted(infos)))
                if info.name in given:
                    doc.fail(key_node, where, f"given twice (as {given[info.name][2].rsplit('.', 1)[-1]} too)")
                given[info.name] = (info, value_node, where)
        steps.append(_StepSpec(i, verb, step_node, given))
    return steps


def _gates(doc: Doc, node: Any) -> list[Gate]:
    import yaml

    if isinstance(node, yaml.ScalarNode) and doc.value(node) is None:
        return []
    gates = []
    for i, gate_node in enumerate(doc.sequence(node, "gates")):
        keypath = _join("gates", i)
        text = doc.string(gate_node, keypath)
        gate = gating.parse(text, where=f"{doc.at(gate_node)}: {keypath}")
        gates.append(replace(gate, text=" ".join(gate.text.split()), where=doc.source(gate_node, keypath)))
    return gates


def _check_run_dir(run_dir: Path, model_names: list[str], force: bool) -> None:
    """A run folder is reused (the step cache skips what is unchanged); any other existing folder only with --force."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise OutputExistsError(f"the run folder {run_dir} exists and is not a folder", hint="give another --out")
    entries = {p.name for p in run_dir.iterdir()}
    if entries and not force and "manifest.json" not in entries and not entries & set(model_names):
        raise OutputExistsError(f"{run_dir} exists and is not an mdeploy run folder",
                                hint="give another --out, or --force to write into it anyway")


# --- the artifact chain -------------------------------------------------------------------------------------------


def _plan_steps(doc: Doc, model: PlannedModel, model_given: dict[str, tuple[Any, str]], steps: list[_StepSpec],
                data: dict[str, tuple[Path, str]]) -> None:
    """Each step's options for this model: the artifact chain (convert writes the baseline, quantize reads the previous
    artifact, validate compares the current artifact with the baseline, benchmark measures both), the values given
    in the file, the model entry's values, and the verb's defaults, each with where it came from."""
    from mdeploy.verbs.options import check, check_value, describe

    source_is_code = bool(_FACTORY.match(model.source)) or bool(re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", model.source))
    artifacts: list[tuple[str, str]] = []  # (path, the step that wrote it, or "source")
    current_from_quantize = ""
    for spec in steps:
        name = f"{spec.index + 1:02d}-{spec.verb}"
        keypath = _join(_join("steps", spec.index), spec.verb)
        options_type = _options_type(spec.verb)
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}

        def plan(field: str, value: Any, why: str = "plan", values: dict[str, Any] = values,
                 sources: dict[str, str] = sources) -> None:
            values[field] = value
            sources[field] = why

        # the file's values first (checked against the option's type), then data names and relative paths
        for field, (info, value_node, where) in spec.given.items():
            raw = doc.value(value_node)
            if field in PATH_OPTIONS and isinstance(raw, str) and raw in data:
                path, written = data[raw]
                values[field] = str(path)
                sources[field] = f"data.{raw} ({written}; named at {doc.source(value_node, where)})"
                continue
            value = check_value(info, raw, f"{doc.at(value_node)}: {where}")
            if field in PATH_OPTIONS and isinstance(value, str):
                path = _display_path(_resolve(doc, value))
                if not path.exists():
                    hint = ("data names: " + ", ".join(data)) if data else "paths are relative to the pipeline file's folder"
                    doc.fail(value_node, where, f"file not found: {path}" + _suggest(value, data), hint=hint)
                value = str(path)
            values[field] = value
            sources[field] = doc.source(value_node, where)

        current = artifacts[-1][0] if artifacts else model.source
        output: Path | None = None
        if spec.verb == "convert":
            for field, (value, why) in model_given.items():
                if field not in values:
                    plan(field, value, why)
            fmt = values.get("dst_format") or "onnx"
            if "dst_format" not in values:
                plan("dst_format", fmt, "plan (convert's target; default onnx)")
            if fmt not in _EXT:
                doc.fail(spec.node, keypath + ".to", f"expected {'|'.join(_EXT)}, got {shown(fmt)}")
            output = model.folder / f"{name}{_EXT[fmt]}"
            plan("src", current, "plan (the model's source)" if not artifacts else f"plan (the output of {artifacts[-1][1]})")
            plan("output", str(output), "plan (the run folder)")
            plan("force", True, "plan (the run folder is mdeploy's own; the step cache decides what re-runs)")
            artifacts.append((str(output), name))
            current_from_quantize = ""
        elif spec.verb == "quantize":
            if source_is_code and not artifacts:
                doc.fail(spec.node, keypath, "needs a model file to quantize, and this model's source is Python code",
                         hint="put a `convert: {to: onnx}` step before it")
            if not artifacts:
                artifacts.append((model.source, "source"))
            out_ext = ".onnx" if current.endswith(".onnx") else ".tflite"
            output = model.folder / f"{name}{out_ext}"
            wrote = artifacts[-1][1]
            plan("src", current, f"plan (the output of {wrote})" if wrote != "source" else "plan (the model's source)")
            plan("output", str(output), "plan (the run folder)")
            plan("force", True, "plan (the run folder is mdeploy's own; the step cache decides what re-runs)")
            artifacts.append((str(output), name))
            current_from_quantize = name
        elif spec.verb == "validate":
            if not artifacts:
                doc.fail(spec.node, keypath, "has nothing to validate: no step before it writes a model",
                         hint="put a convert or quantize step before it")
            baseline, baseline_step = artifacts[0]
            if len(artifacts) == 1:  # only the baseline: check it against the source it was made from
                plan("reference", model.source, "plan (the model's source)")
                if source_is_code and "inputs" not in values and "inputs" in model_given:
                    plan("inputs", *model_given["inputs"])
                if "weights" not in values and "weights" in model_given:
                    plan("weights", *model_given["weights"])
            else:
                plan("reference", baseline, f"plan (the baseline: the output of {baseline_step})"
                     if baseline_step != "source" else "plan (the baseline: the model's source)")
            plan("candidate", current, f"plan (the output of {artifacts[-1][1]})")
            if current_from_quantize and "precision" not in values:
                plan("precision", "int8", f"plan (the candidate is {current_from_quantize}'s INT8 model)")
            plan("report", None, "plan (the step's report is written to the run folder)")
        elif spec.verb == "package":
            if source_is_code and not artifacts:
                doc.fail(spec.node, keypath, "needs a model file to package, and this model's source is Python code",
                         hint="put a `convert: {to: onnx}` step before it")
            output = model.folder / name  # a folder: the package
            plan("model", current, f"plan (the output of {artifacts[-1][1]})" if artifacts else "plan (the model's source)")
            plan("output", str(output), "plan (the run folder)")
            plan("force", True, "plan (the run folder is mdeploy's own; a package step always runs)")
        elif spec.verb == "benchmark":
            if not artifacts:
                plan("models", [current], "plan (the model's source)")
                if source_is_code and "inputs" not in values and "inputs" in model_given:
                    plan("inputs", *model_given["inputs"])
            elif artifacts[0][0] == current:
                plan("models", [current], f"plan (the baseline: the output of {artifacts[0][1]})")
            else:
                plan("models", [artifacts[0][0], current],
                     f"plan (the baseline, then the output of {artifacts[-1][1]}; ratios are against the baseline)")

        for info in describe(options_type):
            if info.name not in values:
                if info.default is MISSING:
                    doc.fail(spec.node, keypath, f"{info.key}: missing")
                values[info.name] = info.default
                sources[info.name] = "default"
        order = [i.name for i in describe(options_type)]
        values = {k: values[k] for k in order}
        sources = {k: sources[k] for k in order}
        try:
            check(options_type(**values))
        except InputError as exc:  # a combination only the verb's own checks see
            doc.fail(spec.node, keypath, exc.message, exc.hint)
        model.steps.append(PlannedStep(index=spec.index, verb=spec.verb, options=values, sources=sources, output=output,
                                       report=model.folder / f"{name}.json",
                                       where=doc.source(spec.node, _join("steps", spec.index))))


def options_keys(verb: str) -> dict[str, str]:
    """Options field name -> the name a pipeline file (and the CLI) uses for it, for one step verb."""
    from mdeploy.verbs.options import describe

    return {i.name: i.key for i in describe(_options_type(verb))}


def options_table(verb: str) -> str:
    """The step options of `verb` as a Markdown table (docs/ci.md holds one per verb, checked by a test against this)."""
    from mdeploy.verbs.options import describe

    aliases = {key: alias for alias, key in ALIASES.get(verb, {}).items()}
    rows = ["| option | type | default | what |", "| --- | --- | --- | --- |"]
    for info in describe(_options_type(verb)):
        if not info.pipeline or info.name in PLAN_SET[verb]:
            continue
        kind = " / ".join(info.choices) if info.choices else {"list": "list of strings", "str": "string", "float": "number",
                                                              "int": "integer", "bool": "true/false"}[info.kind]
        default = "" if info.default in (None, [], MISSING) else str(info.default).lower() if isinstance(info.default, bool) \
            else str(info.default)
        key = f"`{info.key}`" + (f" (`{aliases[info.key]}`)" if info.key in aliases else "")
        rows.append(f"| {key} | {kind} | {default} | {info.help.replace('|', '/')} |")
    return "\n".join(rows) + "\n"


def update_docs(path: Path) -> bool:
    """Rewrite the option tables between `<!-- options:VERB -->` and `<!-- /options -->` in `path`; True if changed."""
    text = path.read_text(encoding="utf-8")
    new = re.sub(r"(<!-- options:(\w+) -->\n).*?(<!-- /options -->)",
                 lambda m: m[1] + options_table(m[2]) + m[3], text, flags=re.DOTALL)
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def _options_type(verb: str) -> type:
    return importlib.import_module(f"mdeploy.verbs.{verb}").Options


if __name__ == "__main__":  # python -m mdeploy.pipeline.spec docs/ci.md: regenerate the option tables
    import sys

    for doc in sys.argv[1:]:
        print(doc, "updated" if update_docs(Path(doc)) else "unchanged")


__all__ = ["ALIASES", "GATE_METRICS", "PATH_OPTIONS", "PLAN_SET", "STEP_VERBS", "list_jobs", "load", "options_keys",
           "options_table", "schema", "update_docs"]
