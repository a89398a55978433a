"""`stellar runs list [--json]` and `stellar runs show [RUN] [--json]`: the local runs of a home, from their
`run.json` records, as `argo list` and `argo get` show a cluster's workflows.

A run's state: what it recorded at its end (`succeeded`, `failed`, `interrupted` by Ctrl-C, SIGTERM or SIGHUP), or,
for a record that ends running, `running` while the run holds the home's lock (`run.home_lock`) and `killed` once
nothing does (SIGKILL, the OOM killer, a reboot: the kernel's lock went with the process).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workflows.local.changes import RUN_RECORD

LONG_VALUE = 60  # parameter values longer than this are shown by their first line and length


class RunsError(RuntimeError):
    """No such run, or no record to read: exit status 2, with this message."""


@dataclass
class RunRecord:
    """One run's `run.json`, with its state worked out."""

    run: str
    path: Path
    started: float | None
    finished: float | None
    parameters: dict[str, str]
    tasks: dict[str, dict[str, Any]]
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # the deploy record's, once the run ends
    state: str = ""
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        """Seconds from the first task's start to the last one's end (or to now while it runs)."""
        if self.started is None:
            return None
        end = self.finished or max((t["finished"] for t in self.tasks.values() if t.get("finished")), default=None)
        return (time.time() if self.state == "running" else end or self.started) - self.started

    def summary(self) -> dict[str, Any]:
        """What `runs list --json` prints of it."""
        return {"run": self.run, "state": self.state, "started": _when(self.started),
                "duration_s": None if self.duration is None else round(self.duration, 1), "tasks": self.counts,
                "models": {name: {key: value for key, value in model.items() if key != "reasons"}
                           for name, model in self.models.items()},
                "record": str(self.path)}


def add_runs_command(sub: argparse._SubParsersAction, add_home) -> None:
    """Add `runs list` and `runs show` to the `stellar` parser."""
    runs = sub.add_parser("runs", help="the local runs of a home: list them, show one",
                          description=__doc__.split("\n\n")[0])
    runs_sub = runs.add_subparsers(dest="runs_command", required=True)
    listing = runs_sub.add_parser("list", help="every run of the home, newest first")
    show = runs_sub.add_parser("show", help="one run: its parameters and every task's status, duration and note")
    show.add_argument("run", nargs="?", help="run id, or its unique start or end (default: the newest run)")
    add_home(runs)
    for command in (listing, show):
        add_home(command, argparse.SUPPRESS)
        command.add_argument("--json", action="store_true", help="print JSON")
    runs.set_defaults(handler=runs_command)


def runs_command(args: argparse.Namespace) -> int:
    """Run `stellar runs`; return the exit status."""
    from workflows.cli import home_dir

    home = home_dir(args.home)
    try:
        records = read_runs(home)
        if args.runs_command == "list":
            _print_list(records, home, args.json)
        else:
            _print_run(_find(records, args.run, home), args.json)
    except RunsError as error:
        print(f"stellar runs: {error}", file=sys.stderr)
        return 2
    return 0


def read_runs(home: Path) -> list[RunRecord]:
    """Every readable run record of `home`, newest first; a record that cannot be read is named on stderr."""
    from workflows.run import running_run

    holder, records = running_run(home), []
    for path in (home / "runs").glob(f"*/{RUN_RECORD}"):
        try:
            data = json.loads(path.read_text())
            record = RunRecord(run=str(data["run"]), path=path, started=data.get("started"),
                               finished=data.get("finished"), parameters=dict(data.get("parameters") or {}),
                               tasks=dict(data["tasks"]),
                               models={name: model for name, model in dict(data.get("models") or {}).items()
                                       if isinstance(model, dict)})
        except (OSError, ValueError, KeyError, TypeError) as error:
            print(f"stellar runs: {path}: unreadable, passed over ({type(error).__name__}: {error})", file=sys.stderr)
            continue
        if record.started is None:  # a record written before runs kept their start
            record.started = min((t["started"] for t in record.tasks.values() if t.get("started")), default=None)
        record.state = _state(record, data.get("state"), holder)
        record.counts = dict(Counter(task.get("status", "?") for task in record.tasks.values()))
        records.append(record)
    return sorted(records, key=lambda r: (r.started or r.path.stat().st_mtime, r.run), reverse=True)


def _state(record: RunRecord, recorded: Any, holder: str | None) -> str:
    """The state the run recorded at its end; a record still saying it runs is `running` while the home's lock is
    held by it (`holder`), else `killed`. Records written before runs kept a state are judged by their tasks."""
    if recorded in ("succeeded", "failed", "interrupted"):
        return recorded
    statuses = [task.get("status") for task in record.tasks.values()]
    if recorded == "running" or any(status in ("pending", "running", "retrying") for status in statuses):
        return "running" if holder == record.run else "killed"
    return "failed" if "failed" in statuses else "succeeded"


