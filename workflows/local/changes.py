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


def write_run_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Write a run's `run.json` beside it and rename it into place, so that a reader never sees half of it (an
    OSError, a full disk, is the caller's)."""
    path = run_dir / RUN_RECORD
    path.with_suffix(".tmp").write_text(json.dumps(record, indent=2, default=str))
    path.with_suffix(".tmp").replace(path)
SHOWN = 2  # most changed arguments named; the rest are counted
SHORT = 200  # longest value shown whole (a path is); longer or multi-line ones by their first differing line
READ_AFRESH = "read afresh in "  # the location material of a source read anew each run (`executor._location_state`)


def last_materials(runs_dir: Path) -> dict[str, dict[str, Any]]:
    """{task: material} from the run records under `runs_dir`: for each task, its material in the newest run that
    recorded one (a task that an interrupted or failed last run never reached keeps the one before). Records or
    materials that are not what this code writes (cut short, another version's) are passed over."""
    records = []
    for path in runs_dir.glob(f"*/{RUN_RECORD}"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("tasks"), dict):
            started = record.get("started")
            records.append((started if isinstance(started, (int, float)) else path.stat().st_mtime, record))
    materials: dict[str, dict[str, Any]] = {}
    for _, record in sorted(records, key=lambda item: item[0], reverse=True):
        for name, task in record["tasks"].items():
            material = task.get("material") if isinstance(task, dict) else None
            if name not in materials and isinstance(material, dict) and material:
                materials[name] = material
    return materials


def describe_change(before: dict[str, Any], after: dict[str, Any]) -> str:
    """What differs between two materials of one task, in words ("" when nothing does); long or multi-line values
    (the gates' YAML) are shown by their first differing line."""
    changes = []
    if before.get("code") != after.get("code"):
        changes.append(f"its stage's code changed ({before.get('code')} -> {after.get('code')})")
    for part in ("image", "command"):
        if before.get(part) != after.get(part):
            changes.append(f"its {part} changed")
    old_args, new_args = [str(a) for a in _list(before.get("args"))], [str(a) for a in _list(after.get("args"))]
    described = _argument_changes(old_args, new_args)
    changes += described or (["its arguments changed"] if old_args != new_args else [])
    old_env, new_env = _mapping(before.get("env")), _mapping(after.get("env"))
    changes += [f"environment variable {name} changed" for name in sorted({*old_env, *new_env})
                if old_env.get(name) != new_env.get(name)]
    old_inputs, new_inputs = _mapping(before.get("inputs")), _mapping(after.get("inputs"))
    inputs = [f"'{name}'" for name in sorted({*old_inputs, *new_inputs})
              if old_inputs.get(name) != new_inputs.get(name)]
    if inputs:
        changes.append(f"its input{'s' if len(inputs) > 1 else ''} {', '.join(inputs)} changed")
    if before.get("outputs") != after.get("outputs"):
        changes.append("its declared outputs changed")
    if before.get("registry") != after.get("registry"):
        changes.append("the registry's aliases changed since (a promotion, a rollback or a new candidate)")
    if str(after.get("location", "")).startswith(READ_AFRESH):
        changes.append("its source is read afresh on every run")
    elif before.get("location") != after.get("location"):
        changes.append("the data it reads changed")
    return "; ".join(changes)


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _argument_changes(before: list[str], after: list[str]) -> list[str]:
    old, new = _by_flag(before), _by_flag(after)
    changed = [flag for flag in dict.fromkeys([*old, *new]) if old.get(flag) != new.get(flag)]
    described = [f"argument {flag} changed ({_difference(old.get(flag), new.get(flag))})" for flag in changed[:SHOWN]]
    if len(changed) > SHOWN:
        described.append(f"{len(changed) - SHOWN} more argument(s) changed")
    return described


def _difference(old: list[str] | None, new: list[str] | None) -> str:
    """`old -> new` for short values; for long or multi-line ones, their first differing line."""
    before, after = _joined(old), _joined(new)
    if len(before) <= SHORT and len(after) <= SHORT and "\n" not in before + after:
        return f"{before} -> {after}"
    old_lines, new_lines = before.splitlines(), after.splitlines()
    line = next((i for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b), min(len(old_lines),
                                                                                          len(new_lines)))
    pick = lambda lines: _clipped(lines[line].strip()) if line < len(lines) else "(none)"  # noqa: E731
    return f"line {line + 1}: {pick(old_lines)} -> {pick(new_lines)}"


def _joined(values: list[str] | None) -> str:
    if values is None:
        return "(absent)"
    quoted = (repr(value) if value == "" or (" " in value and "\n" not in value) else value for value in values)
    return " ".join(quoted) or "(set)"


def _clipped(text: str, longest: int = 80) -> str:
    return text if len(text) <= longest else f"{text[:longest - 3]}..."


def _by_flag(arguments: list[str]) -> dict[str, list[str]]:
    """{`--flag`: its values}; `--flag=value` counts as `--flag value`, and arguments before any flag are keyed by
    their position."""
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
    return values
