"""TF fixtures: the tiny Keras/SavedModel/TFLite models of fixtures/tf_models.py, built once per session.

Most path tests call mdeploy.api in this process (TensorFlow is imported once, ~8 s); the CLI tests run the
real entry point in a subprocess, as a user would, for exit codes, --json and errors.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

pytest.importorskip("tensorflow", reason="the tensorflow extra is not installed")


@pytest.fixture(scope="session")
def tf_files(tmp_path_factory) -> dict[str, Path]:
    from fixtures import tf_models

    return tf_models.build_tf(tmp_path_factory.mktemp("tf_artifacts"))
