"""The one exception hierarchy of mdeploy.

Every failure a user can fix (bad input, a missing dependency, a conversion the exporter refuses) is an
MdeployError: the CLI prints its message as one `error:` line, its hint as one `hint:` line, and exits with
the class's exit code. Anything else that escapes is a bug and gets a traceback (exit 3).
"""

from __future__ import annotations


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


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message: what a one-line error can quote from a framework."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
