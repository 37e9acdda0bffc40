"""Proof by generation: a language model is judged by what its users see, the tokens it generates.

Both models continue the same prompts greedily (the source with transformers on the CPU, the candidate with
onnxruntime-genai; either side may be either kind): the rate of generated tokens that agree position by position,
the first position where they diverge, and the cosine and max abs error of the logits at the prefill and at every
decode step up to that divergence (after it the two models are fed different tokens, and their logits no longer
answer the same question). With a text, the perplexity of both on it and their ratio: the number quoted for int4.

The models run one after the other, never loaded at once. The verdict is an accuracy bar (validation/bar.py): the
user's `--max-error`, else the default for the candidate's precision (fp32: every token the same).
`compare()` is what validate, convert, benchmarks and serving call.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mdeploy.core import Format, ModelRef
from mdeploy.errors import InputError
from mdeploy.progress import Advance, no_progress
from mdeploy.validation.bar import Bar, Verdict, parse_bar

if TYPE_CHECKING:
    from mdeploy.reports.report import Report, Step

# The bar a candidate is held to when the user gives none, by the precision of its weights. fp32 must generate every
# token the source does; quantized weights may flip near-ties late in a continuation, never the logits' direction.
# perplexity-ratio is judged only when a text is given.
DEFAULT_BARS = {
    "fp32": "token-match>=1,cosine>=0.9999,perplexity-ratio<=1.001",
    "fp16": "token-match>=0.9,cosine>=0.999,perplexity-ratio<=1.01",
    "int8": "token-match>=0.75,cosine>=0.99,perplexity-ratio<=1.05",
    "int4": "token-match>=0.5,cosine>=0.95,perplexity-ratio<=1.15",
}
# convert's own proof: a few prompts, a few tokens (validate --generate goes further)
DEFAULT_PROMPTS = ("The", "Once upon a time", "1 2 3 4", "def main():")
CONVERT_NEW_TOKENS = 16


@dataclass
class Prompt:
    ids: list[int]
    text: str | None = None


@dataclass
class PromptResult:
    """One prompt's continuations and the logits error at each step both models saw the same tokens."""

    prompt: Prompt
    source: list[int]
    candidate: list[int]
    cosine: list[float]  # per compared step; step 0 is the prefill
    max_abs: list[float]
    source_text: str | None = None
    candidate_text: str | None = None

    @property
    def first_divergence(self) -> int | None:
        """The first generated position where the tokens differ (or one side has ended); None when all agree."""
        for i, (s, c) in enumerate(zip(self.source, self.candidate)):
            if s != c:
                return i
        return None if len(self.source) == len(self.candidate) else min(len(self.source), len(self.candidate))

    @property
    def matched(self) -> int:
        return sum(s == c for s, c in zip(self.source, self.candidate))

    @property
    def positions(self) -> int:
        return max(len(self.source), len(self.candidate))

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt.text, "prompt_ids": self.prompt.ids, "source_tokens": self.source,
                "candidate_tokens": self.candidate, "source_text": self.source_text, "candidate_text": self.candidate_text,
                "token_match": self.matched / self.positions if self.positions else 1.0,
                "first_divergence": self.first_divergence,
                "steps": [{"step": i, "cosine": c, "max_abs": a} for i, (c, a) in enumerate(zip(self.cosine, self.max_abs))]}


@dataclass
class Perplexity:
    source: float
    candidate: float
    tokens: int
    window: int

    @property
    def ratio(self) -> float:
        return self.candidate / self.source

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "candidate": self.candidate, "ratio": self.ratio,
                "difference": self.candidate - self.source, "tokens": self.tokens, "window": self.window}


