"""measuring/latency.py: the one way benchmark, prune and distill time a model, on real onnxruntime runners."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from mdeploy.measuring.latency import side_by_side, time_runs


@pytest.fixture(scope="session")
def two_mlps(tmp_path_factory) -> list[Path]:
    from fixtures import onnx_graphs

    out = tmp_path_factory.mktemp("latency")
    return [onnx_graphs.mlp(out / "a.onnx", seed=0), onnx_graphs.mlp(out / "b.onnx", seed=1)]


class Logged:
    """A real runner that writes down its name each time it runs, so that a test can see the turns."""

    def __init__(self, runner, name: str, log: list[str]) -> None:
        self.runner, self.name, self.log = runner, name, log

    def infer(self, feed):
        self.log.append(self.name)
        return self.runner.infer(feed)

    @property
    def last_latency_s(self) -> float:
        return self.runner.last_latency_s


def _runners(paths: list[Path], log: list[str]) -> list[tuple[Logged, dict]]:
    from mdeploy.core import ModelRef
    from mdeploy.registry import open_runner
    from mdeploy.validation import inputs as vinputs

    pairs = []
    for name, path in zip("ab", paths):
        runner = open_runner(ModelRef.parse(str(path)), "cpu", None, 1)
        pairs.append((Logged(runner, name, log), vinputs.random_feed(runner.input_specs(), np.random.default_rng(0))))
    return pairs


def test_models_are_warmed_then_timed_in_turns(two_mlps):
    log: list[str] = []
    turns: list[int] = []

    a, b = time_runs(_runners(two_mlps, log), warmup=2, runs=5, runs_per_turn=2, advance=lambda: turns.append(1))

    assert log[:4] == ["a", "b", "a", "b"]  # warm-up, untimed
    assert log[4:] == ["a", "a", "b", "b", "a", "a", "b", "b", "a", "b"]  # 5 runs each, in turns of at most 2
    assert len(a) == len(b) == 5 and all(s > 0 for s in a + b)
    assert len(turns) == 3


def test_a_duration_times_whole_turns_until_it_has_passed(two_mlps):
    log: list[str] = []
    start = time.perf_counter()

    a, b = time_runs(_runners(two_mlps, log), warmup=0, duration=0.05)

    assert time.perf_counter() - start >= 0.05
    assert len(a) == len(b) >= 1
    assert log == ["a", "b"] * len(a)


def test_a_duration_shorter_than_one_run_still_times_one(two_mlps):
    (a,) = time_runs(_runners(two_mlps[:1], []), warmup=0, duration=1e-9)
    assert len(a) == 1


def test_runs_or_duration_one_of_them(two_mlps):
    pairs = _runners(two_mlps[:1], [])
    with pytest.raises(ValueError):
        time_runs(pairs, warmup=0)
    with pytest.raises(ValueError):
        time_runs(pairs, warmup=0, runs=3, duration=1.0)


def test_side_by_side_reports_median_and_p90_of_each_file(two_mlps):
    rows = side_by_side(two_mlps, threads=1, runs=20, runs_per_turn=5)

    assert [r["runs"] for r in rows] == [20, 20]
    assert all(0 < r["median_ms"] <= r["p90_ms"] for r in rows)
