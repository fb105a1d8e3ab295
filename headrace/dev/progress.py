"""How long-running dev steps (download, format, wait) report progress.

The library reports through this small protocol; the CLI renders it with rich
spinners, tests and scripts get the quiet default.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol


class Progress(Protocol):
    """Receives what a dev operation is doing."""

    def step(self, text: str) -> AbstractContextManager[None]:
        """A step that takes a while; the context ends when it is done."""
        ...

    def info(self, text: str) -> None:
        """A one-line fact worth telling the user."""
        ...


class Quiet:
    """Reports nothing."""

    @contextmanager
    def _step(self) -> Iterator[None]:
        yield

    def step(self, text: str) -> AbstractContextManager[None]:
        return self._step()

    def info(self, text: str) -> None:
        return None
