"""BERT-base-size encoder (12 layers, hidden 768, 12 heads, FFN 3072, sequence 128, random weights built in
code), dynamic INT8: mdeploy's defaults side by side with onnxruntime's quantize_dynamic called with its
defaults. Prints size ratio, latency ratio int8/fp32 at 1 and 2 threads, and output error.

    python benchmarks/quantize_transformer.py [WORKDIR] [--seconds S]

Targets: size <= 0.26x (the token embedding's Gather table quantized, every weight stored once), error no worse
than onnxruntime's defaults. Latency is judged against this CPU's own int8 kernel bound: benchmarks/int8_limit.py.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from _common import mdeploy_quantize, report

VOCAB, HIDDEN, LAYERS, HEADS, FFN, SEQ = 30522, 768, 12, 12, 3072, 128
SIZE_TARGET = 0.26


def build():  # noqa: ANN201
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tokens = nn.Embedding(VOCAB, HIDDEN)
            self.positions = nn.Embedding(512, HIDDEN)
            self.norm = nn.LayerNorm(HIDDEN)
            layer = nn.TransformerEncoderLayer(HIDDEN, HEADS, FFN, dropout=0.0, activation="gelu", batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
            self.pooler = nn.Linear(HIDDEN, HIDDEN)
            self.classifier = nn.Linear(HIDDEN, 2)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            pos = torch.arange(input_ids.shape[1]).unsqueeze(0)
            x = self.norm(self.tokens(input_ids) + self.positions(pos))
            x = self.encoder(x)
            return self.classifier(torch.tanh(self.pooler(x[:, 0])))

    torch.manual_seed(0)
    model = Encoder().eval()
    with torch.no_grad():  # BERT-like init scale, so activations stay in a realistic range
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.02)
    return model


def export(path: Path, exporter: str) -> None:
    import torch

    ids = torch.randint(0, VOCAB, (2, SEQ))  # batch 2: an example batch of 1 would be specialised by torch.export
    # grad stays enabled: otherwise torch takes its fused fast path (_transformer_encoder_layer_fwd), which ONNX lacks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(
                build(),
                (ids,),
                str(path),
                dynamo=False,
                input_names=["input_ids"],
                output_names=["logits"],
                dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}},
                opset_version=17,
            )
        else:  # torch's default exporter since 2.9
            batch, seq = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("sequence", min=2, max=512)
            torch.onnx.export(
                build(),
                (ids,),
                str(path),
                dynamo=True,
                input_names=["input_ids"],
                output_names=["logits"],
                dynamic_shapes={"input_ids": {0: batch, 1: seq}},
                external_data=False,
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", nargs="?")
    parser.add_argument("--seconds", type=float, default=8.0, help="timing per model per thread count")
    parser.add_argument(
        "--exporter",
        choices=("dynamo", "torchscript", "both"),
        default="both",
        help="how the float model is exported (dynamo: torch's default exporter)",
    )
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-transformer-"))
    work.mkdir(parents=True, exist_ok=True)
    for exporter in ("torchscript", "dynamo") if args.exporter == "both" else (args.exporter,):
        run(work, exporter, args.seconds)


def run(work: Path, exporter: str, seconds: float) -> None:
    fp32 = work / f"encoder_{exporter}.onnx"
    ours, ort_default = work / f"encoder_{exporter}_mdeploy.onnx", work / f"encoder_{exporter}_ort_default.onnx"
    t = time.time()
    if not fp32.exists():
        export(fp32, exporter)
    print(f"\n[{exporter} export] {fp32} ({time.time() - t:.0f}s)")
    from onnxruntime.quantization import quantize_dynamic

    t = time.time()
    ours.unlink(missing_ok=True)
    for note in mdeploy_quantize(fp32, ours, mode="dynamic"):
        print("  mdeploy:", note)
    print(f"mdeploy quantize (dynamic, defaults): {time.time() - t:.0f}s")
    variants = {"mdeploy (defaults)": ours}
    t = time.time()
    try:
        quantize_dynamic(str(fp32), str(ort_default))
        variants["onnxruntime defaults"] = ort_default
        print(f"onnxruntime quantize_dynamic (defaults): {time.time() - t:.0f}s")
    except Exception as exc:  # noqa: BLE001 - the failure is the figure
        print(
            "onnxruntime quantize_dynamic (defaults) FAILED on this export: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        )
    rng = np.random.default_rng(0)
    feed = {"input_ids": rng.integers(0, VOCAB, (1, SEQ)).astype(np.int64)}
    evals = [{"input_ids": rng.integers(0, VOCAB, (4, SEQ)).astype(np.int64)} for _ in range(4)]
    title = f"BERT-base-size encoder ({exporter} export), dynamic INT8, batch 1, seq 128"
    rows = report(title, fp32, variants, feed, evals, seconds)
    ratio = rows["mdeploy (defaults)"]["size_ratio"]
    print(f"size target <= {SIZE_TARGET}x: mdeploy {ratio:.3f}x, {'met' if ratio <= SIZE_TARGET else 'MISSED'}")


if __name__ == "__main__":
    main()
