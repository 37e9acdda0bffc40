"""`mdeploy distill`: a teacher in any format -> a small torch student, exported and proven on held-out data.

Epoch lines go to stderr as plain text where there is no progress bar (CI logs), unless --json or --quiet; on
Ctrl-C / SIGTERM the best checkpoint so far is said there before the usual `interrupted`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from mdeploy.cli.common import Output, show_comparisons, stderr, stdout, verdict
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
        stdout.print(f"refit on all {r['samples']} samples of --data: {r['epochs']} epochs, {r['steps']} steps ({r['length']}), "
                     f"learning rate {r['history'][0]['lr']:.2e} -> {r['history'][-1]['lr']:.2e}")
    for note in report.notes:
        stdout.print(f"  [dim]{note}[/]")
    acc = d.get("accuracy")
    if acc:
        stdout.print(f"accuracy on {acc['samples']} labelled held-out samples: teacher {acc['teacher']:.4f}, student {acc['student']:.4f} "
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


def _run(options: verb.Options, out: Output) -> Report:
    """The verb, with epoch lines as plain stderr text where no progress bar shows them (not a terminal, no --json or
    --quiet), and the best checkpoint said on an interruption."""
    plain = not (out.json or out.quiet) and not sys.stderr.isatty()
    try:
        return verb.run(options, out.progress, _plain if plain else None)
    except verb.Interrupted as exc:
        stderr.print(exc.summary)
        raise


command = _command(verb, _show, run=_run)
