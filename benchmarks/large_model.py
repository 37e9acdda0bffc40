"""A language model past protobuf's 2 GB limit through every verb: wall time and peak RSS per verb.

A Llama-architecture model built from a config with random weights (default ~0.7B parameters: 24 layers, hidden
1536, FFN 4096, GQA 12/4, vocab 32000, untied embeddings; 2.8 GB of float32 weights), saved with `save_pretrained`
with a small BPE tokenizer. Then, each verb a separate `mdeploy` process whose peak RSS is read from os.wait4 (that
child and the processes it waited for):

- convert HF folder -> onnxruntime-genai folder (the KV-cache export, onnxruntime-genai's model builder; proven by
  generation against transformers, so both models are in memory while it validates);
- convert FILE.py:plain_lm -> plain.onnx (the torch exporter: input_ids -> logits, weights in plain.onnx.data;
  validated against the torch module at the example input);
- inspect plain.onnx and the genai folder;
- quantize plain.onnx: dynamic INT8 and `--weights int4` (each proven on data against plain.onnx, `--no-speed`), and
  dynamic INT8 again with its speed check (float and INT8 timed side by side, the int8 bound measured);
- validate plain.onnx vs its INT8 model (both sessions, batch by batch);
- package plain.onnx --target mlflow (the .data file copied inside the package).

Prints per verb: wall seconds, peak RSS in GiB and as a multiple of the float32 weight bytes, and the targets
(convert and quantize <= 2.5x the weight bytes) met or missed, with the CPU's ISA flags. Figures, not tests: a run
needs ~25 GiB of disk and ~8 GiB of memory at the default size; run small first:

    python benchmarks/large_model.py --layers 2 --hidden 256 --intermediate 512 --vocab 2000 [--workdir DIR] [--keep]
    python benchmarks/large_model.py            # ~0.7B parameters
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import work_folder  # noqa: E402
from mdeploy import machine  # noqa: E402  (after the path is set)

TARGET_RSS = 2.5  # convert and quantize: peak RSS <= this many times the float32 weight bytes
BUILD = """
import json, sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
sys.path.insert(0, {root!r})
from fixtures.models import tiny_lm

torch.manual_seed(0)
shape = json.loads(sys.argv[2])
tokenizer = tiny_lm._tokenizer(tiny_lm.corpus(), vocab=min(320, shape["vocab"]))
config = LlamaConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"], intermediate_size=shape["intermediate"],
                     num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                     num_key_value_heads=shape["kv_heads"], max_position_embeddings=2048, tie_word_embeddings=False,
                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
with torch.no_grad():
    model = LlamaForCausalLM(config).eval()
    for p in model.parameters():  # a small spread: the logits of a deep random model stay finite in float16 and int8
        p.mul_(0.5)
