"""Weight-only INT4 (`mdeploy quantize --weights int4`) on a Linear-dominated transformer: a Llama-shaped decoder
(RMSNorm, causal attention, SwiGLU MLP, untied embedding and LM head; built in code) trained here for a few hundred
steps on the generated text of fixtures/models/tiny_lm.py (word-level tokens), then exported by torch. A randomly
initialised network is chaotic (every layer's random mixing amplifies any perturbation), so it overstates what
quantization costs a trained model; the figures below are on the trained one, on held-out text.

Prints, side by side in one run: size ratio to fp32, latency ratio int4/fp32 at 1 and 2 threads (batch 1, one
sequence), and the logits' cosine / max abs error / next-token top-1 agreement on held-out text, for mdeploy's
defaults (rtn, blocks of 32, symmetric, accuracy level 4) and a few other settings.

    python benchmarks/quantize_int4.py [WORKDIR] [--seconds S] [--layers N] [--steps N] [--hqq]

Targets: size <= 0.20x fp32 with the embedding table quantized; logits cosine >= 0.99 on held-out text.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from _common import report

HIDDEN, HEADS, FFN, SEQ = 256, 4, 704, 64
SIZE_TARGET, COSINE_TARGET = 0.20, 0.99


def build(layers: int, vocab: int):  # noqa: ANN201
    import torch
    from torch import nn

    class RMSNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(HIDDEN))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1, self.norm2 = RMSNorm(), RMSNorm()
            self.q, self.k, self.v, self.o = (nn.Linear(HIDDEN, HIDDEN, bias=False) for _ in range(4))
            self.gate, self.up = nn.Linear(HIDDEN, FFN, bias=False), nn.Linear(HIDDEN, FFN, bias=False)
            self.down = nn.Linear(FFN, HIDDEN, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, n, _ = x.shape
            h = self.norm1(x)
            q, k, v = (t(h).view(b, n, HEADS, -1).transpose(1, 2) for t in (self.q, self.k, self.v))
            a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.o(a.transpose(1, 2).reshape(b, n, HIDDEN))
            h = self.norm2(x)
            return x + self.down(nn.functional.silu(self.gate(h)) * self.up(h))

    class Decoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab, HIDDEN)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.norm = RMSNorm()
            self.lm_head = nn.Linear(HIDDEN, vocab, bias=False)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            x = self.embed(input_ids)
            for block in self.blocks:
                x = block(x)
            return self.lm_head(self.norm(x))

    torch.manual_seed(0)
    model = Decoder()
    with torch.no_grad():  # GPT-2's init: 0.02, the projections into the residual stream scaled by 1/sqrt(2 layers)
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.normal_(0, 0.02 / ((2 * layers) ** 0.5 if name.endswith(("o.weight", "down.weight")) else 1))
    return model


def tokens() -> tuple[list[int], list[int], int]:
    """Word-level token ids of tiny_lm's training text and of its held-out text, and the vocabulary size."""
    from fixtures.models import tiny_lm

    train, held_out = tiny_lm.corpus().split(), tiny_lm.eval_text().split()
    vocab = {w: i for i, w in enumerate(sorted(set(train) | set(held_out)))}
    return [vocab[w] for w in train], [vocab[w] for w in held_out], len(vocab)


def train(model, ids: list[int], steps: int):  # noqa: ANN001, ANN201
    import torch

    data = torch.tensor(ids)
    rng = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    model.train()
    for step in range(steps):
        starts = torch.randint(0, len(data) - SEQ - 1, (16,), generator=rng)
        x = torch.stack([data[s : s + SEQ] for s in starts])
        y = torch.stack([data[s + 1 : s + SEQ + 1] for s in starts])
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"  step {step}: loss {loss.item():.3f}")
    return model.eval()


def export(path: Path, layers: int, steps: int) -> None:
    import torch

    train_ids, _, vocab = tokens()
    model = train(build(layers, vocab), train_ids, steps)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, SEQ, dtype=torch.int64),), str(path), dynamo=False,
                          input_names=["input_ids"], output_names=["logits"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}}, opset_version=17)


