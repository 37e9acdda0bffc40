"""What a pipeline file may say: its keys, each step verb's options (the verb's own options type), the JSON Schema
of the whole file, and the Markdown option tables of docs/ci.md, all built from one place so they cannot drift.

`python -m mdeploy.pipeline.schema docs/ci.md` regenerates the option tables (a test checks them against this).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import MISSING
from pathlib import Path
from typing import Any

from mdeploy.pipeline import gates as gating
from mdeploy.pipeline.chain import PLAN_SET, STEP_VERBS
from mdeploy.pipeline.plan import VERSION

# Short names a pipeline file may use for a verb's option (`quantize: {calib: calib}`), key -> the option's key.
ALIASES: dict[str, dict[str, str]] = {
    "quantize": {"calib": "calib-data", "eval": "eval-data"},
}
# What a gate can measure: the executor's gates module evaluates them (one list, one parser).
GATE_METRICS: dict[str, str] = {metric: what for metric, (what, _) in gating.METRICS.items()}
TOP_KEYS = ("version", "name", "models", "data", "steps", "gates")
MODEL_KEYS = ("name", "source", "inputs", "dynamic", "weights", "from")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def options_type(verb: str) -> type:
    """The verb's Options dataclass (mdeploy/verbs/<verb>.py): a step's options are the CLI's flags."""
    return importlib.import_module(f"mdeploy.verbs.{verb}").Options


def schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of the whole pipeline file, built from the verbs' options types."""
    from mdeploy.verbs.options import json_schema

    step_kinds = []
    for verb in STEP_VERBS:
        options = json_schema(options_type(verb), f"{verb} step options", exclude=PLAN_SET[verb], aliases=ALIASES.get(verb))
        step_kinds.append({"type": "object", "title": f"{verb} step",
                           "properties": {verb: {"anyOf": [options, {"type": "null"}]}},
                           "required": [verb], "additionalProperties": False})
    shape = {"anyOf": [{"type": "string", "description": "SHAPE[:DTYPE], e.g. 1x3x224x224 or 1x128:int64"},
                       {"type": "array", "items": {"type": "integer"}}]}
    model = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "pattern": NAME.pattern,
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
            "name": {"type": "string", "pattern": NAME.pattern, "description": "Run folder prefix (default: the file's stem)."},
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


def options_keys(verb: str) -> dict[str, str]:
    """Options field name -> the name a pipeline file (and the CLI) uses for it, for one step verb."""
    from mdeploy.verbs.options import describe

    return {i.name: i.key for i in describe(options_type(verb))}


def options_table(verb: str) -> str:
    """The step options of `verb` as a Markdown table (docs/ci.md holds one per verb, checked by a test against this)."""
    from mdeploy.verbs.options import describe

    aliases = {key: alias for alias, key in ALIASES.get(verb, {}).items()}
    rows = ["| option | type | default | what |", "| --- | --- | --- | --- |"]
    for info in describe(options_type(verb)):
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


if __name__ == "__main__":  # python -m mdeploy.pipeline.schema docs/ci.md: regenerate the option tables
    import sys

    for doc in sys.argv[1:]:
        print(doc, "updated" if update_docs(Path(doc)) else "unchanged")


__all__ = ["ALIASES", "GATE_METRICS", "MODEL_KEYS", "NAME", "TOP_KEYS", "options_keys", "options_table", "options_type",
           "schema", "update_docs"]
