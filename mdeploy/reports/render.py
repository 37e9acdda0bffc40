"""Writing a Report: JSON (with a published schema), Markdown, JUnit XML and a self-contained HTML page.

`write(report, path)` picks the rendering from the extension (`validate --report x.md`); `write_all(report, folder)`
writes all four (`mdeploy run --report DIR`, `mdeploy report merge ... -o DIR`). Every rendering reads the report's
JSON form, so a report read back from disk renders exactly like one just made. Each file is written whole or not at
all, and every rendering is made before the first file is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mdeploy.errors import InputError
from mdeploy.reports import html, junit, markdown
from mdeploy.reports.markdown import COLUMNS, comparison_rows
from mdeploy.reports.report import Report

__all__ = ["COLUMNS", "FILES", "comparison_rows", "to_html", "to_json", "to_junit", "to_markdown", "write", "write_all"]

# The files of `--report DIR`, by rendering.
FILES = {"json": "report.json", "xml": "report.xml", "md": "report.md", "html": "report.html"}


def _dict(report: Report | dict[str, Any]) -> dict[str, Any]:
    return report if isinstance(report, dict) else report.to_dict()


def to_json(report: Report | dict[str, Any]) -> str:
    return json.dumps(_dict(report), indent=2, default=str)


def to_markdown(report: Report | dict[str, Any]) -> str:
    d = _dict(report)
    return markdown.run(d) if d.get("command") == "run" else markdown.verb(d)


def to_junit(report: Report | dict[str, Any]) -> str:
    d = _dict(report)
    return junit.run(d) if d.get("command") == "run" else junit.verb(d)


def to_html(report: Report | dict[str, Any]) -> str:
    return html.page(_dict(report))


RENDERERS = {".json": to_json, ".md": to_markdown, ".xml": to_junit, ".html": to_html}


def _write_text(path: Path, text: str, force: bool) -> None:
    from mdeploy.outputs import atomic_output

    with atomic_output(path, force=force) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write(report: Report, path: Path) -> None:
    """Write the report in the format its extension names; written whole or not at all."""
    if path.suffix not in RENDERERS:
        raise InputError(f"unknown report format '{path.suffix}'", hint="use .json, .md, .xml (JUnit) or .html")
    _write_text(path, RENDERERS[path.suffix](report), force=True)


def write_all(report: Report, folder: Path, *, force: bool = True) -> dict[str, Path]:
    """Write report.json, report.xml, report.md and report.html into `folder` (created when missing); returns
    {"json": path, "xml": ..., "md": ..., "html": ...}. With force=False an existing file is an error, found before
    anything is written."""
    from mdeploy.outputs import check_output

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"report folder is a file: {folder}", hint="give a folder for the reports")
    d = report.to_dict()  # once: the environment and verdict are the same in every rendering
    texts = {kind: RENDERERS["." + kind](d) for kind in FILES}
    paths = {kind: folder / name for kind, name in FILES.items()}
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the report folder {folder}: {exc.strerror}") from None
    for path in paths.values():
        check_output(path, force)
    for kind, path in paths.items():
        _write_text(path, texts[kind], force)
    return paths
