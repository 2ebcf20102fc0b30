"""What the bench shows while it runs: one progress bar over every measurement, and a
line per result above it."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)


class Tracker:
    def __init__(self, console: Console, total: int) -> None:
        self.console = console
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task = self._progress.add_task("starting", total=total)
        self._current: tuple[str, float] | None = None
        self.timings: list[tuple[str, float]] = []  # (what, seconds), in order

    def begin(self, text: str) -> None:
        """A new measurement starts: the previous one is done."""
        self._finish()
        self._current = (text, time.monotonic())
        self._progress.update(self._task, description=text)

    def _finish(self) -> None:
        if self._current is not None:
            text, started = self._current
            self.timings.append((text, round(time.monotonic() - started, 2)))
            self._progress.advance(self._task)
            self._current = None

    def say(self, text: str) -> None:
        """A line above the bar (a result, or what the current step waits for)."""
        self._progress.console.log(text)

    def __enter__(self) -> Tracker:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish()
        self._progress.stop()
