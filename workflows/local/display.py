"""Progress of a local run: a live table on a terminal, one line per change otherwise, and the final table."""

from __future__ import annotations

import threading
from typing import Iterable

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from workflows.local.executor import CACHED, FAILED, RETRYING, RUNNING, SKIPPED, SUCCEEDED, TaskState

_STYLE = {SUCCEEDED: "green", CACHED: "cyan", FAILED: "bold red", RUNNING: "yellow", RETRYING: "magenta",
          SKIPPED: "dim"}


def task_table(states: Iterable[TaskState], title: str | None = None) -> Table:
    """task, status, attempts, duration, cached: one row per task, in DAG order."""
    table = Table(title=title, title_justify="left")
    for column in ("task", "status", "attempts", "duration", "cached", "note"):
        table.add_column(column, justify="right" if column in ("attempts", "duration") else "left")
    for state in states:
        duration = f"{state.duration:.1f}s" if state.duration is not None else ""
        table.add_row(state.name, Text(state.status, style=_STYLE.get(state.status, "")), str(state.attempts or ""),
                      duration, "yes" if state.status == CACHED else "", state.message)
    return table


class Progress:
    """Receives every task change from the executor's threads and shows it."""

    def __init__(self, states: dict[str, TaskState], console: Console):
        self.states = states
        self.console = console
        self._lock = threading.Lock()
        self._live: Live | None = None

    def __enter__(self) -> "Progress":
        if self.console.is_terminal:
            self._live = Live(task_table(self.states.values()), console=self.console, refresh_per_second=4,
                              transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def update(self, state: TaskState) -> None:
        """Redraw the live table, or print one line describing the change."""
        with self._lock:
            if self._live is not None:
                self._live.update(task_table(self.states.values()))
            else:
                note = f" ({state.message})" if state.message else ""
                self.console.print(f"{state.name}: {state.status}{note}", highlight=False)
