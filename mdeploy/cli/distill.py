"""`mdeploy distill`: a teacher in any format -> a small torch student, exported and proven on held-out data.

Epoch lines go to stderr as plain text where there is no progress bar (CI logs), unless --json or --quiet; on
Ctrl-C / SIGTERM the best checkpoint so far is said there before the usual `interrupted`.
"""

from __future__ import annotations

import functools
import sys
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from mdeploy.cli.common import show_comparisons, stderr, stdout, verdict
from mdeploy.cli.generate import command as _command
from mdeploy.verbs import distill as verb

if TYPE_CHECKING:
    from mdeploy.reports.report import Report


def _show(report: Report) -> None:
    d = report.data
    t = d.get("training", {})
    stdout.print(f"[bold]distilled[/] {d['teacher']} -> {d['student']} -> {d['output']} ({d['loss']} on '{d['distilled_output']}')")
    stdout.print(f"best epoch {t.get('best_epoch')} of {t.get('epochs_run')}"
                 + (" (stopped early)" if t.get("stopped_early") else "")
                 + f", held-out {t.get('held_out')}: " + ", ".join(f"{k} {v:.4f}" for k, v in (t.get("best") or {}).items()))
    if t.get("refit"):
        r = t["refit"]
        stdout.print(f"refit on all {r['samples']} samples of --data for {r['epochs']} epochs (the best epoch count above)")
    for note in report.notes:
        stdout.print(f"  [dim]{note}[/]")
    acc = d.get("accuracy")
    if acc:
        stdout.print(f"accuracy on {acc['samples']} held-out samples: teacher {acc['teacher']:.4f}, student {acc['student']:.4f} "
                     f"(drop {acc['drop'] * 100:+.2f} points)")
    models = d.get("models")
    if models:
        for role in ("teacher", "student"):
            m = models[role]
            size = f"{m['size_bytes'] / 1024:.1f} KiB" if m.get("size_bytes") else "-"
            params = f"{m['parameters']:,}" if m.get("parameters") is not None else "-"
            stdout.print(f"  {role:8} {m['format']:18} size {size:>10}  parameters {params:>10}  "
                         f"latency {m['latency_ms_median']:.3f} ms (median, batch {models['latency_batch']})")
    if d.get("weights"):
        stdout.print(f"state_dict: {d['weights']} (use {d['student']} --weights {d['weights']})")
    show_comparisons(report)
    verdict(report, f"wrote {d['output']}")


def _plain(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _run(options: Any, progress: Any, echo: Any) -> Report:
    try:
        return verb.run(options, progress, echo)
    except verb.Interrupted as exc:
        stderr.print(exc.summary)
        raise


_inner_verb = SimpleNamespace(Options=verb.Options, run=verb.run, __name__=verb.__name__)
_inner = _command(_inner_verb, _show)


@functools.wraps(_inner)
def command(**given: Any) -> None:
    plain = not (given.get("json_") or given.get("quiet")) and not sys.stderr.isatty()
    _inner_verb.run = functools.partial(_run, echo=_plain if plain else None)
    _inner_verb.run.__doc__ = verb.run.__doc__
    _inner(**given)
