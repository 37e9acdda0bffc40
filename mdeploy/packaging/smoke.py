"""`package --smoke-test`: start the real model server on the staged package, prove its answers, time it, stop it.

The same for every target (each one's `server()` says how to start it and how to speak to it):
1. a free port on 127.0.0.1; the server in its own process group (so that it and every worker it forks can be
   stopped together), its stdout/stderr in a log file in a temporary folder (never in the package), its working
   directory there too (whatever a server writes into its cwd does not land in the user's);
2. `ready_url` is polled until it answers 200; a server that exits, or is not ready in time, is a failed step with
   the last lines of its log;
3. every validation input is posted to `predict_url` and the answers are compared with the original model
   (label "server"), through the same comparison as every other check;
4. a bounded burst at each concurrency level (stdlib threads, one keep-alive connection each): p50/p99 latency,
   throughput and errors; and the same request in process on the original runner, so serving overhead shows;
5. the server is stopped in every case (SIGTERM to its group, then SIGKILL), also when mdeploy itself gets Ctrl-C or
   SIGTERM.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mdeploy.core import ModelRef, TensorSpec, Tolerance
from mdeploy.errors import InputError, MdeployError
from mdeploy.interrupts import sigterm_as_interrupt
from mdeploy.packaging.base import Feed, Request, Server, free_port
from mdeploy.progress import ProgressFactory
from mdeploy.reports.report import Report, Step
from mdeploy.runners.base import Runner

LOG_LINES = 20
_ERROR_LINE = re.compile(r"^\s*[\w.]*(Error|Exception)\b.*:")  # ImportError: ..., OSError: [Errno 98] ...
REQUEST_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
IN_PROCESS_RUNS = 20
WARMUP_REQUESTS = 4


class ServerFailed(Exception):
    """The server did not start, or died: the message says how, `log` holds its last lines."""

    def __init__(self, message: str, log: list[str]) -> None:
        super().__init__(message)
        self.log = log


def run(target: Any, request: Request, root: Path, runner: Runner, tolerance: Tolerance, report: Report,
        levels: list[int], requests: int, progress: ProgressFactory) -> None:
    """Start the target's server on `root`, compare its answers with `runner`'s, measure it, stop it (always)."""
    from mdeploy.validation.run import compare

    port = free_port()
    server = target.server(request, root, port)
    smoke: dict[str, Any] = {"server": server_name(server.command), "url": server.predict_url, "levels": [],
                             "in_process_ms": None}
    report.data["smoke_test"] = smoke
    logdir = Path(tempfile.mkdtemp(prefix="mdeploy-smoke-"))
    log_path = logdir / "server.log"
    started = time.perf_counter()
    try:
        with sigterm_as_interrupt(), running(server, log_path, logdir) as process:
            try:
                wait_ready(server, process, log_path)
            except ServerFailed as exc:
                report.steps.append(Step("smoke test: server start", "failed", {"why": str(exc), "log": exc.log},
                                         time.perf_counter() - started))
                return
            smoke["startup_s"] = round(time.perf_counter() - started, 2)
            report.steps.append(Step("smoke test: server start", "done", {"command": server.command},
                                     time.perf_counter() - started))
            http_runner = HttpRunner(request, server, process, log_path)
            with progress("posting the validation inputs", len(request.feeds)) as advance:
                comparison = compare(runner, http_runner, request.feeds, tolerance, label="server", progress=advance)
            report.comparisons.append(comparison)
            if not comparison.passed:
                report.steps.append(Step("smoke test: answers", "failed", {"why": "the server's answers differ from the model's",
                                                                           "log": last_lines(log_path)}))
                return
            feed = request.feeds[0]
            body = server.encode(feed)
            for _ in range(WARMUP_REQUESTS):  # first requests pay for lazy set-up (threads, allocations): not timed
                _request("POST", server.predict_url, body, server.content_type)
            for level in levels:
                with progress(f"burst at concurrency {level}", requests) as advance:
                    smoke["levels"].append(burst(server, body, level, requests, advance))
            smoke["in_process_ms"] = in_process_ms(runner, feed)
            if any(level["errors"] for level in smoke["levels"]):
                report.steps.append(Step("smoke test: burst", "failed", {"why": "some requests failed under load",
                                                                         "log": last_lines(log_path)}))
            if process.poll() is not None:
                report.steps.append(Step("smoke test: server", "failed", {"why": f"the server exited ({process.returncode})",
                                                                          "log": last_lines(log_path)}))
    finally:
        shutil.rmtree(logdir, ignore_errors=True)


def server_name(command: list[str]) -> str:
    """`mlflow models serve` from [python, -m, mlflow, models, serve, -m, DIR, ...]; the program's name otherwise."""
    words = command[2:] if len(command) > 2 and command[1] == "-m" else [Path(command[0]).name, *command[1:]]
    name = []
    for word in words:
        if word.startswith("-"):
            break
        name.append(word)
    return " ".join(name)