def quantize(src: Path, out: Path, **options) -> dict:
    from mdeploy.core import ModelRef
    from mdeploy.quantization.weight_only import OnnxWeightOnly, WeightOnlyOptions

    out.unlink(missing_ok=True)
    start = time.time()
    result = OnnxWeightOnly().run(ModelRef.parse(str(src)), out, WeightOnlyOptions(**options))
    d = result.details
    print(f"  {out.name}: {len(d['quantized']['MatMul'])} MatMul + {len(d['quantized']['Gather'])} Gather quantized, "
          f"{len(d['left_float'])} left float, {time.time() - start:.1f}s")
    return d


def next_token_agreement(fp32: Path, candidate: Path, feeds: list[dict]) -> float:
    from _common import session

    ref, cand = session(fp32, 2), session(candidate, 2)
    same = [ref.run(None, f)[0].argmax(-1) == cand.run(None, f)[0].argmax(-1) for f in feeds]
    return float(np.concatenate([s.ravel() for s in same]).mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", nargs="?")
    parser.add_argument("--seconds", type=float, default=5.0, help="timing per model per thread count")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=150, help="training steps (batch 16 x 64 tokens)")
    parser.add_argument("--hqq", action="store_true", help="also --method hqq (slow to quantize on CPU)")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-int4-"))
    work.mkdir(parents=True, exist_ok=True)
    fp32 = work / f"decoder_{args.layers}l_{args.steps}steps.onnx"
    if not fp32.exists():
        t = time.time()
        export(fp32, args.layers, args.steps)
        print(f"[export] {fp32} ({time.time() - t:.0f}s)")
    settings = {
        "int4 rtn b32 (defaults)": {},
        "int4 rtn b128": {"block_size": 128},
        "int4 rtn b32 asym": {"symmetric": "off"},
        "int4 rtn b32 acc1 (fp32 compute)": {"accuracy_level": 1},
        "int8 rtn b32": {"weights": "int8"},
    }
    if args.hqq:  # minutes on CPU: HQQ optimizes every block's scale and zero point with torch
        settings["int4 hqq b32"] = {"method": "hqq"}
    variants, details = {}, {}
    for name, options in settings.items():
        out = work / ("decoder_" + name.split(" (")[0].replace(" ", "_") + ".onnx")
        details[name] = quantize(fp32, out, **options)
        variants[name] = out
    _, held, vocab = tokens()
    windows = [held[i : i + SEQ] for i in range(0, len(held) - SEQ + 1, SEQ)]
    held_out = [{"input_ids": np.array([w], dtype=np.int64)} for w in windows]  # each: 1 x SEQ
    feed = held_out[0]
    params = 2 * vocab * HIDDEN + args.layers * (4 * HIDDEN * HIDDEN + 3 * HIDDEN * FFN)
    rows = report(f"Llama-shaped decoder, {args.layers} layers, hidden {HIDDEN}, vocab {vocab} ({params / 1e6:.1f}M "
                  f"parameters), trained {args.steps} steps; held-out text in {len(windows)} windows of {SEQ}; "
                  f"batch 1, seq {SEQ}", fp32, variants, feed, held_out, args.seconds)
    print("(top-1 here: agreement of the argmax over each window's whole logits; next-token agreement below)")
    print("next-token top-1 agreement with fp32 on held-out text: " + ", ".join(
        f"{name} {next_token_agreement(fp32, path, held_out):.3f}" for name, path in variants.items()))
    default = rows["int4 rtn b32 (defaults)"]
    embedded = details["int4 rtn b32 (defaults)"]["quantized"]["Gather"]
    print(f"\nsize target <= {SIZE_TARGET}x with the embedding quantized ({', '.join(embedded) or 'NOT quantized'}): "
          f"{default['size_ratio']:.3f}x, {'met' if default['size_ratio'] <= SIZE_TARGET and embedded else 'MISSED'}")
    print(f"logits cosine target >= {COSINE_TARGET} on {len(held_out)} held-out sequences: {default['cosine']:.5f}, "
          f"{'met' if default['cosine'] >= COSINE_TARGET else 'MISSED'}")
    print(f"latency int4/fp32: {default['latency_ratio_1t']:.3f}x at 1 thread, {default['latency_ratio_2t']:.3f}x at 2 "
          f"threads ({rows['fp32']['ms_1t']:.1f} ms fp32 vs {default['ms_1t']:.1f} ms int4 at 1 thread)")


if __name__ == "__main__":
    main()
