"""One Report type for every verb, and its renderings (JSON, Markdown, JUnit XML, HTML, rich)."""

from __future__ import annotations

import json
from typing import Any

from mdeploy.reports.report import Report, Step, environment

__all__ = ["Report", "Step", "environment", "schema"]


def schema() -> dict[str, Any]:
    """The published JSON Schema of report.json (shipped in the package as report.schema.json)."""
    from importlib.resources import files  # not at import: every `mdeploy VERB --help` loads this package

    return json.loads(files("mdeploy.reports").joinpath("report.schema.json").read_text(encoding="utf-8"))
