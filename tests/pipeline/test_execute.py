"""Running a pipeline: the artifact chain through the verbs, the run folder and its manifest, the step cache, errors
inside a step, Ctrl-C/SIGTERM, parallel jobs. Real tiny models: the torch CNN for the full chain (convert included),
the ONNX MLP (built with onnx.helper) where a chain without convert is enough."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fixtures import onnx_graphs
from mdeploy.errors import InputError
from mdeploy.pipeline import execute, spec
from mdeploy.pipeline.plan import Plan
from tests.conftest import MODELS, ROOT

CNN = MODELS / "tiny_cnn.py"


def write(folder: Path, text: str, name: str = "pipeline.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def load(pipeline: Path, run: str) -> Plan:
    return spec.load(pipeline, out=pipeline.parent / "runs" / run)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stray_files(folder: Path) -> list[Path]:
    """Staging files or folders (outputs.atomic_output and cache.py name them `.NAME....tmp`)."""
    return [p for p in folder.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]


def step_status(report, model: str = "cnn") -> dict[str, str]:
    entry = next(m for m in report.data["models"] if m["name"] == model)
    return {s["name"]: s["status"] for s in entry["steps"]}


def labelled(path: Path, model: Path, samples: int, seed: int) -> Path:
    """Inputs for the MLP with `labels`: the float model's own top-1 class (so accuracy is measured, not random)."""
    import onnxruntime as ort

    x = np.random.default_rng(seed).standard_normal((samples, onnx_graphs.SIZES[0])).astype(np.float32)
    logits = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.savez(path, x=x, labels=logits.argmax(1).astype(np.int64))
    return path


@pytest.fixture(scope="module")
def mlp_folder(tmp_path_factory) -> Path:
    """An ONNX MLP and labelled calibration / evaluation data beside it."""
    folder = tmp_path_factory.mktemp("mlp")
    onnx_graphs.mlp(folder / "mlp.onnx")
    onnx_graphs.mlp(folder / "mlp_b.onnx", seed=5)  # another model of the same shape (other weights)
    onnx_graphs.bad_reshape(folder / "bad.onnx")
    labelled(folder / "calib.npz", folder / "mlp.onnx", 64, seed=1)
    labelled(folder / "eval.npz", folder / "mlp.onnx", 128, seed=2)
    return folder


MLP = """\
version: 1
models:
  - name: mlp
    source: mlp.onnx
data:
  calib: calib.npz
  eval: eval.npz
steps:
  - quantize: {mode: static, calib: calib, eval: eval}
  - validate: {data: eval}
  - benchmark: {threads: 1, iterations: 20, warmup: 2}
gates:
  - accuracy-drop <= 0.2
  - cosine >= 0.99
  - size-ratio <= 0.99
  - latency-ratio <= 100
  - p50-ms <= 1000
"""

def models_text(mlp_folder: Path, models: dict[str, str]) -> str:
    """The MLP pipeline with these models (name -> file in mlp_folder), its data files named by absolute path."""
    entries = "".join(f"  - name: {name}\n    source: {mlp_folder / file}\n" for name, file in models.items())
    text = MLP.replace("  - name: mlp\n    source: mlp.onnx\n", entries)
    text = text.replace("calib: calib.npz", f"calib: {mlp_folder / 'calib.npz'}")
    text = text.replace("eval: eval.npz", f"eval: {mlp_folder / 'eval.npz'}")
    return text


