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
