"""Hugging Face language models on the CPU: what a `save_pretrained` folder is, and greedy generation from it.

The source side of every proof by generation (validation/generation.py) and of the benchmarks: transformers runs the
model with its own KV cache, one token at a time, exactly as `model.generate(do_sample=False)` would, and keeps the
logits of every step so that the candidate's can be compared to them. Nothing is downloaded: the folder is read with
`local_files_only`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mdeploy.deps import require
from mdeploy.errors import InputError, ModelLoadError, first_line
from mdeploy.logs import framework_output, quiet_loggers

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "generation_config.json")


def read_config(path: Path) -> dict[str, Any]:
    """config.json of a model folder, read without transformers (a refusal needs no framework)."""
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {Path(path) / 'config.json'}: {exc}") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{Path(path) / 'config.json'} is not a JSON object")
    return config


def architecture(path: Path) -> str:
    """The model class config.json names (`LlamaForCausalLM`), or its model_type when it names none."""
    config = read_config(path)
    names = config.get("architectures") or []
    return str(names[0]) if names else str(config.get("model_type", "unknown"))


def eos_ids(path: Path) -> set[int]:
    """The token ids that end a generation: generation_config.json's, else config.json's."""
    ids: set[int] = set()
    for name in ("generation_config.json", "config.json"):
        file = Path(path) / name
        if file.is_file():
            try:
                value = json.loads(file.read_text()).get("eos_token_id")
            except (OSError, ValueError):
                continue
            ids = set(value) if isinstance(value, list) else ({value} if isinstance(value, int) else set())
            if ids:
                return ids
    return ids


def transformers():
    module = require("transformers", extra="llm", purpose="run Hugging Face language models")
    quiet_loggers()
    module.logging.set_verbosity_error()
    module.utils.logging.disable_progress_bar()
    return module


def tokenize(path: Path, texts: list[str]) -> list[list[int]]:
    """Token ids of each text with the model folder's own tokenizer (no special tokens added: a prompt is what the user
    wrote, on both sides of a comparison)."""
    tf = transformers()
    try:
        with framework_output():
            tokenizer = tf.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read the tokenizer files
        raise InputError(f"cannot read the tokenizer of {path}: {first_line(exc)}",
                         hint="a prompts file needs the model's tokenizer files (tokenizer.json); or give token ids with --data") from None
    return [list(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts]


def decoder(path: Path) -> Any:
    """A function from token ids to text with the folder's tokenizer, or None when it has none."""
    if not any((Path(path) / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        return None
    tf = transformers()
    try:
        with framework_output():
            tokenizer = tf.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception:  # noqa: BLE001 - text is a courtesy in the report; the ids are the proof
        return None
    return lambda ids: tokenizer.decode(ids)


class CausalLM:
    """A transformers causal LM, in float32 on the CPU, loaded once for every prompt of a comparison."""

    def __init__(self, path: Path) -> None:
        tf = transformers()
        self.torch = require("torch", extra="torch", purpose="run Hugging Face language models")
        try:
            with framework_output():
                self.model = tf.AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True,
                                                                     dtype=self.torch.float32)
        except Exception as exc:  # noqa: BLE001 - a folder transformers cannot build a model from
            raise ModelLoadError(f"cannot load the language model in {path}: {first_line(exc)}") from None
        self.model.eval()
        self.eos = eos_ids(path)
        config = self.model.config
        self.max_length = int(getattr(config, "max_position_embeddings", 0) or 0) or None

    def greedy(self, ids: list[int], max_new_tokens: int) -> tuple[list[int], np.ndarray]:
        """Greedy continuation of `ids`: the new tokens (ending at an end-of-sequence token, which is kept) and the
        logits each was chosen from (steps x vocab, float32): step 0 is the prefill's last position."""
        torch = self.torch
        tokens: list[int] = []
        logits: list[np.ndarray] = []
        with torch.no_grad():
            out = self.model(input_ids=torch.tensor([ids]), use_cache=True)
            for _ in range(max_new_tokens):
                last = out.logits[0, -1].float()
                logits.append(last.numpy().copy())
                token = int(last.argmax())
                tokens.append(token)
                if token in self.eos:
                    break
                out = self.model(input_ids=torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)
        return tokens, np.stack(logits) if logits else np.zeros((0, 0), np.float32)

    def nll(self, ids: list[int]) -> float:
        """Summed negative log-likelihood of ids[1:] given what precedes each (one forward pass)."""
        torch = self.torch
        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
            return float(torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum"))

    def release(self) -> None:
        del self.model
        import gc

        gc.collect()