model.save_pretrained(sys.argv[1])
tokenizer.save_pretrained(sys.argv[1])
print(sum(p.numel() for p in model.parameters()))
"""


def plain_lm():  # noqa: ANN201 - the torch module convert exports
    """The saved model (LARGE_MODEL_DIR) as input_ids -> logits without a cache: what `convert FILE.py:plain_lm` reads."""
    import torch
    from transformers import LlamaForCausalLM

    class Logits(torch.nn.Module):
        def __init__(self, lm: torch.nn.Module) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.lm(input_ids=input_ids, use_cache=False).logits

    return Logits(LlamaForCausalLM.from_pretrained(os.environ["LARGE_MODEL_DIR"]).eval())


def measure(cmd: list[str], logs: Path, env: dict[str, str] | None = None) -> tuple[float, float, str, int]:
    """Wall seconds, peak RSS in bytes (os.wait4: this child and what it waited for), its stdout and exit code."""
    with open(logs / "stdout", "w+") as out, open(logs / "stderr", "w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, text=True, env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if code not in (0, 1):
        print(f"  {' '.join(map(str, cmd[2:6]))} ... failed ({code}): {stderr.strip()[-1500:]}")
    return wall, usage.ru_maxrss * 1024, stdout, code


def data_bytes(path: Path) -> int:
    """A folder's files, or a model file with its external data file beside it."""
    files = [path, *path.parent.glob(path.name + ".data")] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--intermediate", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--workdir", type=Path, help="where the models are written (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--skip", action="append", default=[], help="a verb row to skip (e.g. package), repeatable")
    args = parser.parse_args()
    shape = {k: getattr(args, k) for k in ("layers", "hidden", "intermediate", "heads", "kv_heads", "vocab")}
    work, logs = work_folder(args.workdir, "mdeploy_large_")
    py, cli = sys.executable, [sys.executable, "-m", "mdeploy"]
    print(f"CPU: {machine.describe()}")
    hf = work / "hf"
    if not (hf / "config.json").is_file():
        wall, rss, out, code = measure([py, "-c", BUILD.format(root=str(ROOT)), str(hf), json.dumps(shape)], logs)
        if code:
            raise SystemExit("building the model failed")
        print(f"built {int(out.split()[-1]) / 1e9:.3f}B parameters in {wall:.0f} s")
    weights = sum(p.stat().st_size for p in hf.glob("*.safetensors"))
    print(f"float32 weights: {weights / 2**30:.2f} GiB ({'past' if weights > 2**31 else 'below'} protobuf's 2 GB limit)")
    env = {"LARGE_MODEL_DIR": str(hf)}
    plain, genai = work / "plain.onnx", work / "genai"
    ids = "input_ids:1x16:int64"
    verbs = [
        ("convert hf -> genai (KV cache)", [*cli, "convert", hf, "-o", genai], True),
        ("convert torch -> onnx", [*cli, "convert", f"{Path(__file__).resolve()}:plain_lm", "-o", plain,
                                   "--input", ids], True),
        ("inspect onnx", [*cli, "inspect", plain], False),
        ("inspect genai", [*cli, "inspect", genai], False),
        ("quantize int8 (dynamic)", [*cli, "quantize", plain, "-o", work / "q8.onnx", "--no-speed"], True),
        ("quantize int8 + speed check", [*cli, "quantize", plain, "-o", work / "q8_timed.onnx"], True),
        ("quantize --weights int4", [*cli, "quantize", plain, "-o", work / "q4.onnx", "--weights", "int4",
                                     "--no-speed"], True),
        ("validate onnx vs int8", [*cli, "validate", plain, work / "q8.onnx", "--samples", "2"], False),
        ("package mlflow", [*cli, "package", plain, "--target", "mlflow", "-o", work / "pkg"], False),
    ]
    rows = []
    for name, cmd, targeted in verbs:
        if any(s in name for s in args.skip):
            continue
        wall, rss, out, code = measure([str(c) for c in cmd] + ["--json"] + (["--force"] if "-o" in cmd else []), logs, env)
        ratio = rss / weights
        verdict = ("met" if ratio <= TARGET_RSS else "MISSED") if targeted else "-"
        rows.append({"verb": name, "exit": code, "wall_s": wall, "peak_rss_gib": rss / 2**30, "rss_x_weights": ratio,
                     "target": f"<= {TARGET_RSS}x" if targeted else None, "verdict": verdict})
        print(f"{name:34} exit {code}  {wall:7.1f} s  peak RSS {rss / 2**30:6.2f} GiB = {ratio:4.2f}x weights  "
              f"{'target <= %.1fx: %s' % (TARGET_RSS, verdict) if targeted else ''}", flush=True)
    for produced in (plain, work / "q8.onnx", work / "q4.onnx", genai, work / "pkg"):
        if produced.exists():
            print(f"  {produced.name}: {data_bytes(produced) / 2**30:.2f} GiB on disk "
                  f"({', '.join(sorted(p.name for p in (produced.iterdir() if produced.is_dir() else [])))})".rstrip(" ()"))
    print(json.dumps({"cpu": machine.cpu_name(), "weights_bytes": weights, "shape": shape, "rows": rows}))
    if not args.keep and not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
