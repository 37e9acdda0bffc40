"""quantize's memory on a model past 2 GB: the proof's float session is released before the speed check opens its
own, so the float model's weights are not held twice (2.51x the float weight bytes at the peak on a 0.7B Llama with
the speed check on; 1.65x after: benchmarks/large_model.py, docs/llm.md). Checked on a tiny model: which mdeploy
runners are alive when the speed check starts."""

from __future__ import annotations

import gc

from mdeploy.quantization import runtime_report
from mdeploy.runners.onnx_runner import OnnxRuntimeRunner
from mdeploy.verbs import quantize as quantize_verb


def test_the_proofs_float_session_is_gone_when_the_speed_check_starts(tmp_path, monkeypatch):
    from fixtures import onnx_graphs

    model = onnx_graphs.mlp(tmp_path / "mlp.onnx")
    alive: list[str] = []
    add = runtime_report.add

    def census_and_speed(report, src, out, *args, **kwargs):  # the real step; the runners alive at its start recorded
        gc.collect()
        alive.extend(str(o.ref.path) for o in gc.get_objects() if isinstance(o, OnnxRuntimeRunner))
        return add(report, src, out, *args, **kwargs)

    monkeypatch.setattr(runtime_report, "add", census_and_speed)
    report = quantize_verb.run(quantize_verb.Options(src=str(model), output=str(tmp_path / "mlp.int8.onnx"), no_speed=True))
    assert report.passed and report.data["runtime"]["census"]
    assert alive == []
