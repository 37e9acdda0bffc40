"""The one exception hierarchy of mdeploy.

Every failure a user can fix (bad input, a missing dependency, a conversion the exporter refuses) is an
MdeployError: the CLI prints its message as one `error:` line, its hint as one `hint:` line, and exits with
the class's exit code. Anything else that escapes is a bug and gets a traceback (exit 3).
"""

from __future__ import annotations

import re


class MdeployError(Exception):
    """A problem the user can act on. `hint` says what to do about it."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class InputError(MdeployError):
    """A path, option or data file that is missing, malformed or does not fit the model."""


class ModelLoadError(MdeployError):
    """A model file that cannot be read: corrupt, truncated, wrong format, or unsafe to load."""


class MissingDependencyError(MdeployError):
    """An optional framework that the requested operation needs is not installed."""


class ConversionError(MdeployError):
    """An exporter or converter refused the model."""


class OutputExistsError(MdeployError):
    """The output path exists and `--force` was not given."""


# onnxruntime's status prefix: "[ONNXRuntimeError] : 1 : FAIL : "
_ORT_STATUS = re.compile(r"\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*")
# "Load model from /x/m.onnx failed:" (mdeploy's own line already names the file)
_ORT_LOAD = re.compile(r"Load model from .*? failed:\s*")
# a C/C++ source location: /onnxruntime_src/onnxruntime/core/graph/model.cc:256, tensorflow/lite/kernels/reshape.cc:92
_SOURCE = re.compile(r"(?:[A-Za-z]:)?[\w.+\\/-]*\.(?:cc|cpp|cxx|c|h|hpp|hh|cu|cuh|inl):\d+(?::\d+)?")
# a Python frame of a framework's own code
_PY_FRAME = re.compile(
    r"File \"[^\"]+\", line \d+(?:, in [\w<>.]+)?|(?:/[\w.+-]+)*/(?:site|dist)-packages(?:/[\w.+-]+)+\.py(?::\d+)+:?"
)
# TensorFlow's function-node decoration: {{function_node __wrapped__MatMul_device_/job:localhost/...}}
_TF_NODE = re.compile(r"\{\{function_node [^}]*\}\}")
# a qualified C++ name called with arguments: onnxruntime::Model::Model(
_QUALIFIED_CALL = re.compile(r"[A-Za-z_~][\w~]*(?:<[^()]*?>)?(?:::[A-Za-z_~][\w~]*(?:<[^()]*?>)?)+\(")
# the bare function name onnxruntime writes after a source location (ValidateExternalDataPathFromDir)
_CAMEL_NAME = re.compile(r"[A-Z][a-z0-9]+[A-Z]\w*(?=\s)")
# the lines that only introduce the message (TensorFlow's "Graph execution error:", traceback headers)
_HEADERS = ("Graph execution error", "Detected at node", "Traceback (most recent call last)", 'File "')


def _close_paren(text: str, start: int) -> int:
    """Index just past the ')' that closes the '(' at `start` (or the end of the text)."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                end = i + 1
                for suffix in (" const", " noexcept"):
                    if text.startswith(suffix, end):
                        end += len(suffix)
                return end
    return len(text)


def _drop_function_after(text: str, at: int) -> int:
    """Where the message resumes after a source location at `at`: onnxruntime writes the function there,
    either a full signature (`void onnxruntime::f(const T&, int)`) or a bare CamelCase name."""
    rest = text[at:]
    stripped = rest.lstrip()
    offset = at + len(rest) - len(stripped)
    call = _QUALIFIED_CALL.search(stripped)
    if call and "." not in stripped[: call.start()] and stripped[: call.start()].count(" ") <= 6:
        return offset + _close_paren(stripped, call.end() - 1)
    bare = _CAMEL_NAME.match(stripped)
    if bare:
        return offset + bare.end()
    return at


def clean_framework_text(text: str) -> str:
    """A framework's message without what means nothing to a user: C++ signatures, source paths of the
    framework's own code, status prefixes. The words that say what went wrong are kept."""
    text = _ORT_STATUS.sub("", text)
    text = _ORT_LOAD.sub("", text)
    text = _TF_NODE.sub("", text)
    text = _PY_FRAME.sub("", text)
    out, pos = [], 0
    for match in _SOURCE.finditer(text):
        if match.start() < pos:
            continue
        out.append(text[pos : match.start()])
        pos = _drop_function_after(text, match.end())
    out.append(text[pos:])
    text = "".join(out)
    while call := _QUALIFIED_CALL.search(text):  # a signature that came without a source location
        text = text[: call.start()] + text[_close_paren(text, call.end() - 1) :]
    return "\n".join(re.sub(r"[ \t]{2,}", " ", line).strip(" \t:") for line in text.splitlines())


def first_line(exc: BaseException) -> str:
    """The line of a framework's exception that says what went wrong, cleaned for a one-line error."""
    lines = [line for line in clean_framework_text(str(exc)).splitlines() if line.strip()]
    for line in lines:
        if not line.startswith(_HEADERS):
            return line
    return lines[0] if lines else type(exc).__name__


def shown(value: object, limit: int = 60, depth: int = 0) -> str:
    """A value from a user's file as an error message may show it: short values as written, long ones cut.

    A message that printed a whole value (`{value!r}`) would expand every YAML alias in it: nine levels of nine
    aliases are a few hundred bytes on disk and billions of items in a repr. A list shows its first few items
    (a list inside it only its length); strings and numbers are cut at `limit` characters.
    """
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return repr(value) if value.bit_length() <= 4 * limit else f"an integer of {value.bit_length():,} bits"
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else f"{value[:limit]!r}… ({len(value):,} characters)"
    if isinstance(value, (list, tuple)):
        if depth >= 1:
            return f"a list of {len(value):,} item{'s' * (len(value) != 1)}"
        items = [shown(v, limit // 2, depth + 1) for v in value[:6]]
        return "[" + ", ".join(items) + (f", … ({len(value):,} items)]" if len(value) > 6 else "]")
    if isinstance(value, dict):
        return f"a mapping of {len(value):,} key{'s' * (len(value) != 1)}"
    return f"a {type(value).__name__}"
