"""What every package test checks the same way: the file set of a package. (A refusal is checked by
`tests.checks.assert_clean_error(result, ..., out=OUT)`, like every verb's.)"""

from __future__ import annotations

from pathlib import Path


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
