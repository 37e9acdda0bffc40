"""The pipeline file: resolved into a Plan (the artifact chain, data names, where every value came from), and every
mistake one line with `file:line:col` and the key path, before anything runs."""

from __future__ import annotations

import json
import textwrap
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from mdeploy.errors import InputError, OutputExistsError
from mdeploy.pipeline import chain, schema, spec
from mdeploy.verbs import quantize as quantize_verb
from mdeploy.verbs.options import describe
from tests.conftest import MODELS, ROOT

CNN = MODELS / "tiny_cnn.py"

GOOD = f"""\
version: 1
models:
  - name: cnn
    source: {CNN}:build
    inputs: {{image: 1x3x32x32}}
    dynamic: ["image:0"]
data:
  calib: data/calib.npz
  eval: data/eval.npz
steps:
  - convert: {{to: onnx}}
  - quantize: {{mode: static, calib: calib, eval-data: eval}}
  - validate: {{data: eval}}
  - benchmark: {{threads: 2, batch: 1}}
gates:
  - accuracy-drop <= 0.01
  - cosine >= 0.99
  - latency-ratio <= 0.6
  - size-ratio <= 0.3
  - p99-ms <= 50
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A pipeline folder with its data files (their content does not matter to the parser)."""
    (tmp_path / "data").mkdir()
    for name in ("calib", "eval"):
        np.savez(tmp_path / "data" / f"{name}.npz", image=np.zeros((1, 3, 32, 32), np.float32))
    return tmp_path


