"""Writing a Report as JSON, Markdown or JUnit XML (chosen by the file's extension)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from mdeploy.errors import InputError
from mdeploy.reports.report import Report


def to_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, default=str)


def _fmt(value: Any, key: str = "") -> str:
    if isinstance(value, float):
        return f"{value:.6f}" if key in ("cosine", "top1_agreement") else f"{value:.3g}"
    return "-" if value is None else str(value)


COLUMNS = [
    ("output", "name"),
    ("max abs", "max_abs_error"),
    ("mean abs", "mean_abs_error"),
    ("max rel", "max_rel_error"),
    ("cosine", "cosine"),
    ("top-1", "top1_agreement"),
    ("NaN/Inf", None),
    ("result", None),
]


def comparison_rows(comparison: Any) -> list[list[str]]:
    rows = []
    for out in comparison.outputs:
        row = []
        for _, key in COLUMNS:
            if key:
                row.append(_fmt(getattr(out, key), key))
        row.append(f"{out.ref_nonfinite}/{out.cand_nonfinite}")
        row.append(("pass" if out.passed else "FAIL: " + "; ".join(out.reasons)) + "".join(f" (warning: {w})" for w in out.warnings))
        rows.append(row)
    return rows


def to_markdown(report: Report) -> str:
    d = report.to_dict()
    lines = [f"# mdeploy {report.command}: {'PASSED' if report.passed else 'FAILED'}", ""]
    for key in ("reference", "candidate", "source", "output", "seed", "inputs_sha256"):
        if key in d:
            lines.append(f"- **{key}**: `{d[key]}`")
    for step in report.steps:
        lines.append(f"- step **{step.name}**: {step.status}")
    for comparison in report.comparisons:
        lines += ["", f"## {comparison.label or 'outputs'} ({comparison.tolerance.describe()})", ""]
        lines.append("| " + " | ".join(c for c, _ in COLUMNS) + " |")
        lines.append("|" + "---|" * len(COLUMNS))
        for row in comparison_rows(comparison):
            lines.append("| " + " | ".join(row) + " |")
        for note in comparison.notes:
            lines.append(f"\n> {note}")
    for note in report.notes:
        lines.append(f"\n> {note}")
    versions = d["environment"]["versions"]
    lines += ["", "## Environment", "", ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    return "\n".join(lines)


def to_junit(report: Report) -> str:
    """One <testcase> per compared output (per input set), failures carrying their reasons."""
    cases = [(c, o) for c in report.comparisons for o in c.outputs]
    failures = sum(1 for _, o in cases if not o.passed) + sum(1 for s in report.steps if s.status == "failed")
    suite = ET.Element("testsuite", name=f"mdeploy.{report.command}", tests=str(len(cases) + len(report.steps)), failures=str(failures), errors="0")
    props = ET.SubElement(suite, "properties")
    for key, value in report.to_dict()["environment"]["versions"].items():
        ET.SubElement(props, "property", name=key, value=str(value))
    for step in report.steps:
        case = ET.SubElement(suite, "testcase", classname=f"mdeploy.{report.command}.steps", name=step.name)
        if step.status == "failed":
            ET.SubElement(case, "failure", message=str(step.details.get("error", "failed")))
    for comparison, out in cases:
        name = f"{out.name} [{comparison.label}]" if comparison.label else out.name
        case = ET.SubElement(suite, "testcase", classname=f"mdeploy.{report.command}", name=name)
        if not out.passed:
            failure = ET.SubElement(case, "failure", message="; ".join(out.reasons))
            failure.text = json.dumps(out.to_dict(), indent=2)
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)


def write(report: Report, path: Path) -> None:
    """Write the report in the format its extension names; written whole or not at all."""
    renderers = {".json": to_json, ".md": to_markdown, ".xml": to_junit}
    if path.suffix not in renderers:
        raise InputError(f"unknown report format '{path.suffix}'", hint="use .json, .md or .xml (JUnit)")
    from mdeploy.outputs import atomic_output

    with atomic_output(path, force=True) as tmp:
        tmp.write_text(renderers[path.suffix](report))
