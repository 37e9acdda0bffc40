"""Bad input to `mdeploy prune`: one error line (+ hint), exit 2, nothing written, inputs untouched."""

from __future__ import annotations

import pytest

from tests.conftest import MODELS, factory

CNN = factory("tiny_cnn")


def _one_error(result) -> list[str]:
    assert result.code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    assert len(lines) <= 2
    return lines


def test_onnx_source_names_what_prune_reads(cli, cnn_onnx, tmp_path):
    lines = _one_error(cli("prune", cnn_onnx, "-o", tmp_path / "x.onnx"))
    assert "FILE.py:FACTORY" in lines[0]
    assert not list(tmp_path.iterdir())


def test_concat_into_grouped_conv_names_the_layer(cli, tmp_path):
    lines = _one_error(cli("prune", f"{MODELS / 'concat_group.py'}:build", "-o", tmp_path / "x.onnx"))
    assert "grouped" in lines[0] and "--ignore" in lines[1]
    assert not list(tmp_path.iterdir())


def test_pruning_that_changes_nothing_is_an_error(cli, tmp_path):
    lines = _one_error(cli("prune", CNN, "-o", tmp_path / "x.onnx", "--ignore", "stem", "--ignore", "blocks"))
    assert "changed nothing" in lines[0]
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
    lines = _one_error(cli("prune", CNN, "-o", tmp_path / "x.onnx", *args))
    assert words in lines[0]
    assert not list(tmp_path.iterdir())


def test_existing_output_needs_force(cli, tmp_path):
    out = tmp_path / "x.onnx"
    out.write_bytes(b"keep")
    lines = _one_error(cli("prune", CNN, "-o", out))
    assert "exists" in lines[0]
    assert out.read_bytes() == b"keep"


def test_output_is_onnx_or_pt2(cli, tmp_path):
    lines = _one_error(cli("prune", CNN, "-o", tmp_path / "x.tflite"))
    assert "*.onnx" in lines[0] and "*.pt2" in lines[0]
    assert not list(tmp_path.iterdir())
