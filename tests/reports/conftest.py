"""A run report in the layout of the issue-8 contract, built from real verb runs on the tiny ONNX MLP (no torch):
quantize (dynamic INT8, accuracy against labels), validate float vs INT8, benchmark both side by side.

Two models: `mlp` passes its gates; `mlp-wrong` is a copy whose candidate is the MLP with one layer scaled (a
model that is wrong from there on), so its validation fails and its accuracy gate fails for real."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _model(name: str, folder: Path, fp32: Path, data: Path, labels: Path, candidate_from: Path | None) -> dict[str, Any]:
    """One model of a run: real quantize / validate / benchmark reports, arranged as the executor arranges them."""
    from mdeploy.verbs import benchmark, quantize, validate

    folder.mkdir()
    baseline = folder / "01-convert.onnx"
    baseline.write_bytes(fp32.read_bytes())
    int8 = folder / "02-quantize.onnx"
    source = candidate_from or baseline
    q = quantize.run(quantize.Options(src=str(source), output=str(int8), mode="dynamic", eval_data=str(data), labels=str(labels)))
    v = validate.run(validate.Options(reference=str(baseline), candidate=str(int8), data=str(data), precision="int8"))
    b = benchmark.run(benchmark.Options(models=[str(baseline), str(int8)], iterations=60, warmup=3, threads=1))
    qd, vd, bd = q.to_dict(), v.to_dict(), b.to_dict()
    accuracy = qd.get("accuracy")
    if accuracy and candidate_from is not None:  # the float side is the baseline's accuracy (1.0: labels are its argmax)
        accuracy = {**accuracy, "reference": 1.0, "drop": 1.0 - accuracy["candidate"]}
    lat = bd["models"]
    cos = min(float(o["cosine"]) for o in vd["comparisons"][0]["outputs"])
    gates = [
        ("accuracy-drop", "<=", 0.05, accuracy["drop"] if accuracy else None),
        ("cosine", ">=", 0.99, cos),
        ("size-ratio", "<=", 0.7, lat[1]["ratio_to_first"]["size"]),
        ("p99-ms", "<=", 1000.0, lat[1]["latency_ms"]["p99"]),
        ("top1", ">=", 0.9, None),  # never measured: no classifier output judged in this report
    ]
    gate_rows = []
    for metric, op, bar, measured in gates:
        ok = measured is not None and (measured <= bar if op == "<=" else measured >= bar)
        reason = None if measured is not None else "top1 was never measured: add a validate step with class scores"
        gate_rows.append({"gate": f"{metric} {op} {bar:g}", "metric": metric, "op": op, "bar": bar, "measured": measured,
                          "passed": ok, "reason": reason})
    # the "top1" gate fails on purpose in the failing model only; in the passing one it is left out
    if candidate_from is None:
        gate_rows = gate_rows[:-1]
    steps = [
        {"name": "01-convert", "verb": "convert", "status": "cached", "seconds": 0.01, "report": str(folder / "01-convert.json"),
         "error": None},
        {"name": "02-quantize", "verb": "quantize", "status": "passed" if q.passed else "failed",
         "seconds": qd["steps"][0].get("seconds", 0.1), "report": str(folder / "02-quantize.json"), "error": None},
        {"name": "03-validate", "verb": "validate", "status": "passed" if v.passed else "failed", "seconds": 0.2,
         "report": str(folder / "03-validate.json"), "error": None},
        {"name": "04-benchmark", "verb": "benchmark", "status": "passed", "seconds": sum(r["seconds"] for r in lat),
         "report": str(folder / "04-benchmark.json"), "error": None},
    ]
    return {
        "name": name,
        "passed": all(g["passed"] for g in gate_rows) and all(s["status"] in ("passed", "cached") for s in steps),
        "baseline": str(baseline),
        "artifacts": [{"step": "01-convert", "path": str(baseline), "format": "onnx", "size_bytes": baseline.stat().st_size},
                      {"step": "02-quantize", "path": str(int8), "format": "onnx", "size_bytes": int8.stat().st_size}],
        "steps": steps,
        "comparisons": [{"step": "03-validate", "reference": str(baseline), "candidate": str(int8), **c}  # as execute.py
                        for c in vd["comparisons"]],
        "accuracy": accuracy,
        "benchmark": lat,
        "gates": gate_rows,
    }


def run_report(models: list[dict[str, Any]], run_dir: Path, pipeline: Path, inputs: dict[str, str]):
    from mdeploy.reports.report import Report, Step

    steps = [Step(f"{m['name']}: {s['name']}", s["status"], {"error": s["error"]} if s["error"] else {}, s["seconds"])
             for m in models for s in m["steps"]]
    data = {"pipeline": {"path": str(pipeline), "sha256": _sha(pipeline)}, "run_dir": str(run_dir), "models": models,
            "inputs_sha256": inputs}
    return Report(command="run", steps=steps, data=data)


@pytest.fixture(scope="session")
def run_models(tmp_path_factory) -> dict[str, Any]:
    """{"passing": model dict, "failing": model dict, "dir": run folder, "pipeline": path, "inputs": hashes}."""
    from fixtures import onnx_graphs

    root = tmp_path_factory.mktemp("run")
    src = tmp_path_factory.mktemp("src")
    fp32 = onnx_graphs.mlp(src / "mlp.onnx")
    wrong = onnx_graphs.mlp(src / "mlp_wrong.onnx", seed=3)
    data = onnx_graphs.mlp_data(src / "eval.npz", samples=64)
    import onnxruntime as ort

    session = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    with np.load(data) as arrays:
        logits = session.run(None, {"x": arrays["x"]})[0]
    labels = src / "labels.npy"
    np.save(labels, logits.argmax(-1))
    pipeline = src / "pipeline.yaml"
    pipeline.write_text("version: 1\n# the pipeline these models stand for (the report only records its hash)\n")
    return {
        "passing": _model("mlp", root / "mlp", fp32, data, labels, None),
        "failing": _model("mlp-wrong", root / "mlp-wrong", fp32, data, labels, wrong),
        "dir": root,
        "pipeline": pipeline,
        "inputs": {str(fp32): _sha(fp32), str(data): _sha(data), str(labels): _sha(labels)},
    }


@pytest.fixture(scope="session")
def passing_report(run_models):
    return run_report([run_models["passing"]], run_models["dir"], run_models["pipeline"], run_models["inputs"])


@pytest.fixture(scope="session")
def mixed_report(run_models):
    models = [run_models["passing"], run_models["failing"]]
    return run_report(models, run_models["dir"], run_models["pipeline"], run_models["inputs"])
