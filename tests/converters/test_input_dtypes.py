"""`--input NAME:SHAPE` without a dtype: convert uses the dtype the source shows (its example_inputs(), or how the
input is used: ids into an embedding, gather indices), says where it came from, and errs only when nothing shows it.
Also: convert builds a factory's module once (validation reuses it) and reports where its time went."""

import onnx
import pytest

from tests.checks import assert_clean_error
from tests.conftest import MODELS, factory, run_cli

INDEX = MODELS / "index_inputs.py"


def _input_types(path):
    model = onnx.load(str(path), load_external_data=False)
    return {v.name: onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name for v in model.graph.input}


def test_dtype_comes_from_example_inputs_when_input_names_none(tmp_path):
    out = tmp_path / "enc.onnx"
    result = run_cli("convert", factory("text_encoder"), "-o", out, "--input", "input_ids:1x16", "--input", "attention_mask:1x16", "--json")
    assert result.code == 0, result.stderr
    assert result.json["passed"]
    assert _input_types(out) == {"input_ids": "int64", "attention_mask": "int64"}
    notes = result.json["notes"]
    assert "--input input_ids named no dtype: int64, as example_inputs() gives it" in notes
    assert "--input attention_mask named no dtype: int64, as example_inputs() gives it" in notes


def test_ids_feeding_an_embedding_become_int64_without_example_inputs(tmp_path):
    out = tmp_path / "dec.onnx"
    result = run_cli("convert", factory("text_decoder"), "-o", out, "--input", "input_ids:1x16", "--dynamic", "input_ids:0", "--json")
    assert result.code == 0, result.stderr
    assert result.json["passed"] and len(result.json["comparisons"]) == 2
    assert _input_types(out) == {"input_ids": "int64"}
    assert "--input input_ids named no dtype: int64, as the model uses it as indices (embedding)" in result.json["notes"]


def test_an_index_reaching_gather_through_reshapes_becomes_int64_and_floats_stay_float(tmp_path):
    out = tmp_path / "g.onnx"
    result = run_cli("convert", f"{INDEX}:gather_pool", "-o", out, "--input", "features:2x6x8", "--input", "positions:2x3", "--json")
    assert result.code == 0, result.stderr
    assert result.json["passed"]
    assert _input_types(out) == {"features": "float32", "positions": "int64"}
    assert [n for n in result.json["notes"] if "dtype" in n] == ["--input positions named no dtype: int64, as the model uses it as indices (gather)"]


def test_torchscript_archive_ids_are_read_from_its_graph(artifacts, tmp_path):
    out = tmp_path / "ts.onnx"
    result = run_cli("convert", artifacts / "text_decoder.pt", "-o", out, "--input", "input_ids:1x16", "--json")
    assert result.code == 0, result.stderr
    assert _input_types(out) == {"input_ids": "int64"}
    assert "--input input_ids named no dtype: int64, as the model uses it as indices (embedding)" in result.json["notes"]


def test_a_dtype_the_user_names_is_kept_even_where_the_model_wants_another(tmp_path):
    out = tmp_path / "d.onnx"
    result = run_cli("convert", factory("text_decoder"), "-o", out, "--input", "input_ids:1x16:float32")
    assert_clean_error(result, "--input input_ids:1x16:int64", out=out)


def test_an_integer_input_nothing_reveals_is_still_an_error(tmp_path):
    out = tmp_path / "h.onnx"
    result = run_cli("convert", f"{INDEX}:histogram", "-o", out, "--input", "ids:2x6")
    assert result.code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and "bincount" in lines[0]
    assert lines[1].startswith("hint: ") and "--input ids:2x6:int64" in lines[1]
    assert not out.exists()


@pytest.mark.parametrize("validate", [True, False])
def test_convert_builds_the_module_once_and_reports_its_timings(tmp_path, validate):
    log = tmp_path / "builds.log"
    out = tmp_path / "c.onnx"
    args = ["convert", f"{INDEX}:counted", "-o", out, "--input", "input_ids:2x5:int64", "--json"]
    result = run_cli(*args, *([] if validate else ["--no-validate"]), env={"MDEPLOY_TEST_BUILD_LOG": str(log)})
    assert result.code == 0, result.stderr
    assert log.read_text().splitlines() == ["built"]
    convert_step = result.json["steps"][0]
    assert {"load", "reference run", "torch.onnx.export (dynamo)", "save"} <= set(convert_step["details"]["timings"])
    if validate:  # onnx.checker runs between the source's runs and the result's (the two never hold memory at once)
        assert result.json["passed"]
        assert list(result.json["steps"][1]["details"]["timings"]) == [
            "open the source", "the source at example inputs: the converter's run, reused", "release the source",
            "onnx.checker", "open the result", "run the result at example inputs"]
    else:
        assert "onnx.checker" in convert_step["details"]["timings"]


def test_validate_takes_the_dtype_from_example_inputs_too(encoder_onnx):
    result = run_cli("validate", factory("text_encoder"), encoder_onnx, "--input", "input_ids:2x16", "--input", "attention_mask:2x16", "--json")
    assert result.code == 0, result.stderr
    assert result.json["passed"]
