"""The step-role table (pipeline/chain.py): one row per step verb, which the plan and the run both read."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mdeploy.core import Format, ModelRef, format_for_output
from mdeploy.pipeline import chain, model_run, schema
from mdeploy.pipeline.plan import Plan, PlannedModel, PlannedStep


@pytest.mark.parametrize("verb", chain.STEP_VERBS)
def test_every_step_verb_has_a_row_naming_its_own_options(verb):
    role = chain.ROLES[verb]
    fields = {f.name for f in dataclasses.fields(schema.options_type(verb))}
    named = {*role.reads, *role.plan_set, *(role.compares or ()), *filter(None, [role.target_option,
                                                                                role.precision_option,
                                                                                role.precision_from])}
    assert named <= fields, named - fields
    assert role.plan_set == chain.PLAN_SET[verb]


def test_what_a_step_writes_has_the_precision_its_options_say():
    """A later validate of it takes that precision's default bar: an int4 weight-only model is not held to int8's."""
    quantize, convert = chain.ROLES["quantize"], chain.ROLES["convert"]
    assert quantize.written_precision({}) == "int8" and quantize.written_precision({"weights": None}) == "int8"
    assert quantize.written_precision({"weights": "int4"}) == "int4"
    assert convert.written_precision({}) is None and convert.written_precision({"precision": "fp16"}) == "fp16"


def test_the_step_verbs_are_the_rows_in_order():
    assert chain.STEP_VERBS == ("convert", "quantize", "validate", "benchmark", "package")
    assert chain.ARTIFACT_VERBS == ("convert", "quantize")


@pytest.mark.parametrize("fmt", [Format(f) for f in chain.WRITABLE])
def test_a_converted_model_is_named_with_the_suffix_its_format_is_read_back_from(fmt):
    """convert's step file, Format.suffix and the extension table that reads outputs agree (TensorRT included: the
    executor's own table once had no `.engine`; an onnxruntime-genai folder is what a Hugging Face source's folder is)."""
    suffix = chain.ROLES["convert"].suffix({"dst_format": fmt.value}, "src.onnx")
    assert suffix == fmt.suffix
    source = Format.HF_MODEL if fmt is Format.GENAI else None
    assert format_for_output(Path(f"01-convert{suffix}"), source) == fmt


def test_convert_refuses_a_target_it_cannot_write_and_quantize_keeps_its_input_format():
    assert chain.ROLES["convert"].suffix({"dst_format": "pytorch-module"}, "x.onnx") is None
    assert chain.ROLES["convert"].suffix({}, "x.onnx") == ".onnx"
    assert chain.ROLES["quantize"].suffix({}, "run/01-convert.onnx") == ".onnx"
    assert chain.ROLES["quantize"].suffix({}, "model_savedmodel") == ".tflite"
    assert chain.ROLES["package"].suffix({}, "x.onnx") == ""


def test_links_follow_the_chain():
    role = chain.ROLES["validate"]
    only_baseline = chain.links(role, "m.py:build", [("run/01-convert.onnx", "01-convert")])
    assert only_baseline["reference"].value == "m.py:build" and only_baseline["reference"].source
    assert only_baseline["candidate"].value == "run/01-convert.onnx"
    two = chain.links(role, "m.py:build", [("run/01-convert.onnx", "01-convert"), ("run/02-quantize.onnx", "02-quantize")])
    assert (two["reference"].value, two["candidate"].value) == ("run/01-convert.onnx", "run/02-quantize.onnx")
    measured = chain.links(chain.ROLES["benchmark"], "m.onnx", [("m.onnx", "source"), ("run/01-quantize.onnx", "01-quantize")])
    assert measured["models"].value == ["m.onnx", "run/01-quantize.onnx"]


def test_a_hand_made_plan_gets_the_same_chain_as_a_loaded_one(tmp_path):
    """The run fills what a hand-made plan leaves out from the same rows the plan is made from."""
    model = PlannedModel(name="cnn", source="m.py:build", folder=tmp_path / "cnn")
    steps = [PlannedStep(index=i, verb=verb, options=options, sources={}, output=None, report=Path(), where="")
             for i, (verb, options) in enumerate([("convert", {"dst_format": "tensorrt"}), ("validate", {})])]
    plan = Plan(pipeline=tmp_path / "p.yaml", run_dir=tmp_path, data={}, models=[model], gates=[])
    convert = model_run._chain_options(plan, model, steps[0], model_run._Chain())
    assert convert["src"] == "m.py:build" and convert["output"] == str(tmp_path / "cnn" / "01-convert.engine")
    built = model_run._Chain(artifacts=[{"step": "01-convert", "path": convert["output"]}])
    validate = model_run._chain_options(plan, model, steps[1], built)
    assert (validate["reference"], validate["candidate"]) == ("m.py:build", convert["output"])


@pytest.mark.parametrize(("spec", "parts"), [
    ("models/net.py:build", ("models/net.py", "build")),
    ("torchvision.models:resnet18", ("torchvision.models", "resnet18")),
    ("model.onnx", None),
    ("folder/saved_model", None),
    ("net.py:", None),
])
def test_model_ref_knows_code_when_it_sees_it(spec, parts):
    assert ModelRef.code_parts(spec) == parts