@dataclass
class GenerationResult:
    """Every number of a proof by generation, and the bar's verdict on them; truthy when the bar is met."""

    prompts: list[PromptResult]
    max_new_tokens: int
    precision: str
    perplexity: Perplexity | None = None
    verdict: Verdict | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def token_match(self) -> float:
        positions = sum(p.positions for p in self.prompts)
        return sum(p.matched for p in self.prompts) / positions if positions else 1.0

    def _worst(self, values: str, step: slice, pick: Any) -> float | None:
        seen = [v for p in self.prompts for v in getattr(p, values)[step]]
        return float(pick(seen)) if seen else None

    def metric(self, name: str) -> float | None:
        """token-match, cosine (worst step), max-abs (worst step), perplexity-ratio; None when not measured (the bar
        reads these, as it reads a Proof's)."""
        if name == "token-match":
            return self.token_match
        if name == "cosine":
            return self._worst("cosine", slice(None), min)
        if name == "max-abs":
            return self._worst("max_abs", slice(None), max)
        if name == "perplexity-ratio":
            return self.perplexity.ratio if self.perplexity else None
        return None

    def __bool__(self) -> bool:
        return self.verdict is None or self.verdict.met

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision, "max_new_tokens": self.max_new_tokens, "token_match": self.token_match,
            "first_divergence": [p.first_divergence for p in self.prompts],
            "prefill": {"cosine": self._worst("cosine", slice(0, 1), min), "max_abs": self._worst("max_abs", slice(0, 1), max)},
            "decode": {"cosine": self._worst("cosine", slice(1, None), min),
                       "max_abs": self._worst("max_abs", slice(1, None), max)},
            "perplexity": self.perplexity.to_dict() if self.perplexity else None,
            "max_error": self.verdict.to_dict() if self.verdict else None,
            "prompts": [p.to_dict() for p in self.prompts], "notes": self.notes,
        }


def check_lm(ref: ModelRef) -> None:
    """Exit 2 unless `ref` is a language model folder (before any model is loaded)."""
    if ref.format not in (Format.HF_MODEL, Format.GENAI):
        raise InputError(f"{ref.name} is not a language model folder (its format: {ref.format.value})",
                         hint="give a Hugging Face model folder (config.json + safetensors) or an onnxruntime-genai folder")


def open_lm(ref: ModelRef) -> Any:
    """The generating model for either kind of folder: `greedy(ids, n)`, `nll(ids)`, `max_length`, `release()`."""
    check_lm(ref)
    if ref.format == Format.HF_MODEL:
        from mdeploy.frameworks.hf_models import CausalLM

        return CausalLM(ref.path)
    from mdeploy.frameworks.genai_models import GenaiLM

    return GenaiLM(ref.path)


def precision_of(ref: ModelRef) -> str:
    """The precision of a candidate's weights, which picks the default bar (a Hugging Face folder: fp32)."""
    if ref.format == Format.GENAI:
        from mdeploy.frameworks import genai_models

        return genai_models.precision(ref.path)
    return "fp32"


def read_prompts(tokenizer_dir: Path, prompts: str | Path | None = None, data: str | Path | None = None,
                 vocab: int | None = None) -> list[Prompt]:
    """The prompts: one per non-empty line of a text file (tokenized with the source's tokenizer), token ids from an
    .npz (`input_ids`, one row per prompt), or DEFAULT_PROMPTS."""
    from mdeploy.frameworks import hf_models

    if prompts is not None and data is not None:
        raise InputError("give --prompts or --data, not both")
    if data is not None:
        return _prompts_from_ids(Path(data), vocab)
    if prompts is None:
        texts = list(DEFAULT_PROMPTS)
    else:
        path = Path(prompts)
        try:
            texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except FileNotFoundError:
            raise InputError(f"prompts file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read prompts file {path}: {exc}", hint="one prompt per line, UTF-8 text") from None
        if not texts:
            raise InputError(f"prompts file {path} has no prompts", hint="one prompt per line, UTF-8 text")
    ids = hf_models.tokenize(tokenizer_dir, texts)
    empty = [t for t, i in zip(texts, ids) if not i]
    if empty:
        raise InputError(f"the prompt {empty[0]!r} is no tokens")
    return [Prompt(i, t) for t, i in zip(texts, ids)]


