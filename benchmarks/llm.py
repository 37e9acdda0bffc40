"""Speed of generation through mdeploy, side by side in one run: transformers fp32, mdeploy's onnxruntime-genai fp32,
int8 and int4 folders (`mdeploy convert HF -o DIR --precision P`), and onnxruntime-genai's model builder run directly
(`python -m onnxruntime_genai.models.builder -p int4`: the builder's own figure) on the same model.

The model is a random-init Llama built from a config (default the 349M of issue 19: 24 layers, hidden 1024, FFN 2816,
GQA 16/8, vocab 32000, untied embeddings; `--small` for a quick run). Each figure is `mdeploy benchmark FOLDER
--threads 2 --prompt-tokens 32 --new-tokens 64` in its own process (measuring/generation_speed.py: prompt ms = prefill
up to the first new token, decode tokens/s after it, medians of `--runs`), its peak RSS read from os.wait4. Rounds
alternate the models so that machine noise hits them alike; the best round's median counts (others' load on a shared
machine only slows a run down).

Quality: the trained tiny LM (fixtures/models/tiny_lm.py) converted at fp32 and int4, its perplexity on held-out text
(`mdeploy validate HF INT4 --generate --text`) against transformers fp32.

Targets (printed met/missed): mdeploy int4 >= 0.95x the builder's own int4 figure; >= 6x transformers fp32 decode
tokens/s; int4 perplexity within 5% of fp32 on the trained tiny LM.

    python benchmarks/llm.py [--small] [--rounds 2] [--runs 3] [--workdir DIR]
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

FULL = {"layers": 24, "hidden": 1024, "intermediate": 2816, "heads": 16, "kv_heads": 8, "vocab": 32000}
SMALL = {"layers": 4, "hidden": 256, "intermediate": 704, "heads": 8, "kv_heads": 4, "vocab": 4000}
BUILD = """
import json, sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
sys.path.insert(0, {root!r})
from fixtures.models import tiny_lm

torch.manual_seed(0)
shape = json.loads(sys.argv[2])
tokenizer = tiny_lm._tokenizer(tiny_lm.corpus(), vocab=320)
config = LlamaConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"], intermediate_size=shape["intermediate"],
                     num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                     num_key_value_heads=shape["kv_heads"], max_position_embeddings=2048, tie_word_embeddings=False,
                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
