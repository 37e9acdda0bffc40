"""The error contract: bad input gives one clear line and exit 2, never a traceback, never a partial file,
and the input is never touched."""

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import EDGE, factory, run_cli


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_clean_error(result, *needles: str) -> None:
    assert result.code == 2, (result.code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines and lines[0].startswith("error: "), result.stderr
    assert len(lines) <= 2 and (len(lines) == 1 or lines[1].startswith("hint: ")), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def _no_leftovers(folder: Path, before: set[str]) -> None:
    assert {p.name for p in folder.iterdir()} == before, "a partial or temporary file was left behind"


@pytest.fixture
def bad_files(tmp_path, cnn_onnx, artifacts):
    """Empty, truncated and random-bytes versions of each model format."""
    rng = np.random.default_rng(0)
    files = {}
    for suffix, good in ((".onnx", cnn_onnx), (".pt2", artifacts / "tiny_cnn.pt2"), (".pt", artifacts / "tiny_cnn.pt")):
        data = good.read_bytes()
        for kind, content in (("empty", b""), ("truncated", data[: len(data) // 2]), ("random", rng.bytes(4096))):
            path = tmp_path / f"{kind}{suffix}"
            path.write_bytes(content)
            files[(kind, suffix)] = path
    return files


@pytest.mark.parametrize("kind", ["empty", "truncated", "random"])
@pytest.mark.parametrize("suffix", [".onnx", ".pt2", ".pt"])
def test_corrupt_model_files(bad_files, tmp_path, kind, suffix):
    src = bad_files[(kind, suffix)]
    before_digest = _digest(src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = ["--input", "image:1x3x32x32"] if suffix == ".pt" else []
    if suffix == ".onnx":
        result = run_cli("inspect", src)
    else:
        result = run_cli("convert", src, "-o", out_dir / "m.onnx", *args)
    assert_clean_error(result, src.name)
    assert _digest(src) == before_digest
    _no_leftovers(out_dir, set())


def test_missing_file(tmp_path):
    assert_clean_error(run_cli("convert", tmp_path / "nope.onnx", "-o", tmp_path / "x.onnx"), "not found")


def test_wrong_extension(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"\x00" * 10)
    assert_clean_error(run_cli("inspect", path), "extension", "--from")


def test_pickled_module_is_refused_not_loaded(artifacts, tmp_path):
    src = artifacts / "tiny_cnn_pickled.pt"
    before = _digest(src)
    result = run_cli("convert", src, "-o", tmp_path / "x.onnx", "--input", "image:1x3x32x32")
    assert_clean_error(result, "pickle", "--weights")
    assert _digest(src) == before and not (tmp_path / "x.onnx").exists()


def test_pickled_module_is_refused_as_weights_too(artifacts, tmp_path):
    result = run_cli("convert", factory("tiny_cnn"), "--weights", artifacts / "tiny_cnn_pickled.pt", "-o", tmp_path / "x.onnx")
    assert_clean_error(result, "safely")


def test_weights_that_do_not_fit_the_model(artifacts, tmp_path):
    result = run_cli("convert", factory("multi_io"), "--weights", artifacts / "tiny_cnn_state.pt", "-o", tmp_path / "x.onnx")
    assert_clean_error(result, "do not fit")


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (f"{EDGE}:not_a_module", "not a torch.nn.Module"),
        (f"{EDGE}:raises", "could not build"),
        (f"{EDGE}:no_such_factory", "no attribute"),
        ("no_such_package.models:build", "cannot import"),
    ],
)
def test_factory_specs_that_do_not_give_a_module(tmp_path, spec, needle):
    assert_clean_error(run_cli("convert", spec, "-o", tmp_path / "x.onnx", "--input", "x:1x4"), needle)


def test_factory_file_that_does_not_import(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def build(:\n")
    assert_clean_error(run_cli("convert", f"{broken}:build", "-o", tmp_path / "x.onnx"), "cannot import", "SyntaxError")


@pytest.mark.parametrize("text", ["image", "image:1xthree", "image:1x3x32x32:float99"])
def test_input_that_does_not_parse(tmp_path, text):
    assert_clean_error(run_cli("convert", factory("tiny_cnn"), "-o", tmp_path / "x.onnx", "--input", text), "--input")


def test_input_that_does_not_fit_the_model(tmp_path):
    wrong_name = run_cli("convert", factory("tiny_cnn"), "-o", tmp_path / "x.onnx", "--input", "pixels:1x3x32x32")
    assert_clean_error(wrong_name, "pixels", "image")
    wrong_shape = run_cli("convert", factory("tiny_cnn"), "-o", tmp_path / "x.onnx", "--input", "image:1x4x32x32")
    assert_clean_error(wrong_shape, "fails on the example inputs")
    assert not (tmp_path / "x.onnx").exists()


def test_input_that_does_not_fit_an_onnx_model(cnn_onnx):
    assert_clean_error(run_cli("validate", cnn_onnx, cnn_onnx, "--input", "image:1x3x30x30"), "does not fit")


def test_output_folder_missing(tmp_path):
    assert_clean_error(run_cli("convert", factory("tiny_cnn"), "-o", tmp_path / "no" / "x.onnx"), "does not exist")


def test_output_folder_not_writable(tmp_path):
    if os.geteuid() == 0:
        folder = Path("/sys")  # read-only even for root
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
    assert_clean_error(run_cli("convert", factory("tiny_cnn"), "-o", folder / "x.onnx"), str(folder))


def test_existing_output_needs_force(tmp_path):
    out = tmp_path / "x.onnx"
    out.write_bytes(b"precious")
    result = run_cli("convert", factory("multi_io"), "-o", out, "--no-validate")
    assert_clean_error(result, "exists", "--force")
    assert out.read_bytes() == b"precious"
    _no_leftovers(tmp_path, {"x.onnx"})
    assert run_cli("convert", factory("multi_io"), "-o", out, "--no-validate", "--force").code == 0
    assert out.read_bytes() != b"precious"
    _no_leftovers(tmp_path, {"x.onnx"})


def test_external_data_may_not_escape_the_model_folder(tmp_path, cnn_onnx):
    import onnx

    model = onnx.load(str(cnn_onnx))
    init = model.graph.initializer[0]
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    entry = init.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    evil = tmp_path / "evil.onnx"
    onnx.save(model, str(evil))
    assert_clean_error(run_cli("inspect", evil), "outside its folder")


def test_unknown_report_format(tmp_path, cnn_onnx):
    assert_clean_error(run_cli("validate", cnn_onnx, cnn_onnx, "--report", tmp_path / "r.pdf"), ".pdf")


def test_debug_shows_the_traceback(tmp_path):
    result = run_cli("--debug", "convert", tmp_path / "nope.onnx", "-o", tmp_path / "x.onnx")
    assert result.code == 2 and "Traceback" in result.stderr


def test_usage_errors_exit_2(tmp_path):
    assert run_cli("convert").code == 2
    assert run_cli("validate", "--no-such-flag").code == 2


@pytest.mark.parametrize(
    "args, needle",
    [
        (("validate", "a.onnx", "b.onnx", "--samples", "0"), "--samples"),
        (("validate", "a.onnx", "b.onnx", "--no-such-flag", "--json"), "--no-such-flag"),
        (("benchmark", "a.onnx", "--iterations", "x"), "--iterations"),
        (("validate", "a.onnx"), "candidate"),
    ],
)
def test_usage_errors_are_one_error_line_and_a_hint_not_a_box(args, needle):
    result = run_cli(*args)
    assert_clean_error(result, needle, "--help")
    assert "╭" not in result.stderr and "Usage:" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("flag, value", [("--atol", "-1"), ("--rtol", "-0.5"), ("--atol", "nan")])
def test_a_negative_or_nan_tolerance_is_bad_input(cnn_onnx, flag, value):
    result = run_cli("validate", cnn_onnx, cnn_onnx, flag, value, "--json")
    assert_clean_error(result, flag, "not a tolerance")
    assert result.stdout == ""


def test_the_license_is_an_spdx_string_so_installs_print_no_deprecation_block():
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
