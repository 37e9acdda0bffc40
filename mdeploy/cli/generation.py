"""The proof by generation on a terminal (validate --generate, convert to an onnxruntime-genai folder): one row per
prompt with what each model generated, the logits error, and the verdict of the bar."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from mdeploy.cli.common import stdout

if TYPE_CHECKING:
    from mdeploy.reports.report import Report


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def show_generation(report: Report) -> None:
    """The `generation` record of a report as a table and a few lines; the caller prints the notes and the verdict."""
    gen = report.data["generation"]
    table = Table(title=f"greedy generation, {gen['max_new_tokens']} new tokens — {gen['precision']}", title_justify="left")
    for column in ("prompt", "source", "candidate", "match", "diverges at", "min cosine", "max abs"):
        table.add_column(column, justify="left" if column in ("prompt", "source", "candidate") else "right")
    for p in gen["prompts"]:
        source = p["source_text"] if p["source_text"] is not None else " ".join(map(str, p["source_tokens"]))
        cand = p["candidate_text"] if p["candidate_text"] is not None else " ".join(map(str, p["candidate_tokens"]))
        prompt = p["prompt"] if p["prompt"] is not None else " ".join(map(str, p["prompt_ids"]))
        steps = p["steps"]
        table.add_row(escape(repr(prompt)[1:-1]), escape(repr(source)[1:-1]), escape(repr(cand)[1:-1]),
                      f"{p['token_match']:.3f}", _num(p["first_divergence"], "d"),
                      _num(min((s["cosine"] for s in steps), default=None), ".6f"),
                      _num(max((s["max_abs"] for s in steps), default=None), ".3g"),
                      style=None if p["first_divergence"] is None else "yellow")
    stdout.print(table)
    stdout.print(f"token match {gen['token_match']:.4f}; logits at prefill: cosine {_num(gen['prefill']['cosine'], '.6f')}, "
                 f"max abs {_num(gen['prefill']['max_abs'], '.3g')}; at decode steps: cosine "
                 f"{_num(gen['decode']['cosine'], '.6f')}, max abs {_num(gen['decode']['max_abs'], '.3g')}")
    ppl = gen.get("perplexity")
    if ppl:
        stdout.print(f"perplexity on {ppl['tokens']} tokens: source {ppl['source']:.4f}, candidate {ppl['candidate']:.4f} "
                     f"(ratio {ppl['ratio']:.4f}, difference {ppl['difference']:+.4f})")
    bar = gen.get("max_error")
    if bar:
        line = f"bar {bar['bar']}: " + ("met" if bar["met"] else "missed: " + "; ".join(bar["missed"]))
        stdout.print(escape(line), style=None if bar["met"] else "red")
