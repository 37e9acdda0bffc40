"""JUnit XML, the format every CI shows as tests: GitLab's `artifacts:reports:junit`, GitHub's JUnit reporters.

A verb's report is one <testsuite> with one <testcase> per compared output. A run's report is <testsuites> with one
<testsuite> per model and, inside it, one <testcase> per gate, per validated output and per step, all with
`classname="mdeploy.<model>"` so that reporters group them by model. A failed gate's <failure> carries the
measured value and the bar; a step that errored is an <error>; a skipped step is <skipped/>. The suite's
<properties> hold the tool and framework versions and the hashes of the files the run read.
"""

from __future__ import annotations

import json
from typing import Any
from xml.etree import ElementTree as ET

from mdeploy.reports import svg, view


def verb(d: dict[str, Any]) -> str:
    """A single verb's report: one <testcase> per compared output (per input set), failures carrying their reasons."""
    cases = [(c, o) for c in d.get("comparisons", []) for o in c.get("outputs", [])]
    steps = d.get("steps", [])
    failures = sum(1 for _, o in cases if not o.get("passed")) + sum(1 for s in steps if s.get("status") == "failed")
    suite = ET.Element("testsuite", name=f"mdeploy.{d['command']}", tests=str(len(cases) + len(steps)),
                       failures=str(failures), errors="0")
    props = ET.SubElement(suite, "properties")
    for key, value in d.get("environment", {}).get("versions", {}).items():
        ET.SubElement(props, "property", name=key, value=str(value))
    for step in steps:
        case = ET.SubElement(suite, "testcase", classname=f"mdeploy.{d['command']}.steps", name=step["name"])
        if step.get("status") == "failed":
            ET.SubElement(case, "failure", message=str(step.get("details", {}).get("error", "failed")))
    for comparison, out in cases:
        name = f"{out['name']} [{comparison['label']}]" if comparison.get("label") else out["name"]
        case = ET.SubElement(suite, "testcase", classname=f"mdeploy.{d['command']}", name=name)
        if not out.get("passed"):
            failure = ET.SubElement(case, "failure", message="; ".join(out.get("reasons", [])))
            failure.text = json.dumps({k: v for k, v in out.items() if k != "abs_error_histogram"}, indent=2)
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)


def _bar(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def _seconds(value: Any) -> str:
    return f"{view.as_float(value) or 0.0:.3f}"


def _gate_case(suite: ET.Element, classname: str, gate: dict[str, Any]) -> str:
    case = ET.SubElement(suite, "testcase", classname=classname, name=f"gate: {gate.get('gate')}")
    if gate.get("passed"):
        return "pass"
    measured = view.as_float(gate.get("measured"))
    shown = svg.number(measured, 6) if measured is not None else "not measured"
    message = f"{gate.get('metric')} = {shown}; bar: {gate.get('op')} {_bar(gate.get('bar'))}"
    failure = ET.SubElement(case, "failure", type="gate", message=message + (f"; {gate['reason']}" if gate.get("reason") else ""))
    failure.text = json.dumps(gate, indent=2)
    return "failure"


def _output_cases(suite: ET.Element, classname: str, comparison: dict[str, Any]) -> list[str]:
    results = []
    prefix = " ".join(p for p in (comparison.get("step"), comparison.get("label")) if p)
    for out in comparison.get("outputs", []):
        name = f"output: {prefix + ' ' if prefix else ''}{out.get('name')}"
        case = ET.SubElement(suite, "testcase", classname=classname, name=name)
        if out.get("passed"):
            results.append("pass")
            continue
        failure = ET.SubElement(case, "failure", type="validation", message="; ".join(out.get("reasons", [])) or "failed")
        failure.text = json.dumps({k: v for k, v in out.items() if k != "abs_error_histogram"}, indent=2)
        results.append("failure")
    return results


def _step_case(suite: ET.Element, classname: str, step: dict[str, Any]) -> str:
    case = ET.SubElement(suite, "testcase", classname=classname, name=f"step: {step.get('name')}",
                         time=_seconds(step.get("seconds")))
    status = step.get("status")
    if status == "error":
        ET.SubElement(case, "error", type="step", message=str(step.get("error") or "the step did not finish"))
        return "error"
    if status == "failed":
        ET.SubElement(case, "failure", type="step", message=str(step.get("error") or "the step's check failed"))
        return "failure"
    if status == "skipped":
        ET.SubElement(case, "skipped", message=str(step.get("error") or "not run"))
        return "skipped"
    return "pass"


def run(d: dict[str, Any]) -> str:
    """A run's report: <testsuites>, one <testsuite> per model."""
    root = ET.Element("testsuites", name="mdeploy run")
    totals = {"tests": 0, "failure": 0, "error": 0, "skipped": 0}
    # a run records every installed framework in data["versions"]; the environment has those this process imported
    versions = {**(d.get("versions") or {}), **(d.get("environment") or {}).get("versions", {})}
    pipeline = d.get("pipeline") or {}
    total_time = 0.0
    for model in view.models(d):
        name = str(model.get("name"))
        classname = f"mdeploy.{name}"
        seconds = sum(view.as_float(s.get("seconds")) or 0.0 for s in model.get("steps", []))
        total_time += seconds
        suite = ET.SubElement(root, "testsuite", name=name, time=f"{seconds:.3f}")
        props = ET.SubElement(suite, "properties")
        for key, value in (("pipeline", pipeline.get("path")), ("pipeline_sha256", pipeline.get("sha256")),
                           ("run_dir", d.get("run_dir")), ("baseline", model.get("baseline"))):
            if value:
                ET.SubElement(props, "property", name=key, value=str(value))
        for key, value in {**versions, **(model.get("environment") or {}).get("versions", {})}.items():
            ET.SubElement(props, "property", name=f"version.{key}", value=str(value))
        for path, digest in (d.get("inputs_sha256") or {}).items():
            ET.SubElement(props, "property", name=f"sha256.{path}", value=str(digest))
        results = [_gate_case(suite, classname, g) for g in model.get("gates", [])]
        for comparison in model.get("comparisons", []):
            results += _output_cases(suite, classname, comparison)
        results += [_step_case(suite, classname, s) for s in model.get("steps", [])]
        if not model.get("passed") and not {"failure", "error"} & set(results):  # a verdict no case above explains
            case = ET.SubElement(suite, "testcase", classname=classname, name="model verdict")
            ET.SubElement(case, "failure", type="model", message=f"{name} did not pass; see report.json")
            results.append("failure")
        counts = {k: results.count(k) for k in ("failure", "error", "skipped")}
        suite.set("tests", str(len(results)))
        suite.set("failures", str(counts["failure"]))
        suite.set("errors", str(counts["error"]))
        suite.set("skipped", str(counts["skipped"]))
        totals["tests"] += len(results)
        for k, v in counts.items():
            totals[k] += v
    root.set("tests", str(totals["tests"]))
    root.set("failures", str(totals["failure"]))
    root.set("errors", str(totals["error"]))
    root.set("skipped", str(totals["skipped"]))
    root.set("time", f"{total_time:.3f}")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)
