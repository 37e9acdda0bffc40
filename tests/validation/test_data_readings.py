"""How a data file is read (issue 16.1): a stack of samples along axis 0 is batched; arrays that fit the model's
declared inputs as they are (a `[1, S]` mask beside `[2, S, D]` queries, TopK's `k`, a scalar temperature) are one
feed, run once with a note; neither is exit 2 naming the input and both readings. Real ONNX graphs, real
onnxruntime; the same reading for every verb that takes data (validate, quantize's calibration, the proof)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fixtures.onnx_graphs import small_graph
from mdeploy import api
from mdeploy.core import TensorSpec
from mdeploy.errors import InputError
from mdeploy.quantization.calibration import batches_from_data
from mdeploy.validation.inputs import feeds_from_data
from tests.checks import assert_clean_error
from tests.conftest import run_cli

FLOAT, INT64 = 1, 7


def attention_mask(path: Path) -> Path:
    """q[2, S, 4] * mask[1, S] (the mask broadcast over the batch): the arrays disagree on axis 0 by design."""
    from onnx import helper, numpy_helper

    return small_graph(path, [helper.make_node("Unsqueeze", ["mask", "axes"], ["m3"]), helper.make_node("Mul", ["q", "m3"], ["y"])],
                 [("q", FLOAT, [2, "S", 4]), ("mask", FLOAT, [1, "S"])], [("y", FLOAT, [2, "S", 4])],
                 [numpy_helper.from_array(np.array([2], np.int64), "axes")])


def top_k(path: Path) -> Path:
    """TopK with `k` an input: x[3, 4] beside k[1]."""
    from onnx import helper

    return small_graph(path, [helper.make_node("TopK", ["x", "k"], ["values", "indices"])],
                 [("x", FLOAT, [3, 4]), ("k", INT64, [1])], [("values", FLOAT, [3, "K"]), ("indices", INT64, [3, "K"])])


def temperature(path: Path) -> Path:
    """x[batch, 3] / t with t a scalar input (rank 0: no sample axis)."""
    from onnx import helper

    return small_graph(path, [helper.make_node("Div", ["x", "t"], ["y"])], [("x", FLOAT, ["batch", 3]), ("t", FLOAT, [])],
                 [("y", FLOAT, ["batch", 3])])


def relu(path: Path, batch: int | str = "batch") -> Path:
    from onnx import helper

    return small_graph(path, [helper.make_node("Relu", ["x"], ["y"])], [("x", FLOAT, [batch, 4])], [("y", FLOAT, [batch, 4])])


def _data(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _notes(report) -> list[str]:
    return [n for c in report.comparisons for n in c.notes]


def test_a_mask_that_does_not_share_the_batch_is_one_feed_run_once(tmp_path):
    """Was: 'data arrays have different numbers of samples along axis 0: [1, 2]', exit 2, against itself."""
    model = attention_mask(tmp_path / "attn.onnx")
    rng = np.random.default_rng(0)
    data = _data(tmp_path / "d.npz", q=rng.standard_normal((2, 5, 4)).astype(np.float32), mask=np.ones((1, 5), np.float32))
    result = run_cli("validate", model, model, "--data", data)
    assert result.code == 0, result.stderr
    assert "note: --data read as one feed, run once" in result.stdout
    assert "2 (q), 1 (mask)" in result.stdout  # why it is not a stack of samples
    report = api.validate(str(model), str(model), data=str(data))
    assert report and report.comparisons[0].outputs[0].total == 2 * 5 * 4  # the whole file, once


@pytest.mark.parametrize("build, arrays", [
    (top_k, {"x": np.arange(12, dtype=np.float32).reshape(3, 4), "k": np.array([2], np.int64)}),
    (temperature, {"x": np.ones((2, 3), np.float32), "t": np.array(0.5, np.float32)}),
])
def test_shape_and_scalar_inputs_are_one_feed(tmp_path, build, arrays):
    model = build(tmp_path / "m.onnx")
    report = api.validate(str(model), str(model), data=str(_data(tmp_path / "d.npz", **arrays)))
    assert report, report.to_dict()
    assert any("read as one feed" in n for n in _notes(report))


def test_a_stack_of_samples_is_still_batched_without_a_note(tmp_path):
    specs = [TensorSpec("x", ("batch", 4))]
    feeds = batches_from_data({"x": np.zeros((40, 4), np.float32)}, specs, batch=16)
    assert [f["x"].shape[0] for f in feeds] == [16, 16, 8] and feeds.notes == []
    fixed = feeds_from_data({"x": np.zeros((6, 4), np.float32)}, [TensorSpec("x", (2, 4))])
    assert [f["x"].shape[0] for f in fixed] == [2, 2, 2] and fixed.notes == []  # a fixed batch: slices of it
    model = relu(tmp_path / "relu.onnx")
    report = api.validate(str(model), str(model), data=str(_data(tmp_path / "d.npz", x=np.ones((7, 4), np.float32))))
    assert report and _notes(report) == []


def test_data_that_fits_neither_reading_is_exit_2_naming_the_input_and_both_readings(tmp_path):
    model = attention_mask(tmp_path / "attn.onnx")
    data = _data(tmp_path / "bad.npz", q=np.zeros((3, 5, 4), np.float32), mask=np.ones((1, 5), np.float32))
    result = run_cli("validate", model, model, "--data", data)
    error = assert_clean_error(result, hint=True, no_stdout=True)
    hint = result.stderr.strip().splitlines()[1]
    assert error.startswith("error: --data does not fit input 'q' either way")
    assert "as one feed, shape [3, 5, 4]: axis 0 is 3" in error and "as a stack of samples along axis 0" in error
    assert hint.startswith("hint:") and "q[2, S, 4]:float32" in hint


def test_a_fixed_batch_that_does_not_divide_the_data_is_refused_with_both_readings():
    with pytest.raises(InputError) as err:
        feeds_from_data({"x": np.zeros((5, 4), np.float32)}, [TensorSpec("x", (2, 4))], flag="--data")
    assert "fixed batch of 2" in err.value.message and "as one feed" in err.value.message


def test_an_empty_data_set_is_refused():
    with pytest.raises(InputError, match="the data set is empty"):
        feeds_from_data({"x": np.zeros((0, 4), np.float32)}, [TensorSpec("x", ("batch", 4))])


def test_quantize_calibrates_and_proves_on_one_feed(tmp_path):
    """The same reading in quantize: --calib-data that is one feed calibrates once and proves on it, with notes."""
    model = attention_mask(tmp_path / "attn.onnx")
    rng = np.random.default_rng(1)
    data = _data(tmp_path / "d.npz", q=rng.standard_normal((2, 5, 4)).astype(np.float32), mask=np.ones((1, 5), np.float32))
    report = api.quantize(str(model), str(tmp_path / "q.onnx"), calib_data=str(data), mode="static")
    assert (tmp_path / "q.onnx").is_file()
    notes = report.notes + _notes(report)
    assert any(n.startswith("--calib-data read as one feed") for n in notes), notes


def sequence_split(path: Path, split: list[int]) -> Path:
    """x[6] -> SplitToSequence: an output that is a sequence of tensors."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("SplitToSequence", ["x", "split"], ["parts"])], "seq",
        [helper.make_tensor_value_info("x", FLOAT, [6])],
        [helper.make_tensor_sequence_value_info("parts", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array(split, np.int64), "split")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_sequence_outputs_are_compared_element_by_element(tmp_path):
    """Was exit 3 ('list' object has no attribute 'dtype')."""
    data = str(_data(tmp_path / "x.npz", x=np.arange(6, dtype=np.float32)))
    same = sequence_split(tmp_path / "a.onnx", [2, 4])
    assert api.validate(str(same), str(same), data=data)
    other = api.validate(str(same), str(sequence_split(tmp_path / "b.onnx", [3, 3])), data=data)
    assert not other and "differs" in other.comparisons[0].outputs[0].reasons[0]


def log(path: Path, abs_first: bool = False) -> Path:
    from onnx import helper

    nodes = [helper.make_node("Abs", ["x"], ["a"]), helper.make_node("Log", ["a"], ["y"])] if abs_first else \
        [helper.make_node("Log", ["x"], ["y"])]
    return small_graph(path, nodes, [("x", FLOAT, ["batch", 3])], [("y", FLOAT, ["batch", 3])])


def test_nan_the_reference_computes_on_the_users_data_is_compared_as_values(tmp_path):
    """On random inputs a reference NaN is an input error (tests/cli/test_validate.py); on the user's data it is what
    the model computes there: the same NaN on both sides passes, a finite value where the reference has NaN fails."""
    data = str(_data(tmp_path / "x.npz", x=np.array([[1.0, -1.0, 2.0]], np.float32)))
    model = log(tmp_path / "log.onnx")
    report = api.validate(str(model), str(model), data=data)
    assert report and report.comparisons[0].outputs[0].ref_nonfinite == 1
    assert any("computes NaN/Inf on" in n and "compared as values" in n for n in _notes(report))
    assert not api.validate(str(model), str(log(tmp_path / "abs_log.onnx", abs_first=True)), data=data)


def test_training_data_must_be_a_stack_of_samples(tmp_path):
    """distill draws batches of samples: data that is one feed (a [1, S] mask beside [2, S, 4] queries) is exit 2
    before any training, naming the flag and why it is not a stack."""
    from tests.conftest import MODELS

    teacher = attention_mask(tmp_path / "attn.onnx")
    data = _data(tmp_path / "d.npz", q=np.ones((2, 5, 4), np.float32), mask=np.ones((1, 5), np.float32))
    out = tmp_path / "student.onnx"
    result = run_cli("distill", "--teacher", teacher, "--student", f"{MODELS / 'digits_student.py'}:build",
                     "--data", data, "-o", out)
    error = assert_clean_error(result, hint=True)
    hint = result.stderr.strip().splitlines()[1]
    assert error == ("error: --data is not a stack of samples along axis 0 (the arrays hold different numbers of "
                     "samples: 2 (q), 1 (mask)); training draws batches of samples from it")
    assert hint.startswith("hint: ") and not out.exists()


def test_prune_training_data_must_be_a_stack_of_samples(tmp_path):
    """prune's recovery trains on --data too: a scalar array (no sample axis) is refused before pruning."""
    from fixtures import prune_data

    data = _data(tmp_path / "d.npz", image=np.array(0.5, np.float32))
    result = run_cli("prune", prune_data.FACTORY, "-o", tmp_path / "p.onnx", "--data", data, "--no-benchmark")
    assert_clean_error(result)
    assert "--data is not a stack of samples along axis 0 ('image' is a scalar, with no sample axis)" in result.stderr
