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

from mdeploy.errors import InputError, MdeployError, OutputExistsError


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
    """Yield a path with `target`'s name inside a temporary staging folder; on success move it (and, for an ONNX
    model, the external-data files it references) into place.

    Whatever else was written into the staging folder (intermediate hops of a multi-hop conversion, scratch
    models) is scratch: it is deleted with the folder, on success and on failure, and never reaches the user's
    folder, so a second run into the same folder finds only what the first one asked for.
    """
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
        names = [target.name, *companions(produced)]
        for name in names[1:]:  # every collision is found before anything is moved
            if (target.parent / name).exists() and not force:
                raise OutputExistsError(f"output exists: {target.parent / name}", hint="give --force to replace it")
        for name in names:
            item, dest = staging / name, target.parent / name
            share(item)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            try:
                os.replace(item, dest)
            except OSError as exc:
                raise InputError(f"cannot write {dest}: {exc.strerror}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def umask() -> int:
    """The process's umask (read by setting it and setting it back: there is no other way to read it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def share(path: Path) -> None:
    """Give what is moved into the user's folder the modes a new file gets there (0666 & ~umask; folders and
    executables 0777 & ~umask): onnx writes external data with 0600 and mkdtemp makes private folders, and a model is
    read by servers and CI jobs running as other users."""
    mask = umask()
    for p in [path, *(path.rglob("*") if path.is_dir() and not path.is_symlink() else [])]:
        if p.is_symlink():
            continue
        executable = p.is_dir() or p.stat().st_mode & 0o111
        os.chmod(p, (0o777 if executable else 0o666) & ~mask)


def companions(model: Path) -> list[str]:
    """The files an output needs beside it: an ONNX model's external-data files (names relative to its folder), a
    TensorRT engine's JSON sidecar (`X.engine.json`: where it was built, checked by the runner)."""
    if model.suffix in (".engine", ".plan"):
        sidecar = model.with_name(model.name + ".json")
        return [sidecar.name] if sidecar.is_file() else []
    if model.suffix != ".onnx" or not model.is_file():
        return []
    from mdeploy.frameworks import onnx_models, onnx_skeleton

    proto = onnx_skeleton.load_without_weights(model)  # the names are what counts: weights inside the file stay unread
    return [name for name in onnx_models.external_data_files(proto) if (model.parent / name).is_file()]


def size_of(path: Path) -> int:
    """Bytes a model occupies on disk: a file and its external data, or every file of a folder (SavedModel)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    try:
        beside = companions(path)
    except MdeployError:  # not a readable ONNX model: its own bytes are all there is to count
        beside = []
    return path.stat().st_size + sum((path.parent / name).stat().st_size for name in beside)


@contextmanager
def working_folder(folder: Path) -> Iterator[None]:
    """Run a library call with `folder` as the current directory, for libraries that write files there on their own
    (onnxruntime's symbolic shape inference saves `sym_shape_infer_temp.onnx` into the cwd when it cannot infer every
    shape): they land in mdeploy's temporary folder, removed with it, not in the user's folder. The cwd is the
    process's: call it only where no other thread resolves relative paths (mdeploy's verbs run one at a time)."""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)
