"""A report read back is checked against report.schema.json, the schema mdeploy publishes for what it writes.

Reading a report back (`mdeploy report merge`) trusts every field it uses: `"steps": "oops"` would otherwise be a
traceback deep in the merge or a renderer. The published schema already says what every field is, so it is the one
check: this walks it for the keywords it uses (type, const, enum, required, properties, additionalProperties,
items, minItems, maxItems, minimum, $ref, oneOf, anyOf, if/then). jsonschema would do the same, but it is a test
dependency only, and the first problem with its place (`models[0].gates`) is all an error line needs.
"""

from __future__ import annotations

from typing import Any

from mdeploy.errors import shown

_JSON_TYPES = {"object": "an object", "array": "a list", "string": "a string", "number": "a number",
               "integer": "an integer", "boolean": "true or false", "null": "null"}


def first_problem(value: Any, schema: dict[str, Any]) -> str | None:
    """Where `value` first breaks `schema` and how (`steps: expected a list, got 'oops'`), or None when it fits."""
    return _check(value, schema, schema, "")


def _is(value: Any, json_type: str) -> bool:
    if json_type == "object":
        return isinstance(value, dict)
    if json_type == "array":
        return isinstance(value, list)
    if json_type == "string":
        return isinstance(value, str)
    if json_type == "boolean":
        return isinstance(value, bool)
    if json_type == "null":
        return value is None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return json_type == "number" or float(value).is_integer()


def _kind(value: Any) -> str:
    """What a value is, in the schema's words, and a short look at it."""
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else f"a list of {len(value)} item{'s' * (len(value) != 1)}"
    return shown(value)


def _at(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else key)


def _check(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str) -> str | None:
    where = path or "the report"
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return _check(value, target, root, path)
    if "const" in schema and value != schema["const"]:
        return f"{where}: expected {shown(schema['const'])}, got {_kind(value)}"
    if "enum" in schema and not any(value == e and type(value) is type(e) for e in schema["enum"]):
        return f"{where}: expected one of {', '.join(shown(e) for e in schema['enum'])}, got {_kind(value)}"
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is(value, t) for t in types):
            return f"{where}: expected {' or '.join(_JSON_TYPES[t] for t in types)}, got {_kind(value)}"
    for key in ("oneOf", "anyOf"):
        if key in schema:
            problems = [_check(value, option, root, path) for option in schema[key]]
            fits = problems.count(None)
            if fits == 0:
                return min(problems, key=lambda p: len(p or ""))  # the nearest option's complaint
            if key == "oneOf" and fits > 1:
                return f"{where}: fits more than one of the forms the schema allows"
    if "if" in schema and _check(value, schema["if"], root, path) is None and "then" in schema:
        problem = _check(value, schema["then"], root, path)
        if problem:
            return problem
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                return f"{_at(path, key)}: missing"
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                problem = _check(item, sub, root, _at(path, key))
                if problem:
                    return problem
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            return f"{where}: expected at least {schema['minItems']} items, got {len(value)}"
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            return f"{where}: expected at most {schema['maxItems']} items, got {len(value)}"
        if "items" in schema:
            for i, item in enumerate(value):
                problem = _check(item, schema["items"], root, _at(path, i))
                if problem:
                    return problem
    if "minimum" in schema and _is(value, "number") and value < schema["minimum"]:
        return f"{where}: expected a number >= {schema['minimum']}, got {shown(value)}"
    return None