def _find(records: list[RunRecord], wanted: str | None, home: Path) -> RunRecord:
    if not records:
        raise RunsError(f"no runs in {home / 'runs'} (start one with `stellar run --home {home}`)")
    if wanted is None:
        return records[0]
    matches = [record for record in records if record.run == wanted] or [
        record for record in records if record.run.endswith(wanted) or record.run.startswith(wanted)]
    if len(matches) != 1:
        names = ", ".join(record.run for record in (matches or records)[:5])
        what = "matches several runs" if matches else "is no run of this home"
        raise RunsError(f"{wanted!r} {what} ({'they are' if matches else 'the newest are'}: {names})")
    return matches[0]


def _print_list(records: list[RunRecord], home: Path, as_json: bool) -> None:
    if as_json:
        print(json.dumps([record.summary() for record in records], indent=2))
        return
    if not records:
        print(f"no runs in {home / 'runs'}" + ("" if home.is_dir() else " (no such folder: is --home right?)"))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"runs of {home}", title_justify="left")
    longest = max(len(record.run) for record in records)
    table.add_column("run", no_wrap=True, min_width=longest)  # whole, however narrow: `runs show` takes it
    for column in ("state", "started", "duration", "tasks", "models"):
        table.add_column(column, justify="right" if column == "duration" else "left")
    for record in records:
        table.add_row(record.run, record.state, _when(record.started) or "", _seconds(record.duration),
                      ", ".join(f"{count} {status}" for status, count in sorted(record.counts.items())),
                      "\n".join(_outcome(name, model) for name, model in sorted(record.models.items())))
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def _print_run(record: RunRecord, as_json: bool) -> None:
    if as_json:
        print(json.dumps({**record.summary(), "parameters": record.parameters, "tasks": {
            name: {key: value for key, value in task.items() if key != "material"}
            for name, task in record.tasks.items()}}, indent=2))
        return
    from rich.console import Console

    from workflows.local.display import task_table
    from workflows.local.executor import TaskState
    from workflows.run import log_tail

    print(f"run {record.run}: {record.state}, started {_when(record.started) or 'unknown'}, "
          f"{_seconds(record.duration) or 'no time'}")
    print("parameters:")
    for name, value in record.parameters.items():
        print(f"  {name} = {_short(str(value))}")
    live = record.state == "running"  # elsewhere a task without an end has no duration to show
    states = [TaskState(name=name, status=task.get("status", "?"), attempts=task.get("attempts", 0),
                        started=task.get("started") if live or task.get("finished") else None,
                        finished=task.get("finished"), message=task.get("message", ""))
              for name, task in record.tasks.items()]
    Console(width=None if sys.stdout.isatty() else 160).print(task_table(states))
    if record.models:
        from workflows.run import promotion_lines

        print("models in production after it:")
        for name, model in sorted(record.models.items()):
            print("\n".join(promotion_lines(name, model)))
    for name, task in record.tasks.items():
        if task.get("status") == "failed" and not task.get("message", "").startswith("interrupted"):
            tail = log_tail(Path(task["log"])) if task.get("log") else None
            print(f"task {name} failed: {task.get('message', '')}" + (f"\n{tail.rstrip()}" if tail else ""))
    print(f"logs: {record.path.parent / 'logs'}")


def _outcome(name: str, model: dict[str, Any]) -> str:
    """One line of what became of a model in the run: its candidate's promotion and the version served after."""
    serving = f"v{model['version']}" if model.get("version") else "none"
    if model.get("promotion") == "cached":
        return f"{name}: nothing changed (cached from {model.get('from_run')}); serving {serving}"
    if model.get("baseline_version"):
        what = f"candidate {model.get('candidate')} refused, baseline v{model['baseline_version']} " + (
            model.get("promotion") if model.get("promotion") in ("promoted", "unchanged") else "not promoted")
    else:
        what = f"candidate {model.get('candidate')} {model.get('promotion')}" + (
            ", its baseline too" if model.get("baseline_refused") else "")
    return f"{name}: {what}; serving {serving}"


def _short(value: str) -> str:
    if len(value) <= LONG_VALUE and "\n" not in value:
        return value
    return f"{value.splitlines()[0][:LONG_VALUE]}... ({len(value)} characters)"


def _when(epoch: float | None) -> str | None:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else None


def _seconds(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"