FULL = f"""\
version: 1
models:
  - name: cnn
    source: {CNN}:build
    inputs: {{image: 1x3x32x32}}
    dynamic: ["image:0"]
data:
  calib: calib.npz
  eval: eval.npz
steps:
  - convert: {{to: onnx}}
  - quantize: {{mode: static, calib: calib, eval: eval}}
  - validate: {{data: eval}}
  - benchmark: {{threads: 1, iterations: 20, warmup: 2}}
gates:
  - accuracy-drop <= 0.5
  - cosine >= 0.9
  - top1 >= 0.5
  - max-abs <= 100
  - size-ratio <= 0.9
  - latency-ratio <= 100
  - p50-ms <= 1000
  - p99-ms <= 0.000001
"""


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The tiny CNN through convert -> static INT8 -> validate -> benchmark, run once for the module."""
    folder = tmp_path_factory.mktemp("full")
    sys.path.insert(0, str(ROOT))
    from fixtures import pipeline_data

    pipeline_data.write(folder)
    pipeline = write(folder, FULL)
    lines: list[str] = []
    plan = load(pipeline, "first")
    report = execute.run(plan, echo=lines.append)
    return plan, report, lines


def test_the_chain_runs_every_verb_on_the_previous_artifact(full):
    plan, report, lines = full
    (entry,) = report.data["models"]
    assert step_status(report) == {"01-convert": "passed", "02-quantize": "passed", "03-validate": "passed",
                                   "04-benchmark": "passed"}
    folder = plan.run_dir / "cnn"
    convert, quantize = folder / "01-convert.onnx", folder / "02-quantize.onnx"
    assert [a["path"] for a in entry["artifacts"]] == [str(convert), str(quantize)]
    assert entry["baseline"] == str(convert)
    assert [a["size_bytes"] for a in entry["artifacts"]] == [convert.stat().st_size, quantize.stat().st_size]
    # each step's report is the verb's own, and names the artifacts the chain gave it
    reports = {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}
    assert reports["02-quantize"]["source"] == str(convert) and reports["02-quantize"]["output"] == str(quantize)
    assert (reports["03-validate"]["reference"], reports["03-validate"]["candidate"]) == (str(convert), str(quantize))
    assert [m["model"] for m in reports["04-benchmark"]["models"]] == [str(convert), str(quantize)]
    assert reports["02-quantize"]["accuracy"]["samples"] == 32  # proved on the labelled eval data
    assert [c["step"] for c in entry["comparisons"]][-1] == "03-validate"
    assert entry["comparisons"][-1]["reference"] == str(convert) and entry["comparisons"][-1]["candidate"] == str(quantize)
    assert [r["model"] for r in entry["benchmark"]] == [str(convert), str(quantize)]
    assert [s.name for s in report.steps] == ["cnn: 01-convert", "cnn: 02-quantize", "cnn: 03-validate", "cnn: 04-benchmark"]
    assert "[cnn] 02-quantize: running" in lines and any(line.startswith("[cnn] 04-benchmark: passed") for line in lines)
    assert not stray_files(plan.run_dir)


def test_gates_read_the_figures_the_steps_measured(full):
    plan, report, _ = full
    (entry,) = report.data["models"]
    folder = plan.run_dir / "cnn"
    quantize = json.loads((folder / "02-quantize.json").read_text())
    validate = json.loads((folder / "03-validate.json").read_text())
    bench = json.loads((folder / "04-benchmark.json").read_text())["models"]
    gates = {g["metric"]: g for g in entry["gates"]}
    # validate measures accuracy too, on the same two artifacts: the newest figure is the one a gate reads
    assert gates["accuracy-drop"]["measured"] == pytest.approx(validate["accuracy"]["drop"])
    assert validate["accuracy"]["drop"] == pytest.approx(quantize["accuracy"]["drop"])
    assert gates["accuracy-drop"]["step"] == "03-validate"
    outputs = validate["comparisons"][0]["outputs"]
    assert gates["cosine"]["measured"] == pytest.approx(min(o["cosine"] for o in outputs))
    assert gates["max-abs"]["measured"] == pytest.approx(max(o["max_abs_error"] for o in outputs))
    assert gates["cosine"]["step"] == "03-validate"
    sizes = [a["size_bytes"] for a in entry["artifacts"]]
    assert gates["size-ratio"]["measured"] == pytest.approx(sizes[1] / sizes[0])
    assert gates["latency-ratio"]["measured"] == pytest.approx(bench[1]["latency_ms"]["p50"] / bench[0]["latency_ms"]["p50"])
    assert gates["p50-ms"]["measured"] == pytest.approx(bench[1]["latency_ms"]["p50"])
    # every gate is evaluated; the one that cannot hold fails the model and the run, with the figure and the bar
    assert [g["passed"] for g in entry["gates"]] == [True] * 7 + [False]
    assert "p99-ms" in gates["p99-ms"]["reason"] and "<= 1e-06" in gates["p99-ms"]["reason"]
    assert entry["passed"] is False and report.passed is False
    assert all(s.status == "passed" for s in report.steps)  # the steps ran; the gate failed the run


def test_manifest_records_inputs_versions_and_the_plan(full):
    plan, report, _ = full
    manifest = json.loads((plan.run_dir / "manifest.json").read_text())
    pipeline = plan.pipeline
    assert manifest["pipeline"]["sha256"] == sha256(pipeline)
    hashes = {Path(k).resolve(): v for k, v in manifest["inputs_sha256"].items()}
    assert hashes[CNN.resolve()] == sha256(CNN)
    assert hashes[Path(plan.data["eval"]).resolve()] == sha256(Path(plan.data["eval"]))
    assert manifest["versions"]["onnxruntime"] and manifest["versions"]["torch"] and manifest["versions"]["mdeploy"]
    assert manifest["plan"] == json.loads(json.dumps(plan.to_dict()))
    assert manifest["status"] == "failed" and manifest["passed"] is False  # the p99 gate
    assert [s["status"] for s in manifest["models"]["cnn"]["steps"]] == ["passed"] * 4
    saved = json.loads((plan.run_dir / "report.json").read_text())
    assert saved["command"] == "run" and saved["passed"] is False
    assert saved["models"][0]["gates"] == report.data["models"][0]["gates"]


def test_a_rerun_reuses_every_unchanged_step(full):
    plan, report, _ = full
    again = execute.run(load(plan.pipeline, "second"))
    assert step_status(again) == dict.fromkeys(["01-convert", "02-quantize", "03-validate", "04-benchmark"], "cached")
    (first,), (second,) = report.data["models"], again.data["models"]
    new = plan.run_dir.parent / "second" / "cnn"
    for name in ("01-convert.onnx", "02-quantize.onnx"):
        assert sha256(new / name) == sha256(plan.run_dir / "cnn" / name)
    assert [g["measured"] for g in second["gates"]] == [g["measured"] for g in first["gates"]]
    # the cached reports name this run's artifacts, not the first run's
    validate = json.loads((new / "03-validate.json").read_text())
    assert validate["candidate"] == str(new / "02-quantize.onnx")
    assert second["comparisons"][-1]["candidate"] == str(new / "02-quantize.onnx")
    forced = execute.run(load(plan.pipeline, "third"), force=True)
    assert set(step_status(forced).values()) == {"passed"}


def test_a_changed_input_reruns_the_steps_that_read_it(mlp_folder, tmp_path):
    folder = tmp_path
    for name in ("mlp.onnx", "calib.npz", "eval.npz"):
        (folder / name).write_bytes((mlp_folder / name).read_bytes())
    pipeline = write(folder, MLP)
    first = execute.run(load(pipeline, "a"))
    assert set(step_status(first, "mlp").values()) == {"passed"}
    assert first.passed, first.data["models"][0]["gates"]
    (entry,) = first.data["models"]
    assert entry["artifacts"][0] == {"step": "source", "path": str(folder / "mlp.onnx"), "format": "onnx",
                                     "size_bytes": (folder / "mlp.onnx").stat().st_size}
    labelled(folder / "eval.npz", folder / "mlp.onnx", 128, seed=3)  # new eval data: quantize proves on it, validate too
    second = execute.run(load(pipeline, "b"))
    # the benchmark reads only the models, and quantize (calibrated on the unchanged calib data) wrote the same bytes
    assert step_status(second, "mlp") == {"01-quantize": "passed", "02-validate": "passed", "03-benchmark": "cached"}
    runs = folder / "runs"
    assert sha256(runs / "b" / "mlp" / "01-quantize.onnx") == sha256(runs / "a" / "mlp" / "01-quantize.onnx")
    assert second.data["models"][0]["accuracy"]["samples"] == 128
    labelled(folder / "eval.npz", folder / "mlp.onnx", 128, seed=2)  # back to the first data: all three cached again
    third = execute.run(load(pipeline, "c"))
    assert set(step_status(third, "mlp").values()) == {"cached"}
    assert not stray_files(folder)


DRIVER = """
import json, sys
from mdeploy.pipeline import cache, execute, spec
plan = spec.load(sys.argv[1], out=sys.argv[2])
try:
    report = execute.run(plan, echo=lambda line: print(line, file=sys.stderr, flush=True))
