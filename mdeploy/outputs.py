"""Writing results safely: a failure or Ctrl-C never leaves a half-written model behind.

A model is written into a temporary folder beside its target (so that an ONNX file and its external data
file keep their final names), then each file is renamed into place. An existing output is replaced only
when the user said `--force`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mdeploy.errors import InputError, OutputExistsError


def check_output(target: Path, force: bool) -> None:
    """Fail early, before any work, when `target` cannot be written."""
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output folder does not exist: {parent}", hint=f"create it first (mkdir -p {parent})")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"output folder is not writable: {parent}")
    if target.exists() and not force:
        raise OutputExistsError(f"output exists: {target}", hint="give --force to replace it")


@contextmanager
def atomic_output(target: Path, force: bool) -> Iterator[Path]:
    """Yield a path with `target`'s name inside a temporary folder; on success move it (and any file
    written beside it, such as external data) into place."""
    check_output(target, force)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise InputError(f"cannot write to {target.parent}: {exc.strerror}") from None
    try:
        yield staging / target.name
        produced = staging / target.name
        if not produced.exists():
            raise InputError(f"nothing was written to {target}")
        for item in sorted(staging.iterdir(), key=lambda p: p.name != target.name):
            dest = target.parent / item.name
            if dest.exists():
                if dest != target and not force:
                    raise OutputExistsError(f"output exists: {dest}", hint="give --force to replace it")
                if dest.is_dir() and not dest.is_symlink():
                    shutil.rmtree(dest)
            try:
                os.replace(item, dest)
            except OSError as exc:
                raise InputError(f"cannot write {dest}: {exc.strerror}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
