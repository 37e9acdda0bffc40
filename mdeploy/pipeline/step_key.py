"""A pipeline step's cache key: what decides its result, so that a re-run skips a step whose inputs, options and
versions are unchanged (cache.py keeps the entries). Path options stand for the content of the files they name, a
code source (`FILE.py:FACTORY`) for what its build reads (sources.py), and options that only say where a result
goes are left out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mdeploy.core import ModelRef
from mdeploy.pipeline.cache import StepCache
from mdeploy.pipeline.cache import key as cache_key
from mdeploy.pipeline.chain import NOT_FILES, PATH_OPTIONS, ROLES

# options that change where a result goes, not what it is
NOT_IN_KEY = frozenset({"report", "force"})


class _Uncacheable(Exception):
    pass


def step_key(verb: str, values: dict[str, Any], cache: StepCache, model: str) -> str | None:
    """The step's cache key, or None when an input cannot be hashed (a pkg.module:FACTORY source: its code is not a
    file the run can name; a FILE.py:FACTORY whose build fails: what it reads is unknown; so the step always runs)
    or the verb is never cached (chain.py's rows: a package's folder is not kept, and its smoke test is a fact of now).
    The model's name is part of it: a cached report names the model's own files, so two models with the same source
    and options must not share an entry."""
    if not ROLES[verb].cached:
        return None
    material: dict[str, Any] = {}
    try:
        for name, value in sorted(values.items()):
            if name in NOT_IN_KEY:
                continue
            if name == "output":
                material[name] = Path(value).name if value else None
            elif name in PATH_OPTIONS and name not in NOT_FILES.get(verb, ()):
                material[name] = _content(value, cache)
            else:
                material[name] = value
    except _Uncacheable:
        return None
    return cache_key({"verb": verb, "model": model, "options": material})


def _content(value: Any, cache: StepCache) -> Any:
    """A path option as what it names: the content hash of the file (with its suffix, which decides the format); a
    FILE.py:FACTORY as what its build reads and builds (sources.fingerprint), not only its own file."""
    if isinstance(value, list):
        return [_content(v, cache) for v in value]
    if not isinstance(value, str) or not value:
        return value
    code = ModelRef.code_parts(value)
    if code and not Path(value).exists():
        if not code[0].endswith(".py"):  # pkg.module:FACTORY
            raise _Uncacheable(value)
        if not Path(code[0]).is_file():
            return value
        if value not in cache.sources:  # built and watched once per model and source (sources.py)
            from mdeploy.pipeline.sources import fingerprint

            cache.sources[value] = fingerprint(value, cache.hasher.path)
        if cache.sources[value] is None:
            raise _Uncacheable(value)
        return cache.sources[value]
    path = Path(value)
    if path.exists():
        return {"suffix": path.suffix, "sha256": cache.hasher.path(path)}
    return value


__all__ = ["NOT_IN_KEY", "step_key"]
