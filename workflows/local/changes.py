"""Why a task ran again: what changed in what decides its result since the last run of this home.

The executor keeps each task's cache-key material (image, command, arguments, environment, input artifacts' hashes,
code version, and the registry or data location it reads) in `run.json`. When a task is not in the cache, the
material of its last recorded run is compared with this one's, and the differences are said in the run's table:
"ran again: argument --cache changed (/old/home/raw-cache -> /new/home/raw-cache)". A home copied or moved with
`cp -r` re-runs the tasks whose arguments hold its path; this says so instead of re-running them silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RUN_RECORD = "run.json"
SHOWN = 2  # most changed arguments named; the rest are counted


def last_materials(runs_dir: Path) -> tuple[str, dict[str, dict[str, Any]]]:
    """(run id, {task: material}) of the newest run record under `runs_dir` that has any; ("", {}) when none
    has. Unreadable records (a run killed while writing one) are passed over."""
    records = sorted(runs_dir.glob(f"*/{RUN_RECORD}"), key=lambda path: path.stat().st_mtime, reverse=True)
    for path in records:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        materials = {name: task["material"] for name, task in record.get("tasks", {}).items()
                     if isinstance(task, dict) and task.get("material")}
        if materials:
            return str(record.get("run", path.parent.name)), materials
    return "", {}


def describe_change(before: dict[str, Any], after: dict[str, Any]) -> str:
    """What differs between two materials of one task, in words ("" when nothing does)."""
    changes = []
    if before.get("code") != after.get("code"):
        changes.append(f"the pipeline's code changed ({before.get('code')} -> {after.get('code')})")
    for part in ("image", "command"):
        if before.get(part) != after.get(part):
            changes.append(f"its {part} changed")
    changes += _argument_changes(before.get("args") or [], after.get("args") or [])
    old_env, new_env = before.get("env") or {}, after.get("env") or {}
    changes += [f"environment variable {name} changed" for name in sorted({*old_env, *new_env})
                if old_env.get(name) != new_env.get(name)]
    old_inputs, new_inputs = before.get("inputs") or {}, after.get("inputs") or {}
    inputs = [f"'{name}'" for name in sorted({*old_inputs, *new_inputs})
              if old_inputs.get(name) != new_inputs.get(name)]
    if inputs:
        changes.append(f"its input{'s' if len(inputs) > 1 else ''} {', '.join(inputs)} changed")
    if before.get("outputs") != after.get("outputs"):
        changes.append("its declared outputs changed")
    if before.get("registry") != after.get("registry"):
        changes.append("a model was promoted or rolled back since")
    if before.get("location") != after.get("location"):
        changes.append("the data it reads changed")
    return "; ".join(changes)


def _argument_changes(before: list[str], after: list[str]) -> list[str]:
    old, new = _by_flag(before), _by_flag(after)
    changed = [flag for flag in dict.fromkeys([*old, *new]) if old.get(flag) != new.get(flag)]
    described = [f"argument {flag} changed ({old.get(flag, '(absent)')} -> {new.get(flag, '(absent)')})"
                 for flag in changed[:SHOWN]]
    if len(changed) > SHOWN:
        described.append(f"{len(changed) - SHOWN} more argument(s) changed")
    return described


def _by_flag(arguments: list[str]) -> dict[str, str]:
    """{`--flag`: its value(s), space-joined}; arguments before any flag are keyed by their position."""
    values: dict[str, list[str]] = {}
    flag = None
    for position, argument in enumerate(arguments):
        if argument.startswith("--"):
            name, equals, value = argument.partition("=")
            flag = name
            values.setdefault(flag, [])
            if equals:
                values[flag].append(value)
        elif flag is None:
            values[f"#{position + 1}"] = [argument]
        else:
            values[flag].append(argument)
    return {name: " ".join(value) or "(set)" for name, value in values.items()}
