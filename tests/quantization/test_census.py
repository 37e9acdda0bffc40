"""quantization/census.py on real tiny models: what onnxruntime executes after a static quantize, and why a node
stays float; its time shares checked against onnxruntime's own profile, read here independently."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mdeploy.quantization.census import census

# the integer kernels onnxruntime runs a static QDQ model with, named here apart from the census's own table
QDQ = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")
INTEGER_KERNELS = {"QLinearConv", "QGemm", "QLinearMatMul", "QLinearGlobalAveragePool", "QLinearAdd"}


def test_a_static_int8_cnn_runs_in_integer_and_its_float_model_does_not(census_models, cnn_feed):
    int8 = census(census_models["cnn_int8"], cnn_feed, runs=5)
    assert int8.mode == "static"
    assert int8.integer_time_share > 0.3 and int8.integer_mac_share > 0.9
    assert {r.op for r in int8.ops if r.kind == "integer"} >= {"QLinearConv", "QGemm"}
    assert not int8.float_nodes  # every GEMM/Conv fused into an integer kernel
    fp32 = census(census_models["cnn"], cnn_feed, runs=5)
    assert fp32.mode == "float" and fp32.integer_time_share == 0 and fp32.integer_mac_share == 0
    assert {f.reason for f in fp32.float_nodes} == {"the model is not quantized"}
    # the same convolutions and GEMM, counted alike in both graphs (conv0 + conv1 + fc, at their own shapes)
    macs = 16 * 32 * 32 * 27 + 32 * 16 * 16 * 144 + 10 * 32
    assert sum(r.macs for r in fp32.ops) == macs == sum(r.macs for r in int8.ops)


def test_a_node_excluded_by_the_user_is_listed_as_such(census_models, cnn_feed):
    c = census(census_models["cnn_int8_excluded"], cnn_feed, runs=5, excluded=["conv0"])
    floats = [f for f in c.float_nodes if f.op in ("Conv", "FusedConv")]
    assert len(floats) == 1 and floats[0].reason == "excluded by the user"
    assert floats[0].macs == 16 * 32 * 32 * 27
    # without being told, the census cannot say the user excluded it
    blind = census(census_models["cnn_int8_excluded"], cnn_feed, runs=5)
    assert all(f.reason != "excluded by the user" for f in blind.float_nodes)


def _profiler_integer_share(path: Path, feed: dict, runs: int, tmp: Path) -> float:
    """The integer kernels' share of the per-node duration sums of onnxruntime's own profile, over the runs no other
    process preempted (within 1.25x the median run; warm-up runs dropped), each node placed in its run by time."""
    import bisect
    import statistics

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp / "p")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(runs + 2):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    model_runs = sorted((e["ts"], e["dur"]) for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    starts = [ts for ts, _ in model_runs]
    limit = statistics.median(d for _, d in model_runs[2:]) * 1.25
    total = integer = 0.0
    for e in events:
        run = bisect.bisect_right(starts, e.get("ts", -1)) - 1
        if e.get("cat") != "Node" or run < 2 or model_runs[run][1] > limit:
            continue
        total += e["dur"]
        op, first_input = e["args"]["op_name"], next(iter(e["args"]["input_type_shape"][0]))
        if op in INTEGER_KERNELS or (first_input in ("uint8", "int8") and op not in QDQ):
            integer += e["dur"]
    return integer / total


def test_the_census_integer_time_share_is_within_5_points_of_the_profilers_sums(census_models, cnn_feed, tmp_path):
    path = census_models["cnn_int8"]
    c = census(path, cnn_feed, runs=40)
    reference = _profiler_integer_share(path, cnn_feed, 40, tmp_path)
    assert abs(c.integer_time_share - reference) <= 0.05, (c.integer_time_share, reference)
    assert abs(sum(c.shares.values()) - 1) < 1e-9


def test_a_dynamic_model_counts_its_casts_and_dynamic_quantization(census_models, cnn_feed, tmp_path):
    from tests.quantization.conftest import quantize

    dynamic = quantize(census_models["cnn"], tmp_path / "dyn.onnx", census_models["cnn_calib"], mode="dynamic")
    c = census(dynamic, cnn_feed, runs=5)
    assert c.mode == "dynamic"
    assert c.shares["q/dq"] > 0 and c.integer_mac_share > 0.9
    assert np.isclose(sum(c.shares.values()), 1.0)


def test_a_dynamically_quantized_mlp_runs_its_weight_gemms_in_integer(tmp_path):
    from fixtures import onnx_graphs
    from mdeploy.core import ModelRef
    from mdeploy.quantization.onnx_quantize import OnnxQuantize, OnnxQuantizeOptions

    mlp = onnx_graphs.mlp(tmp_path / "mlp.onnx")
    out = tmp_path / "mlp_int8.onnx"
    OnnxQuantize().run(ModelRef.parse(str(mlp)), out, OnnxQuantizeOptions(mode="dynamic"))
    feed = {"x": np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)}
    c = census(out, feed, runs=5)
    assert c.mode == "dynamic"
    rows = {r.op: r for r in c.ops}
    assert rows["DynamicQuantizeMatMul"].kind == "integer" and rows["DynamicQuantizeMatMul"].count == 3
    assert rows["DynamicQuantizeMatMul"].macs == 4 * (16 * 32 + 32 * 32 + 32 * 10)
    assert c.integer_mac_share == 1.0 and not c.float_nodes
