"""The tiny trained language models the llm tests share, built once per session (fixtures/models/tiny_lm.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("onnxruntime_genai", reason="the llm extra is not installed")
pytest.importorskip("transformers", reason="the llm extra is not installed")

from fixtures.models import tiny_lm
from tests.conftest import run_cli


def _built_once(tmp_path_factory, name: str, **kwargs) -> Path:
    """Train a tiny LM once per test run, also across pytest-xdist workers (they share the base temp folder's parent):
    the first worker trains it under a lock, the others find it."""
    import fcntl
    import os

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    out = root / f"tiny_lm_{name}"
    with open(root / f"tiny_lm_{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "config.json").is_file():
            staging = root / f".tiny_lm_{name}.building"
            tiny_lm.build(staging, **kwargs)
            staging.rename(out)
    return out


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    """The tiny Llama, trained 300 steps: greedy continuations are sentences of its training text."""
    return _built_once(tmp_path_factory, "seed0")


@pytest.fixture(scope="session")
def other_lm_dir(tmp_path_factory) -> Path:
    """Another seed and fewer steps: a model that generates something else (the perturbed candidate)."""
    return _built_once(tmp_path_factory, "seed1", seed=1, steps=120)


@pytest.fixture(scope="session")
def prompts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("\n".join(tiny_lm.PROMPTS) + "\n")
    return path


@pytest.fixture(scope="session")
def eval_text(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "eval.txt"
    path.write_text(tiny_lm.eval_text())
    return path


@pytest.fixture(scope="session")
def genai_fp32(tiny_lm_dir, tmp_path_factory):
    """The tiny LM converted at fp32 through the CLI (validated by generation): (folder, report)."""
    out = tmp_path_factory.mktemp("genai_fp32") / "llm"
    result = run_cli("convert", tiny_lm_dir, "-o", out, "--json")
    assert result.code == 0, result.stderr[-3000:]
    return out, result.json