def _prompts_from_ids(path: Path, vocab: int | None) -> list[Prompt]:
    from mdeploy.validation.inputs import load_arrays

    arrays = load_arrays(path)
    ids = arrays.get("input_ids", next(iter(arrays.values())) if len(arrays) == 1 else None)
    if ids is None:
        raise InputError(f"{path} has no `input_ids` array", hint="give token ids as input_ids (one row per prompt)")
    if ids.dtype.kind not in "iu" or ids.ndim not in (1, 2) or ids.size == 0:
        raise InputError(f"input_ids in {path} are {ids.dtype} of shape {list(ids.shape)}",
                         hint="token ids are integers, one row per prompt: shape (prompts, tokens)")
    rows = ids.reshape(1, -1) if ids.ndim == 1 else ids
    if ids.min() < 0 or (vocab is not None and ids.max() >= vocab):
        raise InputError(f"input_ids in {path} hold ids outside the vocabulary (0 to {vocab - 1 if vocab else '...'})")
    return [Prompt([int(t) for t in row]) for row in rows]


def compare(source: ModelRef, candidate: ModelRef, prompts: list[Prompt], max_new_tokens: int = 32,
            text: str | None = None, bar: Bar | None = None, precision: str | None = None,
            progress: Advance | None = None) -> GenerationResult:
    """Greedy generation from both models on `prompts`, logits compared step by step; perplexity on `text`; judged by
    `bar`, else the default bar for `precision` (else the candidate's, read from its weights)."""
    if max_new_tokens < 1:
        raise InputError(f"--max-new-tokens {max_new_tokens}: generate at least one token")
    precision = precision or precision_of(candidate)
    text_ids = _text_ids(source, text) if text is not None else None
    runs = []
    for ref in (source, candidate):  # one model in memory at a time
        lm = open_lm(ref)
        try:
            generated = [lm.greedy(p.ids, max_new_tokens) for p in prompts]
            window = min(lm.max_length or 512, 512)
            nll = _nll(lm, text_ids, window) if text_ids is not None else None
        finally:
            lm.release()
            del lm
        runs.append((generated, nll, window))
        if progress:
            progress()
    results = [_prompt_result(p, s, c) for p, s, c in zip(prompts, runs[0][0], runs[1][0])]
    _decode(source, results)
    perplexity = None
    if text_ids is not None:
        (s_nll, count), (c_nll, _) = runs[0][1], runs[1][1]
        perplexity = Perplexity(math.exp(s_nll / count), math.exp(c_nll / count), count, min(runs[0][2], runs[1][2]))
    result = GenerationResult(results, max_new_tokens, precision, perplexity)
    result.verdict = judge(result, bar)
    return result


def judge(result: GenerationResult, bar: Bar | None) -> Verdict:
    """The user's bar (a metric it names that was not measured is exit 2), else the precision's default bar without
    what was not measured (perplexity without a text)."""
    if bar is not None:
        return bar.judge(result)
    default = parse_bar(DEFAULT_BARS[result.precision])
    return Bar(tuple(c for c in default.criteria if result.metric(c.metric) is not None)).judge(result)


def _text_ids(source: ModelRef, text: str) -> list[int]:
    from mdeploy.frameworks import hf_models

    ids = hf_models.tokenize(source.path, [text])[0]
    if len(ids) < 2:
        raise InputError("the --text file is shorter than two tokens: there is nothing to predict")
    return ids


def _nll(lm: Any, ids: list[int], window: int) -> tuple[float, int]:
    """Summed negative log-likelihood over consecutive windows of the text (each window predicts its tokens after the
    first), and how many tokens were predicted: the same windows on both sides."""
    total, count = 0.0, 0
    for start in range(0, len(ids), window):
        chunk = ids[start : start + window]
        if len(chunk) >= 2:
            total += lm.nll(chunk)
            count += len(chunk) - 1
    return total, count


