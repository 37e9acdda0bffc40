"""convert runs the source once at the example inputs, and checks a file it streamed without reading its weights.

The converter's own run of the source (which names the ONNX outputs) is what validation compares against at the
example inputs, when validation's feed there is that same feed; and onnx.checker reads a file save_streamed wrote
with its large weights left unread. Both run convert in-process (mdeploy.verbs.convert.run) on real tiny models;
only our own functions are wrapped, to count what runs.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from mdeploy import conversion
from mdeploy.converters import onnx_writing, torch_to_onnx
from mdeploy.errors import ConversionError
from mdeploy.frameworks import torch_models
from mdeploy.validation import run as validation_run
from mdeploy.verbs import convert
from tests.conftest import factory

CNN = factory("tiny_cnn")


@pytest.fixture
def source_runs(monkeypatch):
    """The batch shape of every input the torch source runs on (the converter's run and validation's)."""
    shapes: list[tuple[int, ...]] = []
    call = torch_models.LoadedTorchModel.call

    def recording_call(self, feed):  # noqa: ANN001, ANN202
        shapes.append(tuple(next(iter(feed.values())).shape))
        return call(self, feed)

    monkeypatch.setattr(torch_models.LoadedTorchModel, "call", recording_call)
    return shapes


def _convert(out, **options) -> object:  # noqa: ANN001
    # --input without the source's own example shape: the example feed is the seeded draw validation also makes
    return convert.run(convert.Options(src=CNN, output=str(out), inputs=["image:3x3x32x32"], dynamic=["image:0"],
                                       force=True, **options))


def _timings(report, step: str) -> dict:  # noqa: ANN001
    return next(s for s in report.steps if s.name.startswith(step)).details["timings"]


def test_the_source_runs_once_at_the_example_inputs(tmp_path, source_runs):
    report = _convert(tmp_path / "cnn.onnx")
    assert report.passed
    assert source_runs == [(3, 3, 32, 32), (5, 3, 32, 32)]  # the converter's run, then batch=5
    assert "the source at example inputs: the converter's run, reused" in _timings(report, "validate")
    assert [c.label for c in report.comparisons] == ["example inputs", "batch=5"]


def test_reused_outputs_judge_exactly_like_running_the_source_again(tmp_path, monkeypatch):
    reused = _convert(tmp_path / "reused.onnx")
    run_reference = validation_run.run_reference
    monkeypatch.setattr(conversion, "run_reference", lambda ref, feeds, known=None: run_reference(ref, feeds))
    again = _convert(tmp_path / "again.onnx")
    assert "run the source at example inputs" in _timings(again, "validate")
    assert [c.to_dict() for c in reused.comparisons] == [c.to_dict() for c in again.comparisons]
    assert reused.steps[-1].details["inputs_sha256"] == again.steps[-1].details["inputs_sha256"]


def test_another_seed_runs_the_source_on_its_own_feed(tmp_path, source_runs):
    report = _convert(tmp_path / "cnn.onnx", seed=7)
    assert report.passed
    assert source_runs == [(3, 3, 32, 32), (3, 3, 32, 32), (5, 3, 32, 32)]  # validation's seed-7 feed is not the converter's
    assert "run the source at example inputs" in _timings(report, "validate")


def test_a_streamed_file_is_checked_without_reading_its_weights(tmp_path):
    out = tmp_path / "cnn.onnx"
    assert _convert(out, no_validate=True).passed
    full = onnx.load(str(out))
    streamed = {t.name for t in full.graph.initializer if len(t.raw_data) >= 1024}
    checked = onnx_writing.weightless(out, streamed)
    assert streamed and not streamed & {t.name for t in checked.graph.initializer}  # their bytes were not read
    assert streamed <= {i.name for i in checked.graph.input}  # each stands as a graph input of its type and shape
    kinds = {i.name: (i.type.tensor_type.elem_type, [d.dim_value for d in i.type.tensor_type.shape.dim])
             for i in checked.graph.input}
    assert all(kinds[t.name] == (t.data_type, list(t.dims)) for t in full.graph.initializer if t.name in streamed)
    onnx.checker.check_model(checked)


def _broken_graph(save):  # noqa: ANN001, ANN202
    """The real streamed save of a graph with a node whose input nothing produces: what onnx.checker exists to catch."""
    import onnx_ir as ir

    def broken(model, out, *args, **kwargs):  # noqa: ANN001, ANN202
        dangling = ir.Value(name="nothing_produces_this", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([1]))
        model.graph.append(ir.node("Relu", [dangling]))
        return save(model, out, *args, **kwargs)

    return broken


@pytest.mark.parametrize("no_validate", [False, True])
def test_a_streamed_file_that_fails_the_checker_is_refused(tmp_path, monkeypatch, no_validate):
    monkeypatch.setattr(torch_to_onnx, "save_streamed", _broken_graph(torch_to_onnx.save_streamed))
    with pytest.raises(ConversionError, match="fails onnx.checker"):
        _convert(tmp_path / "broken.onnx", no_validate=no_validate)
    assert not list(tmp_path.iterdir())  # nothing left behind, staging folder included


def test_same_feed_compares_every_array():
    a = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    assert validation_run.same_feed(a, {"x": a["x"].copy()})
    assert not validation_run.same_feed(a, {"x": a["x"] + 1})
    assert not validation_run.same_feed(a, {"x": a["x"].astype(np.float64)})
    assert not validation_run.same_feed(a, {"x": a["x"].reshape(3, 2)})
    assert not validation_run.same_feed(a, {"y": a["x"]})
