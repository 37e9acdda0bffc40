"""What a code source (`FILE.py:FACTORY`) depends on, for the step cache: not only its own file.

A factory is code that reads what it likes while it builds: a `model.safetensors` and a `config.json` beside it, a
helper module it imports, a checkpoint in a hub cache. Hashing only FILE.py let a pipeline serve a model converted
from weights that have since changed (issue 16). So the source is built, once per run and source, and watched:

- every file the build opens through Python (the interpreter's `open` audit event: `open()`, `io.open_code` for
  imports, `os.open`, so numpy, torch.load and imported helper modules are seen), but not the interpreter's or
  the installed packages' own files (their versions are in the key already) nor mdeploy's (its source fingerprint is);
- the user code the built module runs: its classes' modules and what their globals name, transitively (code
  imported before the build is not opened again, so a watch alone would miss it);
- the built module's parameters and buffers, byte for byte: what native loaders (safetensors, whose Rust code opens
  the file without Python seeing it) and any other way in put into the model.

When the build fails, mdeploy cannot tell what the source depends on, and the step is not cached (it runs and reports
the failure itself). A factory that draws new random weights on every build never hits, which is right: each build
is another model. Torch is imported for this (a cached step of a code source costs a build, not a conversion).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import os
import sys
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mdeploy

_WATCHERS: list[set[str]] = []
_HOOKED = False
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_SKIPPED_ROOTS = ("/proc/", "/sys/", "/dev/")


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "open" or not _WATCHERS:
        return
    path, mode, flags = (tuple(args) + (None, None, None))[:3]
    if isinstance(path, int) or path is None:
        return
    if isinstance(mode, str) and any(c in mode for c in "wax+"):
        return
    if isinstance(flags, int) and flags & _WRITE_FLAGS:
        return
    try:
        name = os.fsdecode(path)
    except (TypeError, ValueError):
        return
    for seen in _WATCHERS:
        seen.add(name)


@contextlib.contextmanager
def watch() -> Iterator[set[str]]:
    """The names of the files opened for reading through Python inside the block (an audit hook, added once: the
    interpreter cannot remove one, so it does nothing outside a watch)."""
    global _HOOKED
    if not _HOOKED:
        sys.addaudithook(_audit)
        _HOOKED = True
    seen: set[str] = set()
    _WATCHERS.append(seen)
    try:
        yield seen
    finally:
        _WATCHERS.remove(seen)


def _installed_roots() -> tuple[str, ...]:
    """Folders whose files are the interpreter's, the installed packages' or mdeploy's own."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(mdeploy.__file__).resolve().parent)}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        with contextlib.suppress(KeyError):
            roots.add(sysconfig.get_paths()[key])
    return tuple(os.path.join(os.path.realpath(r), "") for r in roots if r)


def user_files(names: set[str]) -> list[Path]:
    """The opened names that are the user's files: existing regular files outside the installed roots; a compiled
    module (`__pycache__/x.cpython-311.pyc`) stands for its source, whose content decides it."""
    import importlib.util

    roots = _installed_roots()
    found: set[Path] = set()
    for name in names:
        path = os.path.realpath(name)
        if path.startswith(roots) or path.startswith(_SKIPPED_ROOTS):
            continue
        if path.endswith(".pyc") and "__pycache__" in path:
            with contextlib.suppress(ValueError, NotImplementedError):
                path = importlib.util.source_from_cache(path)
        if os.path.isfile(path):
            found.add(Path(path))
    return sorted(found)


MAX_MODULES = 500  # user modules followed from the model's classes (a bound: a walk never runs away)


def code_files(module: Any) -> set[str]:
    """The user code a module tree runs: the files of its classes' modules and, transitively, of the user modules,
    functions and classes those modules' globals name (a helper imported once is not opened again by a later build,
    so watching opens alone would miss it)."""
    roots = _installed_roots()
    files: set[str] = set()
    seen: set[str] = set()
    stack = [inspect.getmodule(type(m)) for m in module.modules()]
    while stack and len(seen) < MAX_MODULES:
        mod = stack.pop()
        name = getattr(mod, "__name__", None)
        path = getattr(mod, "__file__", None)
        if name is None or name in seen or not path or os.path.realpath(path).startswith(roots):
            continue
        seen.add(name)
        files.add(path)
        for value in list(vars(mod).values()):
            if inspect.ismodule(value):
                stack.append(value)
            elif inspect.isclass(value) or inspect.isfunction(value):
                stack.append(inspect.getmodule(value))
    return files


def state_sha256(module: Any) -> str:
    """SHA-256 over a module's state_dict: names, dtypes, shapes and bytes of every parameter and buffer."""
    import torch

    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\0".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def fingerprint(factory: str, file_hash: Callable[[Path], str]) -> dict[str, Any] | None:
    """What decides the module `factory` (FILE.py:FACTORY) builds: its file, every user file the build read, the
    class sources and the built state; None when the build fails (mdeploy cannot tell what it depends on)."""
    from mdeploy.core import ModelRef
    from mdeploy.frameworks import torch_models

    parts = ModelRef.code_parts(factory)
    if parts is None:
        return None
    target, attr = parts
    try:
        with watch() as opened, contextlib.redirect_stdout(io.StringIO()):  # a factory's prints stay off --json
            loaded = torch_models.load(ModelRef.parse(factory))
            module = loaded.module
            opened |= code_files(module)
            state = state_sha256(module)
        reads = sorted({file_hash(p) for p in user_files(opened)} | {file_hash(Path(target))})
    except (Exception, SystemExit):  # noqa: BLE001  user code: any failure means the step runs, uncached, and reports it
        return None
    finally:
        loaded = module = None  # the module is not kept: the step builds its own
    return {"factory": attr, "sha256": file_hash(Path(target)), "reads": reads, "state": state}


__all__ = ["code_files", "fingerprint", "state_sha256", "user_files", "watch"]