model = LlamaForCausalLM(config).eval()
model.save_pretrained(sys.argv[1])
tokenizer.save_pretrained(sys.argv[1])
print(sum(p.numel() for p in model.parameters()))
"""
BUILDER = """
import os, sys
from onnxruntime_genai.models import builder
src, out, precision, cache = sys.argv[1:5]
extra = builder.parse_extra_options("", src, out, precision, "cpu", cache, [])
builder.create_model("", src, out, precision, "cpu", cache, **extra)
"""
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def run(cmd: list, logs: Path) -> tuple[float, int, str]:
    """Wall seconds, peak RSS bytes (os.wait4: this child alone) and stdout; exits on a failure."""
    with open(logs / "stdout", "w+") as out, open(logs / "stderr", "w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, stdout=out, stderr=err, text=True,
                                env={**os.environ, **OFFLINE})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise SystemExit(f"{' '.join(map(str, cmd[:6]))} ... failed ({code}):\n{stderr[-3000:]}")
    return wall, usage.ru_maxrss * 1024, stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="a 4-layer, hidden-256 model (quick)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="timed generations per round and model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    shape = SMALL if args.small else FULL
    work, logs = work_folder(args.workdir, "mdeploy_llm_")
    py, cli = sys.executable, [sys.executable, "-m", "mdeploy"]
    import onnxruntime
    import onnxruntime_genai

    print(f"CPU: {machine.describe()}")
    print(f"onnxruntime {onnxruntime.__version__}, onnxruntime-genai {onnxruntime_genai.__version__}; "
          f"{args.threads} threads, 32-token prompt, 64 new tokens")
    hf = work / "hf"
    if not (hf / "config.json").is_file():
        _, _, out = run([py, "-c", BUILD.format(root=str(ROOT)), hf, json.dumps(shape)], logs)
        print(f"model: {int(out.split()[-1]) / 1e6:.0f}M parameters {shape}")
    folders = {"transformers fp32": hf}
    for precision in ("fp32", "int8", "int4"):
        folder = work / f"mdeploy_{precision}"
        if not (folder / "genai_config.json").is_file():
            wall, rss, _ = run([*cli, "convert", hf, "-o", folder, "--precision", precision, "--no-validate", "--force"], logs)
            print(f"mdeploy convert --precision {precision}: {wall:.1f} s, peak RSS {rss / 2**30:.2f} GiB")
        folders[f"mdeploy {precision}"] = folder
    builder = work / "builder_int4"
    if not (builder / "genai_config.json").is_file():
        wall, rss, _ = run([py, "-c", BUILDER, hf, builder, "int4", work / "builder_cache"], logs)
        shutil.rmtree(work / "builder_cache", ignore_errors=True)
        print(f"builder -p int4 (direct): {wall:.1f} s, peak RSS {rss / 2**30:.2f} GiB")
    folders["builder int4 (direct)"] = builder

    best: dict[str, dict] = {}
    for _ in range(args.rounds):
        for name, folder in folders.items():
            _, rss, out = run([*cli, "benchmark", folder, "--threads", args.threads, "--prompt-tokens", 32,
                               "--new-tokens", 64, "--iterations", args.runs, "--json"], logs)
            row = json.loads(out)["models"][0]
            row["process_peak_rss"] = rss
            if name not in best or row["decode_tokens_per_s"] > best[name]["decode_tokens_per_s"]:
                best[name] = row
    base = best["transformers fp32"]["decode_tokens_per_s"]
    print(f"\n{'model':24} {'prompt ms':>9} {'decode tok/s':>12} {'vs transformers':>15} {'peak RSS':>9} {'size':>9}")
    for name, row in best.items():
        size = sum(p.stat().st_size for p in Path(folders[name]).iterdir() if p.is_file())
        print(f"{name:24} {row['prompt_ms']:9.1f} {row['decode_tokens_per_s']:12.1f} "
              f"{row['decode_tokens_per_s'] / base:14.2f}x {row['process_peak_rss'] / 2**20:6.0f} MiB "
              f"{size / 2**20:6.0f} MiB")

    tiny = work / "tiny_lm"
    if not (tiny / "config.json").is_file():
        from fixtures.models import tiny_lm

        tiny_lm.build(tiny)
        (work / "eval.txt").write_text(tiny_lm.eval_text())
    tiny_int4 = work / "tiny_int4"
    if not (tiny_int4 / "genai_config.json").is_file():
        run([*cli, "convert", tiny, "-o", tiny_int4, "--precision", "int4", "--no-validate", "--force"], logs)
    _, _, out = run([*cli, "validate", tiny, tiny_int4, "--generate", "--text", work / "eval.txt", "--json"], logs)
    ppl = json.loads(out)["generation"]["perplexity"]
    print(f"\ntiny LM perplexity on held-out text: transformers fp32 {ppl['source']:.3f}, mdeploy int4 "
          f"{ppl['candidate']:.3f} (ratio {ppl['ratio']:.4f})")

    int4 = best["mdeploy int4"]["decode_tokens_per_s"]
    targets = [
        ("mdeploy int4 >= 0.95x the builder's own int4", int4 / best["builder int4 (direct)"]["decode_tokens_per_s"], 0.95),
        ("mdeploy int4 >= 6x transformers fp32", int4 / base, 6.0),
        ("int4 perplexity within 5% of fp32 (ratio <= 1.05)", ppl["ratio"], 1.05),
    ]
    print()
    for text, value, bar in targets:
        met = value <= bar if "perplexity" in text else value >= bar
        print(f"{'met   ' if met else 'MISSED'} {text}: {value:.3f}")
    print(json.dumps({"cpu": machine.cpu_name(), "flags": machine.cpu_flags(), "shape": shape,
                      "rows": {k: {f: v[f] for f in ("prompt_ms", "decode_tokens_per_s", "process_peak_rss")}
                               for k, v in best.items()}, "perplexity": ppl}))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
