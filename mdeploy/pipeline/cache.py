"""The step cache of `mdeploy run`: a step whose inputs, options and versions are unchanged is not run again.

A step's key is the SHA-256 of what decides its result: the verb, its options (each input model or data file by the
SHA-256 of its content, never by its path, so a new timestamped run folder still hits), the versions of mdeploy (its
own source files' hash too, so an edited checkout never reuses stale results) and of every framework installed
(read with importlib.metadata, without importing any of them), and the Python version.

An entry is a folder `CACHE/steps/<key>/` holding the step's artifact (and its companion files, e.g. ONNX external
data) and `meta.json` (the step's report with the run folder written as `${RUN_DIR}`, its verdict, the files and
their hashes). Entries are written into a staging folder and renamed into place, so an interrupted run never leaves a
half-written entry; artifacts are hard-linked (copied across file systems), so a cache hit costs no model copy.
The cache lives beside the run folders (`mdeploy-runs/.cache/`), because the default run folder is new every run.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mdeploy

CACHE_FORMAT = 1
RUN_DIR_MARK = "${RUN_DIR}"
# the distributions whose version can change a step's result; read from metadata, never imported
DISTRIBUTIONS = ("numpy", "onnx", "onnxruntime", "onnxscript", "torch", "tensorflow", "keras", "tf2onnx", "ai-edge-litert",
                 "tensorrt", "scikit-learn")
_CHUNK = 1 << 20
MEMO_LIMIT = 20_000  # remembered file hashes before the memo is trimmed to those a run used
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def dist_version(name: str) -> str | None:
    for candidate in (name, name + "-cpu", name + "-gpu"):
        try:
            return version(candidate)
        except PackageNotFoundError:
            continue
    return None


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """mdeploy, Python and every installed framework that can change a result (without importing any)."""
    found = {"mdeploy": mdeploy.__version__, "python": platform.python_version()}
    for dist in DISTRIBUTIONS:
        v = dist_version(dist)
        if v is not None:
            found[dist] = v
    return found


@lru_cache(maxsize=1)
def tool_fingerprint() -> str:
    """SHA-256 over mdeploy's own source files: a changed checkout (same version number) invalidates the cache."""
    root = Path(mdeploy.__file__).parent
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".json") and "__pycache__" not in p.parts):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


class Hasher:
    """Content hashes of files and folders, remembered by (path, size, mtime, inode) in `CACHE/hashes.json` so that a
    re-run does not read every big model again."""

    def __init__(self, store: Path | None) -> None:
        self.store = store
        self.memo: dict[str, str] = {}
        self.used: set[str] = set()
        self.dirty = False
        if store is not None and store.is_file():
            try:
                self.memo = json.loads(store.read_text())
            except (OSError, ValueError):
                self.memo = {}

    @staticmethod
    def stamp(path: Path) -> str:
        st = path.stat()
        return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"

    def remember(self, path: Path, digest: str) -> None:
        """A file whose hash is known (a cache entry's file, hashed under its staging name before the rename)."""
        stamp = self.stamp(path)
        self.used.add(stamp)
        if self.memo.get(stamp) != digest:
            self.memo[stamp] = digest
            self.dirty = True

    def file(self, path: Path) -> str:
        stamp = self.stamp(path)
        self.used.add(stamp)
        if stamp in self.memo:
            return self.memo[stamp]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        self.memo[stamp] = h.hexdigest()
        self.dirty = True
        return self.memo[stamp]

    def path(self, path: Path) -> str:
        """A file's SHA-256, or a folder's: over its files' relative names and contents."""
        if path.is_dir():
            h = hashlib.sha256()
            for p in sorted(q for q in path.rglob("*") if q.is_file()):
                h.update(p.relative_to(path).as_posix().encode() + b"\0" + self.file(p).encode())
            return h.hexdigest()
        return self.file(path)

    def save(self) -> None:
        if self.store is None:
            return
        current = {k: v for k, v in self.memo.items() if _still(k)}  # files gone (staging, temporary) or changed go
        if len(current) != len(self.memo):
            self.memo, self.dirty = current, True
        if not self.dirty:
            return
        if len(self.memo) > MEMO_LIMIT:  # more files than a memo should hold: keep what this run used
            self.memo = {k: v for k, v in self.memo.items() if k in self.used}
        try:
            self.store.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.store, json.dumps(self.memo))
            self.dirty = False
        except OSError:
            pass  # a memo that cannot be saved only costs hashing again next time


def _still(stamp: str) -> bool:
    """Whether a memo stamp still describes a file on disk (same path, size, mtime and inode)."""
    path = stamp.rsplit("|", 3)[0]
    try:
        return Hasher.stamp(Path(path)) == stamp
    except (OSError, ValueError):
        return False


