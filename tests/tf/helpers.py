"""Helpers the TF tests share."""

from __future__ import annotations

import hashlib
from pathlib import Path


def tree_hash(path: Path) -> str:
    """A digest of a file or a folder's files, to prove inputs are never modified."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        digest.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()
