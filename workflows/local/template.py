"""Read a rendered WorkflowTemplate into what the local executor needs: its DAG tasks and their templates."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_DEPENDS_TERM = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9]*)(?:\.Succeeded)?$")


class UnsupportedTemplate(ValueError):
    """The template uses an Argo feature the local executor does not run (it says which)."""


@dataclass
class Task:
    """One DAG task with its template and the arguments the DAG passes it (still unsubstituted)."""

    name: str
    template: dict[str, Any]
    parameters: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    depends: list[str] = field(default_factory=list)


@dataclass
class Workflow:
    """A WorkflowTemplate's parameters, the tasks of its entrypoint DAG in the order they are declared, and its
    `activeDeadlineSeconds` (None: none)."""

    name: str
    parameters: dict[str, str]
    tasks: dict[str, Task]
    deadline_seconds: int | None = None


def deadline_seconds(value: Any, where: str, strings: bool = True) -> int | None:
    """An `activeDeadlineSeconds` in seconds (None when not set): an integer, or (`strings`: a template's, which
    Argo lets be an expression) its digits as a string; a workflow's must be an integer, as Argo's schema says."""
    if value is None:
        return None
    whole = isinstance(value, int) or (strings and isinstance(value, str) and value.strip().isdigit())
    if isinstance(value, bool) or not whole or int(value) < 1:
        kind = "a whole number of seconds >= 1" if strings else "an integer number of seconds >= 1"
        raise UnsupportedTemplate(f"{where}: activeDeadlineSeconds {value!r} is not {kind}")
    return int(value)


def parse_depends(expression: str) -> list[str]:
    """The upstream tasks of a `depends` expression; only conjunctions (`a && b.Succeeded`) run locally."""
    names = []
    for term in expression.split("&&"):
        match = _DEPENDS_TERM.match(term.strip().strip("()").strip())
        if not match:
            raise UnsupportedTemplate(f"depends {expression!r}: the local executor runs only conjunctions of "
                                      "task names (a && b, optionally with .Succeeded)")
        names.append(match.group(1))
    return names


def load_workflow(doc: dict[str, Any]) -> Workflow:
    """Turn a WorkflowTemplate (or Workflow) document into a `Workflow`, rejecting what cannot run locally."""
    spec = doc.get("spec", {})
    templates = {template["name"]: template for template in spec.get("templates", [])}
    entry = templates.get(spec.get("entrypoint", ""))
    if entry is None or "dag" not in entry:
        raise UnsupportedTemplate(f"entrypoint {spec.get('entrypoint')!r} is not a DAG template of this document")
    parameters = {p["name"]: str(p.get("value", p.get("default", "")))
                  for p in spec.get("arguments", {}).get("parameters", [])}
    tasks: dict[str, Task] = {}
    for raw in entry["dag"]["tasks"]:
        template = templates.get(raw.get("template", ""))
        if template is None:
            raise UnsupportedTemplate(f"task {raw['name']!r}: template {raw.get('template')!r} is not defined here")
        if "container" not in template:
            raise UnsupportedTemplate(f"template {template['name']!r}: only container templates run locally")
        for unsupported in ("when", "withItems", "withParam", "withSequence", "templateRef"):
            if unsupported in raw:
                raise UnsupportedTemplate(f"task {raw['name']!r}: {unsupported} is not run by the local executor")
        deadline = template.get("activeDeadlineSeconds")
        if not (isinstance(deadline, str) and "{{" in deadline):  # an expression is checked once substituted
            deadline_seconds(deadline, f"template {template['name']!r}")
        arguments = raw.get("arguments", {})
        tasks[raw["name"]] = Task(
            name=raw["name"],
            template=template,
            parameters={p["name"]: str(p.get("value", "")) for p in arguments.get("parameters", [])},
            artifacts={a["name"]: a["from"] for a in arguments.get("artifacts", [])},
            depends=parse_depends(raw["depends"]) if raw.get("depends") else list(raw.get("dependencies", [])),
        )
    return Workflow(name=doc.get("metadata", {}).get("name", "workflow"), parameters=parameters, tasks=tasks,
                    deadline_seconds=deadline_seconds(spec.get("activeDeadlineSeconds"), "the workflow", strings=False))
