"""convert's validation never holds the source and the result at once, and every result still passes onnx.checker.

These run convert in-process (mdeploy.verbs.convert.run) on real tiny models, so that the runner objects can be
looked at the moment the result is opened: the torch runner has released its module and its weights' memory, and
onnx.checker has already run. Only our own functions are wrapped, to record when they run.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest

from mdeploy import registry
from mdeploy.converters import torch_to_onnx
from mdeploy.core import Format, ModelRef, Tolerance
from mdeploy.errors import ConversionError, ModelLoadError
from mdeploy.frameworks import onnx_models, onnx_skeleton
from mdeploy.validation.inputs import random_feed
from mdeploy.validation.run import compare, compare_to_reference, run_reference
from mdeploy.verbs import convert
from tests.conftest import factory

CNN = factory("tiny_cnn")


@pytest.fixture
def events(monkeypatch):
    """What convert opened and checked, in order; for each torch runner, its parameters (to see them freed)."""
    seen: list[tuple] = []
    open_runner = registry.open_runner

    def recording_open(ref, *args, **kwargs):  # noqa: ANN001, ANN202
        if ref.format == Format.ONNX:
            seen.append(("open result", [r for kind, r, *_ in seen if kind == "open source"]))
        runner = open_runner(ref, *args, **kwargs)
        if ref.format != Format.ONNX:
            seen.append(("open source", runner, list(runner.model.module.state_dict(keep_vars=True).values())))
        return runner

    check = torch_to_onnx._check

    def recording_check(path, *args):  # noqa: ANN001, ANN002, ANN202
        seen.append(("onnx.checker", path))
        check(path, *args)

    monkeypatch.setattr(registry, "open_runner", recording_open)
    monkeypatch.setattr(torch_to_onnx, "_check", recording_check)
    return seen


def _convert(src: str, out, **options) -> object:  # noqa: ANN001
    return convert.run(convert.Options(src=src, output=str(out), **options))


def test_the_source_is_released_and_checked_before_the_result_opens(tmp_path, events):
    report = _convert(CNN, tmp_path / "cnn.onnx", dynamic=["image:0"])
    assert report.passed
    kinds = [e[0] for e in events]
    assert kinds == ["open source", "onnx.checker", "open result"]
    (_, runner, tensors), (_, _path), (_, sources_then) = events
    assert sources_then == [runner]
    assert runner.model is None  # released before the result opened (the runner cannot run again)
    assert tensors and all(t.untyped_storage().nbytes() == 0 for t in tensors)  # its weights' memory is back
    assert [c.label for c in report.comparisons] == ["example inputs", "batch=4"]
    onnx.checker.check_model(str(tmp_path / "cnn.onnx"))


def test_a_module_the_factory_shares_with_its_caller_keeps_its_weights(tmp_path):
    import torch

    shared = tmp_path / "shared_cnn.py"
    shared.write_text(
        f"import sys\nsys.path.insert(0, {str(factory('tiny_cnn').rsplit('/', 1)[0])!r})\n"
        "import tiny_cnn\nMODEL = tiny_cnn.build()\n\ndef build():\n    return MODEL\n"
        "\ndef example_inputs():\n    return tiny_cnn.example_inputs()\n"
    )
    report = _convert(f"{shared}:build", tmp_path / "shared.onnx")
    assert report.passed
    module = next(m for name, m in sys.modules.items() if name.startswith("mdeploy_user_shared_cnn_")).MODEL
    weights = list(module.state_dict().values())
    assert all(w.untyped_storage().nbytes() > 0 for w in weights)
    assert np.isfinite(module(torch.zeros(1, 3, 32, 32)).detach().numpy()).all()


def _broken_save(save):  # noqa: ANN001, ANN202
    """The real streamed save, then a node whose input nothing produces: what onnx.checker exists to catch."""

    def broken(model, out, *args, **kwargs):  # noqa: ANN001, ANN202
        save(model, out, *args, **kwargs)
        proto = onnx.load(str(out))
        proto.graph.node.append(onnx.helper.make_node("Relu", ["nothing_produces_this"], ["dangling"]))
        onnx.save(proto, str(out))

    return broken


@pytest.mark.parametrize("no_validate", [False, True])
def test_a_result_that_fails_the_checker_is_refused_before_it_is_loaded(tmp_path, monkeypatch, events, no_validate):
    monkeypatch.setattr(torch_to_onnx, "save_streamed", _broken_save(torch_to_onnx.save_streamed))
    out = tmp_path / "broken.onnx"
    with pytest.raises(ConversionError, match="fails onnx.checker"):
        _convert(CNN, out, no_validate=no_validate)
    assert "open result" not in [e[0] for e in events]
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing left behind, staging folder included


def test_kept_reference_outputs_compare_exactly_like_running_both(cnn_onnx):
    ref = registry.open_runner(ModelRef.parse(CNN))
    cand = registry.open_runner(ModelRef(cnn_onnx, Format.ONNX))
    feeds = [random_feed(ref.input_specs(), np.random.default_rng(seed)) for seed in (1, 2)]
    tolerance = Tolerance(atol=1e-4, rtol=1e-3)
    both = compare(ref, cand, feeds, tolerance, label="x")
    kept = compare_to_reference(run_reference(ref, feeds), cand, tolerance, label="x")
    assert kept.to_dict() == both.to_dict()
    tight = Tolerance(atol=0.0, rtol=0.0)  # and a failure fails alike
    assert not compare_to_reference(run_reference(ref, feeds), cand, tight).passed
    assert not compare(ref, cand, feeds, tight).passed


def test_the_skeleton_is_the_model_without_its_weights_bytes(cnn_onnx, tmp_path):
    full = onnx.load(str(cnn_onnx))
    skeleton = onnx_skeleton.load_without_weights(cnn_onnx)
    assert onnx_models.graph_inputs(skeleton) == onnx_models.graph_inputs(full)
    assert [o.name for o in skeleton.graph.output] == [o.name for o in full.graph.output]
    assert (skeleton.ir_version, list(skeleton.opset_import)) == (full.ir_version, list(full.opset_import))
    shapes = [(i.name, list(i.dims)) for i in full.graph.initializer]
    assert [(i.name, list(i.dims)) for i in skeleton.graph.initializer] == shapes
    assert skeleton.graph.node == full.graph.node
    big = [i.name for i in full.graph.initializer if len(i.raw_data) >= onnx_skeleton.SKIP_BYTES]
    assert big and all(not i.raw_data for i in skeleton.graph.initializer if i.name in big)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(cnn_onnx.read_bytes()[: cnn_onnx.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="not a valid ONNX model"):
        onnx_skeleton.load_without_weights(truncated)
