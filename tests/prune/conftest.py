"""Prune fixtures, built once per session: the trained digits CNN as torch weights with its splits."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def digits_torch(tmp_path_factory) -> dict[str, Path]:
    from fixtures import prune_data

    return prune_data.build(tmp_path_factory.mktemp("digits_torch"))
