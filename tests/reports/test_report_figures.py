"""The figures a CI summary shows are the report's own numbers (issue 16: report.md showed the INT8 model's max abs
error as 0 and its cosine as 1 while report.json held 3.9e-4 and 0.99989).

A real `mdeploy run` of the tiny CNN: convert, static INT8 quantize, validate, then a package step, whose own
comparison (the packaged model against the artifact it packages: the same file, so 0 error by design) came last and
was shown as the model's error. Report.md and report.html are checked against the validate step's comparison in
report.json, the one the gates judge."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys

import pytest

from mdeploy.reports import svg
from tests.conftest import MODELS, ROOT

PIPELINE = f"""\
version: 1
models:
  - name: cnn
    source: {MODELS / 'tiny_cnn.py'}:build
    inputs: {{image: 1x3x32x32}}
    dynamic: ["image:0"]
data:
  calib: data/calib.npz
  eval: data/eval.npz
steps:
  - convert: {{to: onnx, exporter: torchscript}}
  - quantize: {{mode: static, calib: calib, eval: eval}}
  - validate: {{data: eval}}
  - package: {{target: triton, max-batch-size: 8}}
gates:
  - cosine >= 0.99
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory, cli) -> dict:
    pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="the package step's Triton target (serving extra)")
    folder = tmp_path_factory.mktemp("figures")
    subprocess.run([sys.executable, str(ROOT / "fixtures" / "pipeline_data.py"), str(folder / "data")], check=True,
                   capture_output=True)
    (folder / "pipeline.yaml").write_text(PIPELINE)
    result = cli("run", folder / "pipeline.yaml", "-o", folder / "run", "--report", folder / "report")
    assert result.code == 0, result.stderr
    d = json.loads((folder / "report" / "report.json").read_text())
    (model,) = d["models"]
    validate = [c for c in model["comparisons"] if c["step"] == "03-validate"]
    packaged = [c for c in model["comparisons"] if c["step"] == "04-package"]
    assert validate and packaged and model["comparisons"][-1] is packaged[-1]  # the case: the package step comes last
    outs = [o for c in validate for o in c["outputs"]]
    return {"md": (folder / "report" / "report.md").read_text(), "html": (folder / "report" / "report.html").read_text(),
            "max_abs": max(float(o["max_abs_error"]) for o in outs), "cosine": min(float(o["cosine"]) for o in outs),
            "gate": model["gates"][0]["measured"]}


def test_the_int8_error_is_real_and_the_gate_judged_it(run):
    assert run["max_abs"] > 1e-4 and run["cosine"] < 1.0  # INT8 changes the outputs: a 0 / 1 would be a lie
    assert run["gate"] == pytest.approx(run["cosine"])


def test_markdown_figures_and_changes_show_the_json_numbers(run):
    max_abs, cosine = svg.number(run["max_abs"]), svg.number(run["cosine"], 6)
    figures = run["md"][run["md"].index("## Figures per model"):]
    row = next(line for line in figures.splitlines() if line.startswith("| ✅ | cnn |") and "(baseline)" not in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[8:10] == [cosine, max_abs], row  # was: 1 and 0
    assert f"| cnn | outputs: lowest cosine | 1 | {cosine} | - |" in run["md"]
    assert f"| cnn | outputs: max abs error | 0 | {max_abs} | - |" in run["md"]


def test_html_changes_show_the_json_numbers(run):
    page = run["html"]
    changes = page[page.index("What changed since the baseline"):]
    changes = changes[:changes.index("</table>")]
    cells = [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", changes)]
    assert cells[cells.index("outputs: lowest cosine") + 2] == svg.number(run["cosine"], 6)
    assert cells[cells.index("outputs: max abs error") + 2] == svg.number(run["max_abs"])


@pytest.mark.parametrize(("value", "digits", "shown"), [(0.9999996, 6, "0.9999996"), (0.99989, 6, "0.99989"),
                                                         (1.0, 6, "1"), (3.9e-4, 3, "3.90e-04")])
def test_a_number_close_to_one_is_never_shown_as_one(value, digits, shown):
    assert svg.number(value, digits) == shown
