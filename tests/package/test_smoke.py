"""mdeploy/packaging/smoke.py, the part every target shares, against a real HTTP server process (a stdlib server
written below, started as the smoke test starts any model server) and a real ONNX model on onnxruntime.

The model computes y = 2x; the server answers 2x (right), 3x (wrong), exits at start, or forks a child that ignores
SIGTERM. Each test checks what the report says and that no process of the server's group is left.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mdeploy.core import ModelRef, TensorSpec, tolerance_for
from mdeploy.packaging import smoke
from mdeploy.packaging.base import Request, Server
from mdeploy.reports.report import Report

SERVER = r'''
import json, os, signal, subprocess, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, factor, mode, pidfile = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
if mode == "die":
    print("loading the model", flush=True)
    print("ImportError: the serving library is broken (test)", flush=True)
    print("Traceback of the wrapper that started the worker", flush=True)
    sys.exit(3)
if mode == "child":  # a worker that ignores SIGTERM, as a stuck one would: only SIGKILL ends it
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    child = subprocess.Popen([sys.executable, "-c", stubborn])
    open(pidfile, "w").write(str(child.pid))
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
started = time.monotonic()

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def _answer(self, code, body):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        ready = time.monotonic() - started > 0.5  # loading takes a moment: the smoke test must wait for it
        self._answer(200 if ready else 503, b"{}")
    def do_POST(self):
        data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        x = data["inputs"]["x"]
        self._answer(200, json.dumps({"predictions": {"y": [[factor * v for v in row] for row in x]}}).encode())

ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''


@pytest.fixture(scope="module")
def double_onnx(tmp_path_factory) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    path = tmp_path_factory.mktemp("smoke") / "double.onnx"
    graph = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["y"])], "double",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
                              [numpy_helper.from_array(np.array(2.0, np.float32), "two")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _target(tmp_path: Path, factor: float, mode: str = "serve", timeout: float = 30.0) -> SimpleNamespace:
    script = tmp_path / "server.py"
    script.write_text(SERVER)

    def server(request: Request, root: Path, port: int) -> Server:
        base = f"http://127.0.0.1:{port}"
        return Server(
            command=[sys.executable, str(script), str(port), str(factor), mode, str(tmp_path / "child.pid")],
            ready_url=f"{base}/ping", predict_url=f"{base}/invocations",
            encode=lambda feed: json.dumps({"inputs": {k: v.tolist() for k, v in feed.items()}}).encode(),
            decode=lambda body: {k: np.asarray(v, np.float32) for k, v in json.loads(body)["predictions"].items()},
            startup_timeout_s=timeout,
        )

    return SimpleNamespace(server=server)


def _run(double_onnx: Path, target: SimpleNamespace, tmp_path: Path, levels=(1, 3), requests: int = 12) -> Report:
    from mdeploy.runners.onnx_runner import OnnxRuntimeRunner

    ref = ModelRef.parse(str(double_onnx))
    runner = OnnxRuntimeRunner(ref)
    rng = np.random.default_rng(0)
    request = Request(model=ref, inputs=runner.input_specs(), outputs=[TensorSpec("y", ("batch", 4))], name="double",
                      version=1, max_batch_size=None, instances=1,
                      feeds=[{"x": rng.standard_normal((2, 4)).astype(np.float32)} for _ in range(3)])
    report = Report(command="package")
    smoke.run(target, request, tmp_path, runner, tolerance_for("fp32"), report, list(levels), requests,
              lambda description, total: _Progress())
    return report


class _Progress:
    def __enter__(self):  # noqa: ANN204
        return lambda: None

    def __exit__(self, *exc: object) -> None:
        return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state


def _servers_of(tmp_path: Path) -> list[int]:
    needle = str(tmp_path / "server.py").encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "cmdline").read_bytes() and _alive(int(entry.name)):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_answers_compared_bursts_measured_and_the_server_stopped(double_onnx, tmp_path):
    report = _run(double_onnx, _target(tmp_path, 2.0), tmp_path)
    assert [s.status for s in report.steps] == ["done"], report.steps
    (comparison,) = report.comparisons
    assert comparison.label == "server" and comparison.passed
    data = report.data["smoke_test"]
    assert data["url"].startswith("http://127.0.0.1:") and data["url"].endswith("/invocations")
    assert [level["concurrency"] for level in data["levels"]] == [1, 3]
    for level in data["levels"]:
        assert set(level) == {"concurrency", "requests", "p50_ms", "p99_ms", "throughput_rps", "errors"}
        assert level["requests"] == 12 and level["errors"] == 0
        assert 0 < level["p50_ms"] <= level["p99_ms"] and level["throughput_rps"] > 0
    assert data["in_process_ms"] > 0 and data["startup_s"] >= 0.5  # it waited for /ping's 200
    assert _servers_of(tmp_path) == []


def test_wrong_answers_fail_the_comparison_without_a_burst(double_onnx, tmp_path):
    report = _run(double_onnx, _target(tmp_path, 3.0), tmp_path)
    (comparison,) = report.comparisons
    assert not comparison.passed and not report.passed
    failed = [s for s in report.steps if s.status == "failed"]
    assert [s.name for s in failed] == ["smoke test: answers"]
    assert report.data["smoke_test"]["levels"] == []
    assert _servers_of(tmp_path) == []


def test_a_server_that_exits_fails_with_the_cause_above_its_last_lines(double_onnx, tmp_path, monkeypatch):
    monkeypatch.setattr(smoke, "LOG_LINES", 1)  # the cause line is then above the tail, as under a long traceback
    report = _run(double_onnx, _target(tmp_path, 2.0, mode="die"), tmp_path)
    (step,) = report.steps
    assert step.status == "failed" and "exited with code 3" in step.details["why"]
    assert step.details["log"] == ["ImportError: the serving library is broken (test)", "...",
                                   "Traceback of the wrapper that started the worker"]
    assert report.comparisons == [] and not report.passed


def test_a_server_never_ready_times_out(double_onnx, tmp_path):
    report = _run(double_onnx, _target(tmp_path, 2.0, timeout=0.2), tmp_path)  # /ping answers 503 for 0.5 s
    (step,) = report.steps
    assert step.status == "failed" and "not ready" in step.details["why"]
    assert _servers_of(tmp_path) == []


def test_a_server_and_a_worker_that_ignore_sigterm_are_killed(double_onnx, tmp_path, monkeypatch):
    monkeypatch.setattr(smoke, "STOP_GRACE_S", 1.0)
    report = _run(double_onnx, _target(tmp_path, 2.0, mode="child"), tmp_path, levels=(1,), requests=4)
    assert report.passed
    child = int((tmp_path / "child.pid").read_text())
    assert not _alive(child)  # the worker was in the server's process group: SIGKILL reached it too
    assert _servers_of(tmp_path) == []


def test_server_names():
    assert smoke.server_name([sys.executable, "-m", "mlflow", "models", "serve", "-m", "/x", "-p", "1"]) == "mlflow models serve"
    assert smoke.server_name(["/usr/bin/tritonserver", "--model-repository", "/x"]) == "tritonserver"
