"""Bad input to `mdeploy prune`: one error line (+ hint), exit 2, nothing written, inputs untouched."""

from __future__ import annotations

import pytest

from tests.checks import assert_clean_error
from tests.conftest import MODELS, factory

CNN = factory("tiny_cnn")


def test_onnx_source_names_what_prune_reads(cli, cnn_onnx, tmp_path):
    result = cli("prune", cnn_onnx, "-o", tmp_path / "x.onnx")
    error = assert_clean_error(result)
    assert "FILE.py:FACTORY" in error
    assert not list(tmp_path.iterdir())


def test_concat_into_grouped_conv_names_the_layer(cli, tmp_path):
    result = cli("prune", f"{MODELS / 'concat_group.py'}:build", "-o", tmp_path / "x.onnx")
    error = assert_clean_error(result)
    assert "grouped" in error and "hint: " in result.stderr and "--ignore" in result.stderr.splitlines()[1]
    assert not list(tmp_path.iterdir())


def test_pruning_that_changes_nothing_is_an_error(cli, tmp_path):
    result = cli("prune", CNN, "-o", tmp_path / "x.onnx", "--ignore", "stem", "--ignore", "blocks")
    error = assert_clean_error(result)
    assert "changed nothing" in error
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("args,words", [
    (["--sparsity", "0.5", "--target-macs", "0.4"], "not both"),
    (["--method", "unstructured", "--target-macs", "0.4"], "MACs"),
    (["--sparsity", "1.5"], "--sparsity: expected a number >= 0 and < 1, got 1.5"),
    (["--ignore", "nosuch"], "no module"),
    (["--target-macs", "0.4", "--head-sparsity", "0.5"], "keeps heads whole"),
    (["--method", "unstructured", "--head-sparsity", "0.5"], "--method structured"),
    (["--head-sparsity", "0.5"], "no attention with separate q/k/v"),
    (["--importance", "taylor"], "needs data"),  # the residual CNN has no heads to remove
])
def test_bad_options(cli, tmp_path, args, words):
    result = cli("prune", CNN, "-o", tmp_path / "x.onnx", *args)
    error = assert_clean_error(result)
    assert words in error
    assert not list(tmp_path.iterdir())


def test_existing_output_needs_force(cli, tmp_path):
    out = tmp_path / "x.onnx"
    out.write_bytes(b"keep")
    result = cli("prune", CNN, "-o", out)
    error = assert_clean_error(result)
    assert "exists" in error
    assert out.read_bytes() == b"keep"


def test_output_is_onnx_or_pt2(cli, tmp_path):
    result = cli("prune", CNN, "-o", tmp_path / "x.tflite")
    error = assert_clean_error(result)
    assert "*.onnx" in error and "*.pt2" in error
    assert not list(tmp_path.iterdir())
