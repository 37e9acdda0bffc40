"""What every package test checks the same way: the file set of a package, and a refusal (exit 2, one `error:` line and
hints, nothing written, no staging folder left)."""

from __future__ import annotations

from pathlib import Path


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def assert_refused(result, out: Path, *words: str) -> None:  # noqa: ANN001
    assert result.code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error:") and all(line.startswith(("error:", "hint:")) for line in lines), result.stderr
    assert "Traceback" not in result.stderr
    assert all(w.lower() in result.stderr.lower() for w in words), result.stderr
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], "a staging folder was left"
