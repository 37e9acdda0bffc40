"""quantization/speed_check.py and measuring/int8_bound.py on real tiny models: the int8 bound from one-node
kernels, and the reasons given for an int8 model slower than float, judged against the numbers measured (never
against this machine's speed)."""

from __future__ import annotations

import numpy as np

from mdeploy.measuring import int8_bound
from mdeploy.quantization.census import census
from mdeploy.quantization.speed_check import measure_speed


def test_the_bound_covers_the_models_gemm_and_conv_shapes(census_models, cnn_feed, tmp_path):
    b = int8_bound.measure(census_models["cnn"], cnn_feed, "static", tmp_path)
    texts = [k.text for k in b.kernels]
    # largest first, until 95% of the GEMM/Conv time is measured (the tiny fc then counts at their mean ratio)
    assert set(texts) >= {"conv 16->32 3x3 @32x32->16x16", "conv 3->16 3x3 @32x32->32x32"}
    assert set(texts) <= {"conv 16->32 3x3 @32x32->16x16", "conv 3->16 3x3 @32x32->32x32", "gemm 1x32x10"}
    measured = sum(k.share for k in b.kernels)
    assert np.isclose(measured + b.extrapolated_share, 1.0) and 0 < b.gemm_conv_share <= 1
    assert all(k.fp32_ms > 0 and k.int8_ms > 0 and np.isclose(k.ratio, k.int8_ms / k.fp32_ms, rtol=1e-6) for k in b.kernels)
    mean = sum(k.share * k.ratio for k in b.kernels) / measured
    expected = (1 - b.gemm_conv_share) + b.gemm_conv_share * (measured * mean + b.extrapolated_share * mean)
    assert np.isclose(b.bound, expected) and np.isclose(b.speedup, 1 / b.bound)


def test_a_depthwise_model_slower_in_int8_says_why(census_models):
    feed = {"image": np.random.default_rng(0).random((1, 32, 28, 28)).astype(np.float32)}
    c = census(census_models["dw_int8"], feed, runs=5)
    speed = measure_speed(census_models["dw"], census_models["dw_int8"], feed, family="static", census=c)
    kernels = speed.bound.kernels
    assert kernels and all(k.depthwise for k in kernels)
    slow = [k for k in kernels if k.ratio > 1]
    says_depthwise = any(r.startswith("depthwise convolutions") for r in speed.reasons)
    assert says_depthwise == bool(slow)  # named exactly when a depthwise kernel measured slower in int8
    if speed.speedup < 1:
        assert speed.warning and speed.warning.startswith("WARNING: the int8 model is slower")
        assert speed.reasons and all(r in speed.warning for r in speed.reasons)
    else:
        assert speed.warning is None
    assert np.isclose(speed.of_bound, speed.speedup / speed.bound_speedup)
