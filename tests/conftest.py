"""Shared test fixtures: real tiny models, built once per session, and a way to drive the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "fixtures" / "models"
sys.path.insert(0, str(ROOT))


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict:
        return json.loads(self.stdout)


def run_cli(*args: str | Path, cwd: Path | None = None, env: dict | None = None) -> CliResult:
    """Run `mdeploy ARGS` as a user would: a separate process through the real entry point."""
    proc = subprocess.run(
        [sys.executable, "-m", "mdeploy", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=600,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def cli():
    return run_cli


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    """Model files built once per session by fixtures/build.py (exported programs, TorchScript, weights)."""
    from fixtures import build

    out = tmp_path_factory.mktemp("artifacts")
    build.build_torch(out)
    return out


def factory(name: str, attr: str = "build") -> str:
    return f"{MODELS / (name + '.py')}:{attr}"


EDGE = MODELS / "edge_cases.py"


@dataclass
class Converted:
    path: Path
    report: dict


@pytest.fixture(scope="session")
def cnn(tmp_path_factory) -> Converted:
    """The tiny CNN exported once through the CLI with a dynamic batch, shared by many tests."""
    out = tmp_path_factory.mktemp("cnn") / "tiny_cnn.onnx"
    result = run_cli("convert", factory("tiny_cnn"), "-o", out, "--dynamic", "image:0", "--json")
    assert result.code == 0, result.stderr
    return Converted(out, result.json)


@pytest.fixture(scope="session")
def cnn_onnx(cnn) -> Path:
    return cnn.path


@pytest.fixture(scope="session")
def encoder(tmp_path_factory, artifacts) -> Converted:
    """The transformer encoder's .pt2 (dynamic batch and sequence) exported once through the CLI."""
    out = tmp_path_factory.mktemp("enc") / "text_encoder.onnx"
    result = run_cli("convert", artifacts / "text_encoder.pt2", "-o", out, "--json")
    assert result.code == 0, result.stderr
    return Converted(out, result.json)


@pytest.fixture(scope="session")
def encoder_onnx(encoder) -> Path:
    return encoder.path