def _prompt_result(prompt: Prompt, source: tuple[list[int], np.ndarray], candidate: tuple[list[int], np.ndarray]) -> PromptResult:
    result = PromptResult(prompt, source[0], candidate[0], [], [])
    first = result.first_divergence
    steps = min(len(source[1]), len(candidate[1]), len(source[0]) if first is None else first + 1)
    for ref, cand in zip(source[1][:steps], candidate[1][:steps]):
        ref, cand = ref.astype(np.float64), cand.astype(np.float64)
        norm = np.linalg.norm(ref) * np.linalg.norm(cand)
        result.cosine.append(float(ref @ cand / norm) if norm else float(np.array_equal(ref, cand)))
        result.max_abs.append(float(np.abs(ref - cand).max()))
    return result


def _decode(source: ModelRef, results: list[PromptResult]) -> None:
    """The continuations as text, when the source has a tokenizer (for people reading the report)."""
    from mdeploy.frameworks import hf_models

    decode = hf_models.decoder(source.path)
    if decode is None:
        return
    for r in results:
        r.source_text, r.candidate_text = decode(r.source), decode(r.candidate)


def prove(reference: ModelRef, candidate: ModelRef, prompts: str | None = None, data: str | None = None,
          text: str | None = None, max_new_tokens: int = 32, precision: str | None = None,
          max_error: str | None = None, progress: Any = None) -> Report:
    """`validate REF CAND --generate`: the proof as a report (its `generate` step fails when the bar is missed)."""
    from mdeploy.reports.report import Report

    bar = parse_bar(max_error) if max_error is not None else None
    check_lm(reference)
    check_lm(candidate)
    text_value = _read_text(text) if text is not None else None
    found = read_prompts(reference.path, prompts, data, _vocab(reference))
    start = time.perf_counter()
    with (progress or no_progress)("generating", 2) as advance:
        result = compare(reference, candidate, found, max_new_tokens, text_value, bar, precision, advance)
    source = {"prompts": prompts} if prompts else {"data": data} if data else {"prompts": "default"}
    report = Report(command="validate", data={"reference": reference.name, "candidate": candidate.name, **source,
                                              "generation": result.to_dict()})
    report.steps.append(step(result, time.perf_counter() - start))
    report.notes.extend(result.notes)
    return report


def prove_conversion(source: ModelRef, staged: ModelRef, final: ModelRef, precision: str | None, report: Report) -> None:
    """convert's proof of a language model: the default prompts, CONVERT_NEW_TOKENS tokens each, at the precision it
    was built at; recorded in `report` (data `generation`, step `generate`)."""
    from mdeploy.frameworks import genai_models
    from mdeploy.reports.report import Step

    why_not = genai_models.runs_here(staged.path)
    if why_not:  # built for CUDA on a machine without it: written, and said to be unproven
        why_not = why_not.replace(staged.path.name, final.path.name)
        report.notes.append(f"not validated: {why_not}; prove it there with mdeploy validate SRC {final.path.name} --generate")
        report.steps.append(Step("generate", "skipped", {"reason": why_not}))
        return
    start = time.perf_counter()
    result = compare(source, staged, read_prompts(source.path, vocab=_vocab(source)), CONVERT_NEW_TOKENS,
                     precision=precision or "fp32")
    report.data["generation"] = result.to_dict()
    report.steps.append(step(result, time.perf_counter() - start))
    report.notes.extend(n.replace(str(staged.path), str(final.path)) for n in result.notes)


def step(result: GenerationResult, seconds: float) -> Step:
    """The report's `generate` step: passed when the bar is met, with the bar and what it missed."""
    from mdeploy.reports.report import Step

    verdict = result.verdict
    details = {"token_match": result.token_match, **({"bar": str(verdict.bar), "missed": verdict.missed} if verdict else {})}
    return Step("generate", "passed" if result else "failed", details, seconds)


def _read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"text file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read text file {path}: {exc}", hint="--text is UTF-8 text to measure perplexity on") from None


def _vocab(ref: ModelRef) -> int | None:
    """The vocabulary size that bounds token ids from --data."""
    if ref.format == Format.HF_MODEL:
        from mdeploy.frameworks import hf_models

        size = hf_models.read_config(ref.path).get("vocab_size")
    else:
        from mdeploy.frameworks import genai_models

        size = genai_models.read_config(ref.path)["model"].get("vocab_size")
    return int(size) if isinstance(size, int) else None
