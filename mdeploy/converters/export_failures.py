"""What an exporter failure says in one line: the operator (else the module) it failed at, and its own reason."""

from __future__ import annotations

import re

from mdeploy.errors import ConversionError

_OP = re.compile(r"(aten[.:]{1,2}[A-Za-z_0-9]+(?:\.[A-Za-z_0-9]+)?|torch\.ops\.[\w.]+|prim::\w+|onnx::\w+)")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _clean(text: str) -> str:
    return _ANSI.sub("", text).strip()


def _failure_summary(exc: BaseException) -> tuple[str, str]:
    """Where an exporter failed (the operator, else the module) and its own explanation."""
    text = _clean(f"{exc}\n{exc.__cause__ or ''}")
    ops = [m for m in _OP.findall(text) if not m.startswith("onnx::")] or _OP.findall(text)
    module = re.search(r"(?:module|Module) [`']?([\w.]+)[`']?", text)
    where = f"operator {ops[0]}" if ops else (f"module {module.group(1)}" if module else "")
    return where, _reason(text)


def _reason(text: str) -> str:
    """The exporter's own explanation: its exception summary when it has one, else its first line."""
    summary = re.search(r"## Exception summary\s+(.+)", text)
    line = summary.group(1) if summary else text.splitlines()[0] if text else "unknown error"
    return line if len(line) <= 300 else line[:297] + "..."


def note(exporter: str, exc: BaseException) -> str:
    where, reason = _failure_summary(exc)
    return f"the {exporter} exporter failed{' at ' + where if where else ''} ({reason})"


def export_error(failures: list[tuple[str, BaseException]]) -> ConversionError:
    """One line naming the operator or module that failed; the exporters' own messages follow as the hint."""
    exporter, exc = failures[0]
    where, reason = _failure_summary(exc)
    message = f"the {exporter} exporter failed{' at ' + where if where else ''}"
    hints = [reason] + [note(e, x) for e, x in failures[1:]]
    return ConversionError(message, hint=" | ".join(hints) + " (--debug shows the traceback)")
