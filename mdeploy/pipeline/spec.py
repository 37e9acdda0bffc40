"""The pipeline file (`mdeploy run pipeline.yaml`): read it, check every key and value, and resolve it into a Plan.

Checking happens here, before anything runs, so that a typo costs a second and not a half-finished CI job. The file
is read with `yaml.compose` within limits (pipeline/yaml_file.py), which keeps the line and column of every node: an
error names `file:line:col` and the
key path (`pipeline.yaml:12:7: steps[2].quantize.mode: expected auto|dynamic|static, got 'fast'`), and an unknown
key suggests the nearest known one. A step's options are the verb's own options type (mdeploy/verbs/<verb>.py), so
the names and checks are those of the CLI flags, and every resolved value records where it came from (the file, a
`data:` name, the model entry, the plan itself, or the verb's default) for `--dry-run` and the manifest.

This module reads the file's entries (top keys, data, models, steps, gates); schema.py says which keys and options
exist, and steps.py resolves each step's options along the artifact chain (chain.py).
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from mdeploy.core import ModelRef
from mdeploy.errors import InputError, OutputExistsError, shown
from mdeploy.pipeline import gates as gating
from mdeploy.pipeline.chain import PLAN_SET, STEP_VERBS
from mdeploy.pipeline.plan import VERSION, Gate, Plan, PlannedModel
from mdeploy.pipeline.schema import ALIASES, MODEL_KEYS, NAME, TOP_KEYS, options_type
from mdeploy.pipeline.steps import StepSpec, plan_steps
from mdeploy.pipeline.yaml_file import Doc
from mdeploy.pipeline.yaml_file import join as _join
from mdeploy.pipeline.yaml_file import suggest as _suggest


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
        plan_steps(doc, model, model_given, steps, data)
    return Plan(pipeline=path, run_dir=run_dir, data={k: v for k, (v, _) in data.items()}, models=[m for m, _ in models],
                gates=gates)


def list_jobs(plan: Plan) -> dict[str, Any]:
    """One job per model, as GitHub Actions' `strategy.matrix` takes it through `fromJSON` ({"include": [...]})."""
    return {"include": [{"job": m.name} for m in plan.models]}


# --- reading the file ---------------------------------------------------------------------------------------------


def _name(doc: Doc, node: Any, keypath: str) -> str:
    value = doc.string(node, keypath)
    if not NAME.match(value):
        doc.fail(node, keypath, f"expected a name of letters, digits, '.', '_' or '-', got {shown(value)}")
    return value


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
        if not NAME.match(key):
            doc.fail(key_node, keypath, "a data name is letters, digits, '.', '_' or '-'")
        path = doc.file(doc.string(value_node, keypath))
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
            code = ModelRef.code_parts(source)
            stem = Path(code[0] if code and code[0].endswith(".py") else source).stem or f"model{i}"
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
    code = ModelRef.code_parts(text)
    if code and code[0].endswith(".py"):
        file = doc.file(code[0])
        if not file.is_file():
            doc.fail(node, keypath, f"file not found: {file}", hint="paths are relative to the pipeline file's folder")
        return f"{file}:{code[1]}"
    if code:
        return text
    path = doc.file(text)
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
        path = doc.file(doc.string(node, _join(keypath, "weights")))
        if not path.is_file():
            doc.fail(node, _join(keypath, "weights"), f"file not found: {path}")
        given["weights"] = (str(path), f"model {name} ({doc.source(node, _join(keypath, 'weights'))})")
    if "from" in items:
        node = items["from"][1]
        where = _join(keypath, "from")
        given["src_format"] = (doc.string(node, where), f"model {name} ({doc.source(node, where)})")
    return given


def _steps(doc: Doc, node: Any) -> list[StepSpec]:
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
        infos = {i.key: i for i in describe(options_type(verb)) if i.pipeline and i.name not in PLAN_SET[verb]}
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
                    plan_set = {i.key for i in describe(options_type(verb)) if i.name in PLAN_SET[verb]}
                    if flag in plan_set:
                        doc.fail(key_node, where,
                                 "set by the pipeline itself (the run folder holds every step's model and report)",
                                 hint="a step reads the previous step's model; see `mdeploy run --dry-run`")
                    doc.fail(key_node, where, "unknown option" + _suggest(flag, [*infos, *aliases]),
                             hint=f"{verb} options: " + ", ".join(sorted(infos)))
                if info.name in given:
                    doc.fail(key_node, where, f"given twice (as {given[info.name][2].rsplit('.', 1)[-1]} too)")
                given[info.name] = (info, value_node, where)
        steps.append(StepSpec(i, verb, step_node, given))
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


__all__ = ["list_jobs", "load"]
