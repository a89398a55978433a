"""The progress table renders every task status, on a terminal and off one."""

from __future__ import annotations

import io

from rich.console import Console

from workflows.local.display import Progress, task_table
from workflows.local.executor import CACHED, FAILED, PENDING, RETRYING, RUNNING, SKIPPED, SUCCEEDED, TaskState


def states() -> dict[str, TaskState]:
    return {status: TaskState(name=f"task-{status}", status=status, attempts=1, message=f"note {status}")
            for status in (PENDING, RUNNING, RETRYING, SUCCEEDED, CACHED, FAILED, SKIPPED)}


def test_table_renders_every_status_on_a_terminal():
    buffer = io.StringIO()
    Console(file=buffer, force_terminal=True, width=140).print(task_table(states().values(), title="run x"))
    text = buffer.getvalue()
    for status in states():
        assert f"task-{status}" in text and status in text


def test_progress_prints_one_line_per_change_off_a_terminal():
    buffer = io.StringIO()
    tasks = states()
    with Progress(tasks, Console(file=buffer, force_terminal=False, width=140)) as progress:
        progress.update(tasks[FAILED])
    assert buffer.getvalue().strip() == "task-failed: failed (note failed)"
