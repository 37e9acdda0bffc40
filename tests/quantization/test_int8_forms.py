"""The INT8 forms --goal latency tries (mdeploy/quantization/int8_forms.py): pruned by what the CPU has, each mode's
base form first, what the user fixed held in every form."""

from __future__ import annotations

from mdeploy.quantization import int8_forms
from mdeploy.quantization.onnx_quantize import OnnxQuantizeOptions

VNNI = {"arm": False, "vnni": True, "amx": False}
AVX2 = {"arm": False, "vnni": False, "amx": False}


def test_vnni_cpus_never_try_7_bit_weights_and_try_both_activation_types():
    forms, pruned = int8_forms.forms(OnnxQuantizeOptions(calib_data="c.npz"), True, VNNI)
    assert not any(f.reduce_range for f in forms) and any("7-bit" in p for p in pruned)  # no saturation with VNNI
    assert {f.activation_type for f in forms if f.mode == "static"} == {"uint8", "int8"}
    assert {f.quant_format for f in forms if f.mode == "static"} == {"qdq", "qoperator"}
    assert {f.per_channel for f in forms if f.mode == "dynamic"} == {True, False}
    assert [f.mode for f in forms[:2]] == ["static", "dynamic"]  # each mode's base form first


def test_avx2_cpus_use_7_bit_static_weights_and_no_s8_activations():
    forms, pruned = int8_forms.forms(OnnxQuantizeOptions(calib_data="c.npz"), True, AVX2)
    static = [f for f in forms if f.mode == "static"]
    assert all(f.reduce_range for f in static) and {f.activation_type for f in static} == {"uint8"}
    assert {f.reduce_range for f in forms if f.mode == "dynamic"} == {True, False}
    assert any("s8 activations" in p for p in pruned)


def test_without_calibration_data_only_dynamic_forms_and_what_the_user_fixed_holds():
    forms, pruned = int8_forms.forms(OnnxQuantizeOptions(), False, VNNI)
    assert {f.mode for f in forms} == {"dynamic"} and any("calibration data" in p for p in pruned)
    forms, _ = int8_forms.forms(OnnxQuantizeOptions(calib_data="c.npz", per_channel="off", mode="static"), True, VNNI)
    assert {(f.mode, f.per_channel) for f in forms} == {("static", False)}


def test_a_form_names_itself_and_gives_the_pass_its_options():
    form = int8_forms.Form("static", "qoperator", False, "int8", True, ("conv1",))
    assert form.name == "static qoperator s8 per-tensor 7-bit 1 slow nodes float"
    assert form.changes(["user_node"]) == {"mode": "static", "per_channel": "off", "reduce_range": "on",
                                           "exclude": ["user_node", "conv1"], "quant_format": "qoperator",
                                           "activation_type": "int8"}
    assert int8_forms.form_of({"mode": "dynamic", "per_channel": False, "reduce_range": False}) == int8_forms.Form(
        "dynamic", per_channel=False)
