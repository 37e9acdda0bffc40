"""How long loops report progress without the API layer knowing about terminals.

The API takes a `ProgressFactory`; the CLI passes one that draws a rich progress bar on a terminal, and
everything else (pipes, `--json`, library callers) gets `no_progress`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

Advance = Callable[[], None]


class ProgressFactory(Protocol):
    def __call__(self, description: str, total: int | None) -> AbstractContextManager[Advance]: ...


@contextmanager
def no_progress(description: str, total: int | None) -> Iterator[Advance]:
    yield lambda: None