def key(material: dict[str, Any]) -> str:
    """The cache key of a step: SHA-256 of its canonical JSON, with the tool's fingerprint and versions mixed in."""
    full = {"cache_format": CACHE_FORMAT, "tool": tool_fingerprint(), "versions": versions(), "platform": sys.platform,
            **material}
    return hashlib.sha256(json.dumps(full, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Entry:
    folder: Path
    meta: dict[str, Any]

    @property
    def status(self) -> str:
        return self.meta["status"]

    @property
    def size_bytes(self) -> int | None:
        return self.meta.get("size_bytes")

    def report(self, run_dir: Path) -> dict[str, Any]:
        """The step's report as the original run wrote it, with this run's folder in its paths."""
        return json.loads(self.meta["report"].replace(RUN_DIR_MARK, _json_str(run_dir)))


CACHE_ENV = "MDEPLOY_CACHE_DIR"


def cache_dir(run_dir: Path) -> Path:
    """`$MDEPLOY_CACHE_DIR`, or `.cache/` beside the run folder (default run folders are new every time)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else run_dir.parent / ".cache"


class StepCache:
    """`CACHE/steps/<key>/`: look up, store and restore step results."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hasher = Hasher(root / "hashes.json")
        self.sources: dict[str, dict[str, Any] | None] = {}  # FILE.py:FACTORY -> what it depends on (sources.py)

    def get(self, step_key: str) -> Entry | None:
        """The entry for a key, when it is complete and its files are intact (same hashes as when stored)."""
        folder = self.root / "steps" / step_key
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except (OSError, ValueError):
            return None
        if meta.get("cache_format") != CACHE_FORMAT:
            return None
        try:
            for rel, digest in meta.get("files", {}).items():
                if self.hasher.file(folder / "files" / rel) != digest:
                    return None  # changed in place (e.g. an artifact linked into a run folder was edited)
        except OSError:
            return None
        return Entry(folder, meta)

    def put(self, step_key: str, *, output: Path | None, files: list[str], report: dict[str, Any], status: str,
            seconds: float, run_dir: Path, size_bytes: int | None) -> None:
        """Store a finished step: `files` (names relative to `output`'s folder: the artifact and its companions)."""
        steps = self.root / "steps"
        steps.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{step_key[:16]}.", suffix=".tmp", dir=steps))
        try:
            digests = {}
            for rel in files:
                src = output.parent / rel if output is not None else Path(rel)
                dst = staging / "files" / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                link_or_copy(src, dst)
                for f in ([dst] if dst.is_file() else sorted(p for p in dst.rglob("*") if p.is_file())):
                    digests[f.relative_to(staging / "files").as_posix()] = self.hasher.file(f)
            meta = {"cache_format": CACHE_FORMAT, "status": status, "seconds": seconds, "size_bytes": size_bytes,
                    "artifact": files[0] if files else None, "outputs": files, "files": digests,
                    "report": _with_mark(json.dumps(report, default=str), run_dir)}
            write_atomic(staging / "meta.json", json.dumps(meta))
            final = steps / step_key
            if final.exists():
                shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
            for rel, digest in digests.items():  # the staging names are gone: the hashes hold under the final names
                self.hasher.remember(final / "files" / rel, digest)
        except OSError:
            pass  # a cache that cannot be written only costs running the step again next time
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def restore(self, entry: Entry, output: Path) -> None:
        """Link the entry's artifact (and companions) to `output` (and beside it); each rename is atomic."""
        for rel in entry.meta.get("outputs", []):
            src = entry.folder / "files" / rel
            dst = output.parent / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.exists() and dst.is_file() and src.is_file() and os.path.samefile(src, dst):
                continue
            tmp = dst.parent / f".{dst.name}.{os.getpid()}.tmp"
            try:
                link_or_copy(src, tmp)
                if dst.is_dir() and not dst.is_symlink():
                    shutil.rmtree(dst)
                os.replace(tmp, dst)
            finally:
                if tmp.is_dir():
                    shutil.rmtree(tmp, ignore_errors=True)
                elif tmp.exists():
                    tmp.unlink()

    def save(self) -> None:
        self.hasher.save()


def link_or_copy(src: Path, dst: Path) -> None:
    """A hard link (no bytes copied), or a copy where links cannot be made; folders file by file. An ONNX model's
    external data file is always copied: onnx (1.20 and later) refuses to read a data file with more than one hard
    link (its guard against a link to a file outside the model's folder), so a linked one would break the next step
    that loads the model with its weights (a model past 2 GB, an onnxruntime-genai folder)."""
    data = _external_data(src)
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=lambda s, d: _link_file(s, d, copy=Path(s).resolve() in data))
    else:
        _link_file(src, dst, copy=src.resolve() in data)


def _external_data(src: Path) -> set[Path]:
    """The external data files the ONNX models in `src` (a folder) or beside it (a file) name, resolved."""
    from mdeploy.errors import MdeployError
    from mdeploy.frameworks import onnx_models

    folder = src if src.is_dir() else src.parent
    models = folder.rglob("*.onnx") if src.is_dir() else folder.glob("*.onnx")
    found: set[Path] = set()
    for model in models:
        try:
            names = onnx_models.external_data_files(onnx_models.load_proto(model))
        except (MdeployError, OSError):
            continue
        found.update((model.parent / name).resolve() for name in names)
    return found


def _link_file(src: str | Path, dst: str | Path, copy: bool = False) -> None:
    if not copy:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)


def write_atomic(path: Path, text: str) -> None:
    """Write a text file through a temporary file beside it and a rename: never half-written."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 is for the staging name, not for the report a user reads
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_str(path: Path) -> str:
    return json.dumps(str(path))[1:-1]


def _with_mark(text: str, run_dir: Path) -> str:
    """The report's JSON with the run folder (absolute first, then as written) replaced by ${RUN_DIR}."""
    for form in sorted({_json_str(run_dir.resolve()), _json_str(run_dir)}, key=len, reverse=True):
        text = text.replace(form, RUN_DIR_MARK)
    return text


__all__ = [
    "CACHE_ENV",
    "Entry",
    "Hasher",
    "StepCache",
    "cache_dir",
    "key",
    "link_or_copy",
    "tool_fingerprint",
    "versions",
    "write_atomic",
]
