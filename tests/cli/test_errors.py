"""The error contract: bad input gives one clear line and exit 2, never a traceback, never a partial file,
and the input is never touched."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.checks import assert_clean_error
from tests.conftest import EDGE, factory, run_cli


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
        (("validate", "a.onnx", "b.onnx", "--no-such-flag"), "--no-such-flag"),
        (("benchmark", "a.onnx", "--iterations", "x"), "--iterations"),
        (("validate", "a.onnx"), "candidate"),
    ],
)
def test_usage_errors_are_one_error_line_and_a_hint_not_a_box(args, needle):
    result = run_cli(*args)
    assert_clean_error(result, needle, "--help")
    assert "╭" not in result.stderr and "Usage:" not in result.stderr
    assert result.stdout == ""


def test_a_value_typer_cannot_read_is_named():
    result = run_cli("benchmark", "a.onnx", "--iterations=x")
    assert_clean_error(result, "--iterations", "(got 'x')")


@pytest.mark.parametrize("flag, value", [("--atol", "-1"), ("--rtol", "-0.5"), ("--atol", "nan")])
def test_a_negative_or_nan_tolerance_is_bad_input(cnn_onnx, flag, value):
    result = run_cli("validate", cnn_onnx, cnn_onnx, flag, value)
    assert_clean_error(result, f"{flag}: expected a number >= 0, got {float(value)!r}", f"hint: {flag} takes a number >= 0")
    assert result.stdout == ""


_PRUNE = ("prune", "model.py:build", "-o", "pruned.onnx")
_DISTILL = ("distill", "--teacher", "t.onnx", "--student", "s.py:build", "--data", "d.npz", "-o", "s.onnx")


@pytest.mark.parametrize(
    "args, flag, value, bounds",
    [
        ((*_PRUNE, "--sparsity", "-0.1"), "--sparsity", "-0.1", ">= 0 and < 1"),
        ((*_PRUNE, "--sparsity", "nan"), "--sparsity", "nan", ">= 0 and < 1"),
        ((*_PRUNE, "--sparsity", "inf"), "--sparsity", "inf", ">= 0 and < 1"),
        ((*_PRUNE, "--sparsity", "1"), "--sparsity", "1.0", ">= 0 and < 1"),
        ((*_PRUNE, "--target-macs", "0"), "--target-macs", "0.0", "> 0 and < 1"),
        ((*_PRUNE, "--epochs", "-1"), "--epochs", "-1", ">= 0"),
        ((*_DISTILL, "--alpha", "-0.1"), "--alpha", "-0.1", ">= 0 and <= 1"),
        ((*_DISTILL, "--alpha", "1.5"), "--alpha", "1.5", ">= 0 and <= 1"),
        ((*_DISTILL, "--temperature", "nan"), "--temperature", "nan", "> 0"),
        ((*_DISTILL, "--lr", "0"), "--lr", "0.0", "> 0"),
        (("benchmark", "m.onnx", "--duration", "inf"), "--duration", "inf", "> 0"),
        (("validate", "a.onnx", "b.onnx", "--samples", "0"), "--samples", "0", ">= 1"),
        (("run", "p.yaml", "--jobs", "0"), "--jobs", "0", ">= 1"),
    ],
)
def test_a_value_out_of_range_names_the_flag_the_value_and_the_range(tmp_path, args, flag, value, bounds):
    """Checked before anything is read (the files named here do not exist); NaN passes every `<` test, so it is
    refused by name, as infinity is."""
    result = run_cli(*args, cwd=tmp_path)
    assert_clean_error(result, f"error: {flag}: expected a number {bounds}, got {value}", f"hint: {flag} takes a number {bounds}")
    if value in ("nan", "inf"):
        assert ("NaN is not a number" if value == "nan" else "infinity is not a finite number") in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "verb, flag, shown",
    [("prune", "--sparsity", "[0<=x<1]"), ("prune", "--target-macs", "[0<x<1]"), ("prune", "--epochs", "[x>=0]"),
     ("distill", "--alpha", "[0<=x<=1]"), ("distill", "--temperature", "[x>0]"), ("run", "--jobs", "[x>=1]")],
)
def test_help_shows_each_bound_as_the_verb_enforces_it(verb, flag, shown):
    result = run_cli(verb, "--help", env={"COLUMNS": "200"})
    line = next(line for line in result.stdout.splitlines() if f" {flag} " in line)
    assert shown in line, line


def test_every_bounded_option_takes_its_bounds_and_refuses_past_them():
    """The whole class: every number option of every verb, at and past each of its bounds, NaN and infinity."""
    import importlib
    import math

    from mdeploy.errors import InputError
    from mdeploy.verbs import VERBS
    from mdeploy.verbs.options import check_number, describe

    checked = 0
    for verb in VERBS:
        for info in describe(importlib.import_module(f"mdeploy.verbs.{verb}").Options):
            if info.kind not in ("int", "float"):
                continue
            step = 1 if info.kind == "int" else 1e-6
            inside = [v for v in (info.min, info.max) if v is not None]
            inside += [info.above + step for _ in [0] if info.above is not None]
            inside += [info.below - step for _ in [0] if info.below is not None]
            outside = [info.min - step] if info.min is not None else []
            outside += [info.max + step] if info.max is not None else []
            outside += [v for v in (info.above, info.below) if v is not None]
            if info.kind == "float":
                outside += [math.nan, math.inf, -math.inf]
            for value in inside:
                check_number(info, value, info.key, info.key)
            for value in outside:
                with pytest.raises(InputError, match=rf"^{info.key}: expected a (finite )?number") as raised:
                    check_number(info, value, info.key, info.key)
                assert raised.value.hint.startswith(f"{info.key} takes a")
            checked += bool(inside or outside)
    assert checked >= 30


def test_a_pipeline_step_option_out_of_range_says_where_and_the_range():
    from mdeploy.errors import InputError
    from mdeploy.verbs import prune
    from mdeploy.verbs.options import build

    with pytest.raises(InputError, match=r"^steps\[1\]\.prune\.sparsity: expected a number >= 0 and < 1, got nan \(NaN"):
        build(prune.Options, {"src": "m.py:build", "output": "p.onnx", "sparsity": float("nan")}, "steps[1].prune")


@pytest.mark.parametrize(
    "args",
    [
        ("validate", "a.onnx", "b.onnx", "--no-such-flag", "--json"),  # click: an unknown flag
        ("benchmark", "a.onnx", "--iterations", "x", "--json"),  # click: a value typer cannot read
        ("validate", "a.onnx", "--json"),  # click: a missing argument
        ("nosuchverb", "--json"),  # click: an unknown command
        ((*_PRUNE, "--sparsity", "nan", "--json")),  # a value out of range
        ("inspect", "missing.onnx", "--json"),  # bad input
        ("run", "missing.yaml", "--json"),
        ("report", "merge", "missing.json", "-o", "merged", "--json"),
    ],
)
def test_json_prints_one_object_for_every_exit_2(tmp_path, args):
    """CI parses stdout the same way whatever happened: one JSON object, the stderr lines as its fields."""
    result = run_cli(*args, cwd=tmp_path)
    assert_clean_error(result)
    obj = json.loads(result.stdout)  # one object: anything after it fails to parse
    lines = result.stderr.strip().splitlines()
    assert obj["code"] == 2 and obj["passed"] is False
    assert obj["error"] == lines[0].removeprefix("error: ")
    assert obj["hint"] == (lines[1].removeprefix("hint: ") if len(lines) > 1 else None)
    assert obj["command"] == (args[0] if args[0] != "nosuchverb" else None)


def test_the_license_is_an_spdx_string_so_installs_print_no_deprecation_block():
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