def write(folder: Path, text: str, name: str = "pipeline.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def same(a: str | Path, b: str | Path) -> bool:
    """Paths in a plan are shown relative to the working folder when they lie under it."""
    return Path(a).resolve() == Path(b).resolve()


def load(folder: Path, text: str, **kwargs) -> spec.Plan:
    return spec.load(write(folder, text), out=folder / "run", **kwargs)


def error(folder: Path, text: str) -> InputError:
    with pytest.raises(InputError) as info:
        load(folder, text)
    return info.value


def test_the_artifact_chain_of_one_model(folder):
    plan = load(folder, GOOD)
    (model,) = plan.models
    convert, quantize, validate, benchmark = model.steps
    assert [s.name for s in model.steps] == ["01-convert", "02-quantize", "03-validate", "04-benchmark"]
    assert same(model.folder, folder / "run" / "cnn")
    # convert writes the baseline from the model's source, with the model entry's inputs and dynamic axes
    src, factory = convert.options["src"].rsplit(":", 1)
    assert same(src, CNN) and factory == "build"
    assert same(convert.output, folder / "run" / "cnn" / "01-convert.onnx")
    assert convert.options["output"] == str(convert.output)
    assert convert.options["inputs"] == ["image:1x3x32x32"] and convert.options["dynamic"] == ["image:0"]
    assert convert.sources["inputs"].startswith("model cnn (")
    assert "pipeline.yaml:5:13 models[0].inputs" in convert.sources["inputs"]
    # quantize reads the previous artifact; data names become their paths, relative to the pipeline file
    assert quantize.options["src"] == str(convert.output)
    assert same(quantize.output, folder / "run" / "cnn" / "02-quantize.onnx")
    assert same(quantize.options["calib_data"], folder / "data" / "calib.npz")
    assert same(quantize.options["eval_data"], folder / "data" / "eval.npz")
    assert quantize.sources["mode"].endswith("pipeline.yaml:12:22 steps[1].quantize.mode")
    assert quantize.sources["calib_data"].startswith("data.calib (")
    # validate: the current artifact against the baseline, with INT8 tolerances because the candidate is INT8
    assert (validate.options["reference"], validate.options["candidate"]) == (str(convert.output), str(quantize.output))
    assert validate.options["precision"] == "int8" and validate.sources["precision"].startswith("plan")
    assert same(validate.options["data"], folder / "data" / "eval.npz") and validate.output is None
    # benchmark measures the baseline and the current artifact side by side
    assert benchmark.options["models"] == [str(convert.output), str(quantize.output)]
    assert benchmark.options["threads"] == 2
    # every option of the verb is there, ready for Options(**options), each with where it came from
    for step in model.steps:
        options_type = schema.options_type(step.verb)
        assert set(step.options) == {i.name for i in describe(options_type)} == set(step.sources)
        options_type(**step.options)
        assert same(step.report, folder / "run" / "cnn" / f"{step.name}.json")
    assert quantize.sources["calib_method"] == "default" and quantize.options["calib_method"] is None
    assert [g.text for g in plan.gates] == ["accuracy-drop <= 0.01", "cosine >= 0.99", "latency-ratio <= 0.6",
                                           "size-ratio <= 0.3", "p99-ms <= 50"]
    assert (plan.gates[0].metric, plan.gates[0].op, plan.gates[0].bar) == ("accuracy-drop", "<=", 0.01)
    assert plan.gates[4].where.endswith("pipeline.yaml:20:5 gates[4]")
    assert set(plan.data) == {"calib", "eval"} and same(plan.data["eval"], folder / "data" / "eval.npz")
    json.dumps(plan.to_dict())  # the dry-run and manifest form is plain JSON


def test_paths_are_relative_to_the_pipeline_file_not_the_working_folder(folder, tmp_path_factory, monkeypatch):
    path = write(folder, GOOD)
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    plan = spec.load(path, out="run")
    assert same(plan.data["calib"], folder / "data" / "calib.npz")
    assert plan.run_dir == Path("run")  # --out is the user's, relative to where they are


def test_many_models_each_get_every_step_and_their_own_folder(folder):
    text = GOOD.replace("""    dynamic: ["image:0"]\n""", f"""    dynamic: ["image:0"]\n  - source: {CNN}:build\n""")
    plan = load(folder, text)
    assert [m.name for m in plan.models] == ["cnn", "tiny_cnn"]  # a model without a name is named for its source
    assert plan.models[1].steps[0].options["inputs"] == []  # the second entry gives no inputs
    assert same(plan.models[1].steps[1].options["src"], folder / "run" / "tiny_cnn" / "01-convert.onnx")
    assert spec.list_jobs(plan) == {"include": [{"job": "cnn"}, {"job": "tiny_cnn"}]}


def test_option_spellings_and_step_values_win_over_the_model_entry(folder):
    text = GOOD.replace("{mode: static, calib: calib, eval-data: eval}",
                        "{mode: static, calib_data: calib, --eval-data: data/eval.npz}")
    text = text.replace("{to: onnx}", "{to: onnx, input: 'image:2x3x32x32', opset: 17}")
    plan = load(folder, text)
    convert, quantize = plan.models[0].steps[:2]
    assert convert.options["inputs"] == ["image:2x3x32x32"] and convert.options["opset"] == 17
    assert same(quantize.options["calib_data"], folder / "data" / "calib.npz")
    assert same(quantize.options["eval_data"], folder / "data" / "eval.npz")  # a plain path, resolved


def test_a_model_file_source_is_the_baseline_when_no_convert_comes_first(folder):
    onnx_file = folder / "m.onnx"
    onnx_file.write_bytes(b"not read by the parser")
    plan = load(folder, """\
        version: 1
        models: {name: m, source: m.onnx}
        steps: [quantize, validate, benchmark]
        """)
    quantize, validate, benchmark = plan.models[0].steps
    assert same(quantize.options["src"], onnx_file)
    assert validate.options["reference"] == quantize.options["src"]
    assert benchmark.options["models"] == [quantize.options["src"], str(quantize.output)]


def test_default_run_folder_is_named_for_the_pipeline_and_the_time(folder):
    path = write(folder, GOOD.replace("version: 1\n", "version: 1\nname: nightly\n"))
    plan = spec.load(path, now=datetime(2025, 1, 2, 3, 4, 5))
    assert plan.run_dir == Path("mdeploy-runs/nightly-20250102-030405")
    assert spec.load(write(folder, GOOD, "ci.yaml"), now=datetime(2025, 1, 2, 3, 4, 5)).run_dir.name == "ci-20250102-030405"


def test_an_existing_folder_that_is_not_a_run_folder_needs_force(folder):
    path = write(folder, GOOD)
    other = folder / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not an mdeploy run folder"):
        spec.load(path, out=other)
    assert spec.load(path, out=other, force=True).run_dir == other
    (folder / "previous").mkdir()
    (folder / "previous" / "manifest.json").write_text("{}")
    assert spec.load(path, out=folder / "previous").run_dir == folder / "previous"  # a re-run reuses its folder
    assert (other / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("old, new, message", [
    ("mode: static", "mode: fast", "pipeline.yaml:12:22: steps[1].quantize.mode: expected auto|dynamic|static, got 'fast'"),
    ("mode: static", "mdoe: static", "pipeline.yaml:12:16: steps[1].quantize.mdoe: unknown option; did you mean 'mode'?"),
    ("threads: 2", "threads: two", "pipeline.yaml:14:26: steps[3].benchmark.threads: expected an integer, got 'two'"),
    ("threads: 2", "threads: 0", "pipeline.yaml:14:26: steps[3].benchmark.threads: expected a number >= 1, got 0"),
    ("steps:", "stpes:", "pipeline.yaml:10:1: stpes: unknown key; did you mean 'steps'?"),
    ("  - validate: {data: eval}", "  - validat: {data: eval}",
     "pipeline.yaml:13:5: steps[2].validat: unknown step; did you mean 'validate'?"),
    ("    dynamic:", "    dynamc:", "pipeline.yaml:6:5: models[0].dynamc: unknown key; did you mean 'dynamic'?"),
    ("eval: data/eval.npz", "eval: data/missing.npz", "pipeline.yaml:9:9: data.eval: file not found:"),
    ("{data: eval}", "{data: evl}", "pipeline.yaml:13:22: steps[2].validate.data: file not found:"),
    ("cosine >= 0.99", "cosine = 0.99", "pipeline.yaml:17:5: gates[1]: gates compare with <= or >=, got '=' in 'cosine = 0.99'"),
    ("cosine >= 0.99", "cosin >= 0.99", "pipeline.yaml:17:5: gates[1]: unknown gate metric 'cosin'; did you mean 'cosine'?"),
    ("cosine >= 0.99", "cosine >= high", "pipeline.yaml:17:5: gates[1]: the bar of 'cosine >= high' is not a number: 'high'"),
    ("cosine >= 0.99", "[cosine]", "pipeline.yaml:17:5: gates[1]: expected a string, got a list"),
    ("version: 1", "version: 2", "pipeline.yaml:1:10: version: expected 1, got 2"),
    ("{to: onnx}", "{to: onnx, output: x.onnx}", "pipeline.yaml:11:25: steps[0].convert.output: set by the pipeline itself"),
    ("{to: onnx}", "{to: onnx, to: tflite}", "pipeline.yaml:11:25: steps[0].convert.to: given twice"),
    ("{to: onnx}", "{to: onnx, dst_format: tflite}", "pipeline.yaml:11:25: steps[0].convert.dst_format: given twice"),
    ("  - benchmark: {threads: 2, batch: 1}", "  - benchmark: {threads: 2}\n    quantize: {}",
     "pipeline.yaml:14:5: steps[3]: expected one verb"),
    ("inputs: {image: 1x3x32x32}", "inputs: {image: 1x3xbig}",
     "pipeline.yaml:5:21: models[0].inputs.image: expected SHAPE[:DTYPE]"),
    ("{mode: static,", "{mode: [static],", "pipeline.yaml:12:22: steps[1].quantize.mode: expected a string, got ['static']"),
    ("    inputs: {image: 1x3x32x32}", "    inputs: {image: 1x3x32x32\n", "pipeline.yaml:7:12: not valid YAML"),
])
def test_every_mistake_is_one_line_with_file_line_column_and_key_path(folder, old, new, message):
    assert old in GOOD
    err = error(folder, GOOD.replace(old, new, 1))
    assert err.message.startswith(str(folder / message.split(":", 1)[0]) + ":" + message.split(":", 1)[1]), err.message
    assert "\n" not in err.message


def test_a_data_name_typo_suggests_the_name(folder):
    err = error(folder, GOOD.replace("{data: eval}", "{data: evl}"))
    assert "did you mean 'eval'?" in err.message and err.hint == "data names: calib, eval"


def test_the_chain_is_checked_before_anything_runs(folder):
    err = error(folder, GOOD.replace("  - convert: {to: onnx}\n", ""))
    assert "steps[0].quantize: needs a model file to quantize" in err.message and "convert" in err.hint
    two_steps = "  - convert: {to: onnx}\n  - quantize: {mode: static, calib: calib, eval-data: eval}\n"
    err = error(folder, GOOD.replace(two_steps, ""))
    assert "steps[0].validate: has nothing to validate" in err.message
    err = error(folder, GOOD.replace("data:\n", f"  - {{name: cnn, source: '{CNN}:build'}}\ndata:\n"))
    assert "models[1].name: the name 'cnn' is taken by models[0]" in err.message
    err = error(folder, GOOD.replace(f"{CNN}:build", str(folder / "nope.py") + ":build"))
    assert "pipeline.yaml:4:13: models[0].source: file not found" in err.message


def test_missing_and_empty(folder):
    assert "the pipeline file is empty" in error(folder, "").message
    assert error(folder, "- a\n").message.endswith("expected a mapping (version, models, data, steps, gates)")
    assert "version: missing" in error(folder, GOOD.replace("version: 1\n", "")).message
    assert "steps: missing" in error(folder, GOOD.split("steps:")[0]).message
    no_source = error(folder, GOOD.replace(f"    source: {CNN}:build\n", ""))
    assert no_source.message.endswith("pipeline.yaml:3:5: models[0].source: missing")
    with pytest.raises(InputError, match="pipeline file not found"):
        spec.load(folder / "absent.yaml")


def test_the_schema_is_built_from_the_verbs_options_and_accepts_the_examples():
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    built = schema.schema()
    jsonschema.Draft202012Validator.check_schema(built)
    steps = {next(iter(kind["properties"])): kind["properties"][next(iter(kind["properties"]))]["anyOf"][0]
             for kind in built["properties"]["steps"]["items"]["oneOf"]}
    assert set(steps) == set(chain.STEP_VERBS)
    quantize = steps["quantize"]["properties"]
    keys = {i.key for i in describe(quantize_verb.Options) if i.name not in chain.PLAN_SET["quantize"]}
    assert set(quantize) == keys | set(schema.ALIASES["quantize"])
    assert quantize["mode"]["anyOf"][0]["enum"] == ["auto", "dynamic", "static"]
    assert "src" not in quantize and "output" not in quantize
    validator = jsonschema.Draft202012Validator(built)
    for example in ("pipeline.yaml", "pipeline-fails.yaml"):
        document = yaml.safe_load((ROOT / "examples" / example).read_text())
        assert not list(validator.iter_errors(document)), example
        document["steps"][1]["quantize"]["mode"] = "fast"
        assert list(validator.iter_errors(document))
    document = yaml.safe_load(GOOD)
    document["gates"].append("cosin >= 0.9")
    assert list(validator.iter_errors(document))


def test_the_examples_load(tmp_path):
    """The examples as a user has them: a copy of examples/ with the data the README's script writes."""
    import os
    import shutil
    import subprocess
    import sys

    root = tmp_path / "checkout"
    shutil.copytree(ROOT / "examples", root / "examples", ignore=shutil.ignore_patterns("*.npz"))
    os.symlink(ROOT / "fixtures", root / "fixtures")
    subprocess.run([sys.executable, "fixtures/pipeline_data.py", "examples/data"], cwd=root, check=True, capture_output=True)
    for example in ("pipeline.yaml", "pipeline-fails.yaml"):
        plan = spec.load(root / "examples" / example, out=tmp_path / example)
        assert [s.name for s in plan.models[0].steps] == ["01-convert", "02-quantize", "03-validate", "04-benchmark"]


def test_the_option_tables_in_docs_are_the_verbs_options():
    doc = (ROOT / "docs" / "ci.md").read_text()
    for verb in chain.STEP_VERBS:
        table = schema.options_table(verb)
        assert f"<!-- options:{verb} -->\n{table}<!-- /options -->" in doc, \
            f"run: python -m mdeploy.pipeline.schema docs/ci.md ({verb})"
    assert "| `calib-data` (`calib`) |" in schema.options_table("quantize") and "`output`" not in schema.options_table("quantize")