@contextmanager
def running(server: Server, log_path: Path, cwd: Path) -> Iterator[subprocess.Popen]:
    """The server process, in its own session and process group; stopped with everything it forked on leaving."""
    env = {**os.environ, **server.env}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(server.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   cwd=cwd, start_new_session=True)
    try:
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group, a grace period, then SIGKILL to whatever of the group is left."""
    pgid = process.pid  # start_new_session: the leader's pid is the group's id
    _signal_group(pgid, signal.SIGTERM)
    try:
        process.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 2.0
    while _group_alive(pgid) and time.monotonic() < deadline:  # workers may outlive the leader a moment
        time.sleep(0.05)
    if _group_alive(pgid) or process.poll() is None:
        _signal_group(pgid, signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + 5.0
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def last_lines(log_path: Path, n: int | None = None) -> list[str]:
    """The log's last `n` lines, after the first error lines that came before them: a server that wraps its workers'
    failures (MLflow's "Command ... returned non zero return code") buries the cause above its own traceback."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return []
    n = n or LOG_LINES
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    tail = lines[-n:]
    causes = [line for line in lines[:-n] if _ERROR_LINE.match(line)]
    return [*dict.fromkeys(causes[:3]), *(["..."] if causes else []), *tail]


def wait_ready(server: Server, process: subprocess.Popen, log_path: Path) -> None:
    """Poll ready_url until it answers 200; ServerFailed when the process exits or the time is up."""
    deadline = time.monotonic() + server.startup_timeout_s
    while True:
        code = process.poll()
        if code is not None:
            raise ServerFailed(f"the server exited with code {code} before it was ready", last_lines(log_path))
        try:
            status, _ = _request("GET", server.ready_url, None, server.content_type, timeout=2.0)
            if status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ServerFailed(f"the server was not ready at {server.ready_url} after {server.startup_timeout_s:.0f} s",
                               last_lines(log_path))
        time.sleep(0.25)


def _request(method: str, url: str, body: bytes | None, content_type: str, timeout: float = REQUEST_TIMEOUT_S,
             connection: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    parts = urllib.parse.urlsplit(url)
    conn = connection or http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, parts.path or "/", body=body, headers={"Content-Type": content_type} if body is not None else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        if connection is None:
            conn.close()


class HttpRunner(Runner):
    """The server as a Runner: each feed posted to predict_url, the answer decoded into outputs by name."""

    def __init__(self, request: Request, server: Server, process: subprocess.Popen, log_path: Path) -> None:
        self._request_info, self._server, self._process, self._log = request, server, process, log_path
        # the model's own file stands for what the server serves (comparisons read an ONNX graph's output kinds from it)
        super().__init__(request.model, "cpu", request.inputs)

    def _load(self) -> None:
        self._specs: list[TensorSpec] = list(self._request_info.inputs)
        self._outputs = [o.name for o in self._request_info.outputs]

    def input_specs(self) -> list[TensorSpec]:
        return self._specs

    def output_names(self) -> list[str]:
        return self._outputs

    def _infer(self, feed: Feed) -> dict[str, np.ndarray]:
        s = self._server
        try:
            status, body = _request("POST", s.predict_url, s.encode(feed), s.content_type)
        except OSError as exc:
            raise MdeployError(f"the server did not answer {s.predict_url}: {exc}") from None
        if status != 200:
            raise InputError(f"the server answered {status}: {body[:300].decode(errors='replace')}")
        try:
            return s.decode(body)
        except Exception as exc:
            raise InputError(f"cannot read the server's answer: {exc}") from None

    @classmethod
    def describe(cls, ref: ModelRef) -> dict[str, Any]:
        return {}


def burst(server: Server, body: bytes, concurrency: int, requests: int, advance: Any = None) -> dict[str, Any]:
    """`requests` POSTs of `body` from `concurrency` threads, each on its own keep-alive connection."""
    parts = urllib.parse.urlsplit(server.predict_url)
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    remaining = [requests]

    def take() -> bool:
        with lock:
            if remaining[0] <= 0:
                return False
            remaining[0] -= 1
            return True

    def client() -> None:
        nonlocal errors
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=REQUEST_TIMEOUT_S)
        try:
            while take():
                start = time.perf_counter()
                try:
                    status, _ = _request("POST", server.predict_url, body, server.content_type, connection=conn)
                    ok = status == 200
                except (OSError, http.client.HTTPException):
                    ok = False
                    conn.close()
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=REQUEST_TIMEOUT_S)
                elapsed = time.perf_counter() - start
                with lock:
                    if ok:
                        latencies.append(elapsed)
                    else:
                        errors += 1
                if advance is not None:
                    advance()
        finally:
            conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(min(concurrency, requests))]
    started = time.perf_counter()
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():  # in short waits: a signal another thread received is handled here within 0.2 s
                t.join(0.2)
    except BaseException:  # Ctrl-C / SIGTERM: the clients stop taking requests at once, not after `requests` more
        with lock:          # of them against a server the caller is about to stop (each a refused connection)
            remaining[0] = 0
        raise
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000.0
    return {
        "concurrency": concurrency, "requests": requests,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
        "throughput_rps": len(latencies) / wall if wall > 0 else 0.0,
        "errors": errors,
    }


def in_process_ms(runner: Runner, feed: Feed, runs: int = IN_PROCESS_RUNS) -> float:
    """Median milliseconds of the same request on the original model in this process (after one warm-up run)."""
    runner.infer(feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runner.infer(feed)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)