except execute.Interrupted as exc:
    print(json.dumps({"interrupted": True, "steps": [[s.name, s.status] for s in exc.report.steps],
                      "tool": cache.tool_fingerprint()}))
    sys.exit(130)
print(json.dumps({"interrupted": False, "steps": [[s.name, s.status] for s in report.steps], "tool": cache.tool_fingerprint(),
                  "torch": "torch" in sys.modules, "onnxruntime": "onnxruntime" in sys.modules}))
"""


def same_tool(first: dict, second: dict) -> None:
    """A cache hit needs the same mdeploy source: skip when it was edited between two runs (a shared dev checkout)."""
    if first["tool"] != second["tool"]:
        pytest.skip("mdeploy's source files changed between the two runs, so the cache rightly missed")


def drive(pipeline: Path, run: str, *, kill_after: str | None = None, delay: float = 0.0) -> tuple[int, dict, str]:
    """`execute.run` in a separate process; with `kill_after`, SIGTERM `delay` s after that echo line appears."""
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(pipeline), str(pipeline.parent / "runs" / run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    err = []
    if kill_after:
        for line in proc.stderr:
            err.append(line)
            if kill_after in line:
                time.sleep(delay)
                proc.send_signal(signal.SIGTERM)
                break
    out, rest = proc.communicate(timeout=300)
    return proc.returncode, json.loads(out) if out.strip() else {}, "".join(err) + rest


def test_a_cached_rerun_loads_no_framework(mlp_folder, tmp_path):
    for name in ("mlp.onnx", "calib.npz", "eval.npz"):
        (tmp_path / name).write_bytes((mlp_folder / name).read_bytes())
    pipeline = write(tmp_path, MLP)
    code, first, err = drive(pipeline, "a")
    assert code == 0, err
    code, second, err = drive(pipeline, "b")
    assert code == 0, err
    same_tool(first, second)
    assert [s for _, s in second["steps"]] == ["cached"] * 3
    assert not second["torch"] and not second["onnxruntime"]


def test_sigterm_keeps_finished_steps_and_leaves_no_partial_file(tmp_path):
    slow = f"""\
    version: 1
    models:
      - name: cnn
        source: {CNN}:build
        inputs: {{image: 1x3x32x32}}
    steps:
      - convert: {{to: onnx}}
      - benchmark: {{duration: 120}}
    """
    pipeline = write(tmp_path, slow)
    # stopped inside convert: no model, no staging folder, no cache entry
    code, out, err = drive(pipeline, "a", kill_after="01-convert: running", delay=0.5)
    assert code == 130 and out["interrupted"], err
    folder = tmp_path / "runs" / "a" / "cnn"
    assert not (folder / "01-convert.onnx").exists()
    assert not stray_files(tmp_path) and not list((tmp_path / "runs" / ".cache" / "steps").glob("*"))
    assert json.loads((tmp_path / "runs" / "a" / "manifest.json").read_text())["status"] == "interrupted"
    assert "Traceback" not in err
    # stopped inside the benchmark: the convert step is kept, in the run folder and in the cache
    code, first, err = drive(pipeline, "b", kill_after="02-benchmark: running", delay=0.5)
    assert code == 130 and first["steps"] == [["cnn: 01-convert", "passed"]], err
    assert (tmp_path / "runs" / "b" / "cnn" / "01-convert.onnx").is_file()
    assert json.loads((tmp_path / "runs" / "b" / "cnn" / "01-convert.json").read_text())["command"] == "convert"
    assert not stray_files(tmp_path)
    code, second, err = drive(pipeline, "c", kill_after="02-benchmark: running", delay=0.2)
    same_tool(first, second)
    assert second["steps"] == [["cnn: 01-convert", "cached"]], err


def test_a_step_error_skips_what_needs_its_model_and_other_models_go_on(mlp_folder, tmp_path):
    text = models_text(mlp_folder, {"mlp": "mlp.onnx", "bad": "bad.onnx"})
    text = text.replace("{mode: static, calib: calib, eval: eval}", "{mode: dynamic}").replace("{data: eval}", "{}")
    pipeline = write(tmp_path, text)
    report = execute.run(load(pipeline, "a"))
    assert set(step_status(report, "mlp").values()) == {"passed"}
    assert step_status(report, "bad") == {"01-quantize": "error", "02-validate": "skipped", "03-benchmark": "skipped"}
    bad = report.data["models"][1]
    error = bad["steps"][0]["error"]
    assert "Reshape" in error and bad["passed"] is False and report.passed is False
    assert json.loads(Path(bad["steps"][0]["report"]).read_text())["error"] in error
    assert "01-quantize wrote no model" in bad["steps"][1]["error"]
    assert all(not g["passed"] and g["reason"] for g in bad["gates"] if g["metric"] != "size-ratio")
    assert not (tmp_path / "runs" / "a" / "bad" / "01-quantize.onnx").exists()
    assert any("bad: 01-quantize error" in n for n in report.notes)


def test_jobs_run_models_in_parallel_processes_into_one_report(mlp_folder, tmp_path):
    pipeline = write(tmp_path, models_text(mlp_folder, {"one": "mlp.onnx", "two": "mlp_b.onnx"}))
    lines: list[str] = []
    threads: set[str] = set()

    def echo(line: str) -> None:
        lines.append(line)
        threads.add(threading.current_thread().name)

    report = execute.run(load(pipeline, "a"), jobs=2, echo=echo)
    assert [m["name"] for m in report.data["models"]] == ["one", "two"]
    assert threading.main_thread().name not in threads  # every line came through the queue from the worker processes
    assert set(step_status(report, "one").values()) == set(step_status(report, "two").values()) == {"passed"}
    assert [len(m["gates"]) for m in report.data["models"]] == [5, 5]
    assert report.passed == all(g["passed"] for m in report.data["models"] for g in m["gates"])
    assert "[one] 01-quantize: running" in lines and "[two] 01-quantize: running" in lines  # echoed from the workers
    manifest = json.loads((tmp_path / "runs" / "a" / "manifest.json").read_text())
    assert manifest["status"] == ("passed" if report.passed else "failed") and set(manifest["models"]) == {"one", "two"}
    one = report.data["models"][0]["artifacts"][-1]["path"]
    assert one.endswith("one/01-quantize.onnx") and Path(one).is_file()


def test_one_job_runs_one_model_and_an_unknown_job_is_bad_input(mlp_folder, tmp_path):
    pipeline = write(tmp_path, models_text(mlp_folder, {"one": "mlp.onnx", "two": "mlp_b.onnx"}))
    with pytest.raises(InputError, match="did you mean 'two'"):
        execute.run(load(pipeline, "a"), job="tow")
    assert not (tmp_path / "runs" / "a").exists()  # nothing ran, nothing was written
    report = execute.run(load(pipeline, "a"), job="two")
    assert [m["name"] for m in report.data["models"]] == ["two"] and report.data["job"] == "two"
    assert not (tmp_path / "runs" / "a" / "one").exists()
    assert (tmp_path / "runs" / "a" / "manifest-two.json").is_file() and (tmp_path / "runs" / "a" / "report-two.json").is_file()


def test_a_missing_input_is_found_before_any_step(mlp_folder, tmp_path):
    for name in ("mlp.onnx", "calib.npz", "eval.npz"):
        (tmp_path / name).write_bytes((mlp_folder / name).read_bytes())
    plan = load(write(tmp_path, MLP), "a")
    os.remove(tmp_path / "eval.npz")
    with pytest.raises(InputError, match="eval.npz"):
        execute.run(plan)
    assert not plan.run_dir.exists()


def test_two_models_with_the_same_source_never_share_a_cached_step(mlp_folder, tmp_path):
    """Same file, same options, other names: each model's reports must name its own artifacts (a shared cache entry
    once gave the second model the first one's benchmark rows, and its p99-ms gate went 'not measured')."""
    pipeline = write(tmp_path, models_text(mlp_folder, {"a": "mlp.onnx", "b": "mlp.onnx"}))
    for run in ("first", "second"):  # the second run is served from the cache
        report = execute.run(load(pipeline, run))
        for model in report.data["models"]:
            folder = f"{os.sep}{model['name']}{os.sep}"
            rows = [row["model"] for row in model["benchmark"]]
            assert rows and folder in rows[-1], (model["name"], rows)  # the current artifact: this model's own file
            assert all(g["measured"] is not None for g in model["gates"]), model["gates"]
