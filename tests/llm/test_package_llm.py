"""`mdeploy package GENAI_FOLDER --target mlflow --smoke-test`: a text-generation model served by `mlflow models serve`
(prompt token ids in, greedily generated ids out), checked against the folder in process and over HTTP."""

from __future__ import annotations

import numpy as np
import pytest

from fixtures.models import tiny_lm
from tests.checks import assert_clean_error
from tests.conftest import run_cli

pytest.importorskip("mlflow", reason="the serving extra is not installed")


@pytest.fixture(scope="module")
def packaged(genai_fp32, tmp_path_factory):
    folder, _ = genai_fp32
    out = tmp_path_factory.mktemp("lm_package") / "pkg"
    result = run_cli("package", folder, "--target", "mlflow", "-o", out, "--smoke-test", "--concurrency", "1",
                     "--requests", "2", "--json")
    return folder, out, result


def test_a_genai_folder_is_served_by_mlflow_and_answers_what_the_folder_generates(packaged):
    folder, out, result = packaged
    assert result.code == 0, result.stderr[-3000:]
    report = result.json
    assert report["flavor"] == "python_function (mlflow_genai_model.py)"
    assert all(c["passed"] for c in report["checks"]), report["checks"]
    assert {c["label"] for c in report["comparisons"]} >= {"package", "server"}
    assert all(c["passed"] for c in report["comparisons"])
    assert report["smoke_test"]["levels"][0]["errors"] == 0
    # the whole folder is inside the package, its external data included
    inside = out / "artifacts" / folder.name
    assert (inside / "genai_config.json").is_file()
    assert (inside / "model.onnx.data").is_file()
    assert (inside / "model.onnx.data").stat().st_size == (folder / "model.onnx.data").stat().st_size
    assert {p.name for p in out.parent.iterdir()} == {"pkg"}  # no staging folder left


def test_the_package_generates_the_trained_models_sentences(packaged):
    """Loaded as the server loads it, the package continues a real prompt as the trained model does: a sentence of
    its grammar, not one token repeated."""
    import mlflow

    from mdeploy.frameworks.genai_models import GenaiLM
    from mdeploy.frameworks.hf_models import decoder, tokenize

    folder, out, result = packaged
    assert result.code == 0, result.stderr[-3000:]
    (ids,) = tokenize(folder, ["the cat sees"])
    served = mlflow.pyfunc.load_model(str(out)).predict({"input_ids": np.asarray([ids], dtype=np.int64)})
    generated = [int(t) for t in served["generated_ids"][0] if t >= 0]
    assert generated == GenaiLM(folder).greedy(ids, 16, keep_logits=False)[0]
    assert len(set(generated)) > 3
    text = decoder(folder)(generated)
    assert any(word in text.split() for word in tiny_lm.OBJECTS[0].split() + ["the", "a", "."]), text


def test_packaging_again_needs_force(packaged):
    folder, out, result = packaged
    assert result.code == 0, result.stderr[-3000:]
    again = run_cli("package", folder, "--target", "mlflow", "-o", out)
    assert_clean_error(again, "exists", hint=True)
    assert (out / "MLmodel").is_file()
