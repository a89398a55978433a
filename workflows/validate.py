"""Checks on rendered Argo objects, run before `stellar render` writes them and before the local executor runs them.

Two kinds of check, because each catches what the other cannot:

- `check_references`: the links inside one document that no schema can express: the entrypoint and every DAG
  task name a template, `depends` names tasks of the same DAG without cycles, every `{{...}}` tag points at
  something declared (and a task's outputs only from an upstream task), task arguments match the template's
  inputs, a CronWorkflow's schedules and time zone parse, and no output artifact is under a folder that Argo's
  mount of an input artifact makes root's. Pure Python on the document; no file is read.
- `validate_against_schema`: structure, against the Argo JSON schema (a file beside the repository, path passed
  in) made strict by `strict_schema`, so a misspelt key fails instead of being ignored. jsonschema is imported
  only when this runs: the executor and `stellar render` import this module without it.

`parse_cron` validates one schedule the way Argo's cron parser (robfig/cron, standard 5 fields) reads it.
"""

from __future__ import annotations

import copy
import json
import posixpath
import re
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["check_references", "parse_cron", "parse_depends", "strict_schema", "validate_against_schema"]

# --- cron --------------------------------------------------------------------------------------------------------

_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
# (field name, lowest, highest, names for lowest.. in order). Argo parses schedules with robfig/cron, whose standard
# parser has day of week 0-6 (no 7), no L/W/# and no seconds field: this follows it, not the wider Vixie cron.
_CRON_FIELDS = [
    ("minute", 0, 59, []),
    ("hour", 0, 23, []),
    ("day of month", 1, 31, []),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 6, _DAYS),
]
_CRON_DESCRIPTORS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
# robfig/cron matches a descriptor as written (lower case, nothing around it) and reads `@every ` (one space) then a
# Go duration
_EVERY = re.compile(r"@every (?:[0-9]+(?:\.[0-9]+)?(?:ns|us|µs|ms|s|m|h))+")


def parse_cron(expr: str) -> None:
    """Raise ValueError (saying which field and why) unless `expr` is a schedule Argo accepts: five fields
    (minute hour day-of-month month day-of-week) of `*` (or `?`), numbers, JAN-DEC / SUN-SAT names,
    ranges `a-b`, lists `a,b` and steps `*/n`, `a-b/n`, `a/n`; or a descriptor: `@daily` etc., `@every 1h30m`."""
    if not isinstance(expr, str):
        raise ValueError(f"cron schedule {expr!r} is not a string")
    if not expr.isascii():
        raise ValueError(f"cron schedule {expr!r}: a character that is not ASCII")
    text = expr.strip()
    if text.startswith("@"):
        if expr not in _CRON_DESCRIPTORS and not _EVERY.fullmatch(expr):
            raise ValueError(f"cron schedule {expr!r}: unknown descriptor (known, in lower case and with nothing "
                             f"around them: {', '.join(sorted(_CRON_DESCRIPTORS))}, @every <duration>)")
        return
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(f"cron schedule {expr!r} has {len(fields)} fields; expected 5 "
                         "(minute hour day-of-month month day-of-week)")
    for value, (name, low, high, names) in zip(fields, _CRON_FIELDS):
        for part in value.split(","):
            try:
                _check_cron_part(part, low, high, names)
            except ValueError as error:
                raise ValueError(f"cron schedule {expr!r}: {name} field {value!r}: {error}") from None


def cron_pattern() -> str:
    """A regular expression (in the subset JSON Schema, Go and Python share: no \\d or \\s, whose classes differ)
    matching the schedules `parse_cron` accepts but for ranges that run backwards (`5-3`, which Argo's controller
    refuses): for the chart's values.schema.json, so that `helm install` refuses a schedule Argo would never run."""
    def either(options) -> str:
        return "(?:" + "|".join(options) + ")"

    def anycase(word: str) -> str:  # month and day names are read in any case
        return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in word)

    def field(low: int, high: int, names: list[str]) -> str:
        value = either(["0*" + either(str(n) for n in range(high, low - 1, -1))] + [anycase(n) for n in names])
        part = either([r"\*", r"\?", f"{value}(?:-{value})?"]) + "(?:/0*[1-9][0-9]*)?"
        return f"{part}(?:,{part})*"

    fields = "[ \t]+".join(field(low, high, names) for _, low, high, names in _CRON_FIELDS)
    descriptors = either(re.escape(d) for d in sorted(_CRON_DESCRIPTORS))
    return rf"^(?:[ \t]*{fields}[ \t]*|{descriptors}|{_EVERY.pattern})$"


def _check_cron_part(part: str, low: int, high: int, names: list[str]) -> None:
    """One comma-separated piece of a cron field: `*`, `?`, `a`, `a-b`, each optionally `/step`."""
    span, slash, step = part.partition("/")
    if slash and not (step.isascii() and step.isdigit() and int(step) > 0):
        raise ValueError(f"step {step!r} is not a positive number")
    if span in ("*", "?"):
        return
    start_text, dash, end_text = span.partition("-")
    start = _cron_value(start_text, low, high, names)
    if dash:
        end = _cron_value(end_text, low, high, names)
        if start > end:
            raise ValueError(f"range {span!r} runs backwards")


def _cron_value(text: str, low: int, high: int, names: list[str]) -> int:
    """A number within [low, high], or a name (case-insensitive) standing for one."""
    if text.upper() in names:
        return low + names.index(text.upper())
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{text!r} is not a number" + (f" or a name ({'/'.join(names)})" if names else ""))
    if not low <= int(text) <= high:
        raise ValueError(f"{text} is outside {low}-{high}")
    return int(text)


# --- references --------------------------------------------------------------------------------------------------

_RESULTS = {"Succeeded", "Failed", "Errored", "Skipped", "Omitted", "Daemoned", "AnySucceeded", "AllFailed"}
_DEPENDS_TOKEN = re.compile(r"\s*(?:(&&|\|\||[!()])|([A-Za-z0-9_][-A-Za-z0-9_]*)(?:\.([A-Za-z]+))?|(\S))")
_GLOBALS = {"workflow.name", "workflow.namespace", "workflow.uid", "workflow.creationTimestamp",
            "workflow.scheduledTime", "pod.name", "retries", "tasks.name", "item"}
_GLOBAL_PATTERNS = re.compile(r"workflow\.creationTimestamp\.(?:[A-Za-z]|RFC3339)|item\.[-\w]+")
_IO_REF = re.compile(r"(inputs|outputs)\.(parameters|artifacts)\.([-\w]+)(\.path)?")
_TASK_REF = re.compile(r"tasks\.([-\w]+)\.outputs\.(parameters|artifacts)\.([-\w]+)")
_WORKFLOW_PARAMETER = re.compile(r"workflow\.parameters\.([-\w]+)")
# Where an input artifact can come from besides a DAG argument (Argo's ArtifactLocation, plus `from`).
ARTIFACT_SOURCES = {"from", "fromExpression", "s3", "git", "http", "artifactory", "hdfs", "raw", "oss", "gcs",
                    "azure", "plugin"}


def parse_depends(expression: str) -> set[str]:
    """The task names in an Argo `depends` expression (names with an optional `.Succeeded`-style result, joined by
    `&&`, `||`, `!` and parentheses); raises ValueError on a syntax error or an unknown result."""
    if not isinstance(expression, str):
        raise ValueError(f"depends {expression!r} is not a string")
    tokens: list[tuple[str, str]] = []  # ("op", "&&") or ("name", "task")
    names: set[str] = set()
    for op, name, result, junk in _DEPENDS_TOKEN.findall(expression.strip()):
        if junk:
            raise ValueError(f"depends {expression!r}: unexpected {junk!r}")
        if result and result not in _RESULTS:
            raise ValueError(f"depends {expression!r}: {name}.{result} is not a task result "
                             f"(one of {', '.join(sorted(_RESULTS))})")
        tokens.append(("op", op) if op else ("name", name))
        if name:
            names.add(name)
    position = _parse_depends_or(tokens, 0, expression)
    if position != len(tokens):
        raise ValueError(f"depends {expression!r}: unexpected {tokens[position][1]!r}")
    return names


def _parse_depends_or(tokens: list[tuple[str, str]], position: int, expression: str) -> int:
    """Recursive descent over `or := and ('||' and)*; and := unary ('&&' unary)*; unary := '!' unary | '(' or ')' |
    name`; returns the position after what it consumed."""
    position = _parse_depends_and(tokens, position, expression)
    while position < len(tokens) and tokens[position] == ("op", "||"):
        position = _parse_depends_and(tokens, position + 1, expression)
    return position


def _parse_depends_and(tokens: list[tuple[str, str]], position: int, expression: str) -> int:
    position = _parse_depends_unary(tokens, position, expression)
    while position < len(tokens) and tokens[position] == ("op", "&&"):
        position = _parse_depends_unary(tokens, position + 1, expression)
    return position


def _parse_depends_unary(tokens: list[tuple[str, str]], position: int, expression: str) -> int:
    if position >= len(tokens):
        raise ValueError(f"depends {expression!r}: ends where a task name is expected")
    token = tokens[position]
    if token == ("op", "!"):
        return _parse_depends_unary(tokens, position + 1, expression)
    if token == ("op", "("):
        position = _parse_depends_or(tokens, position + 1, expression)
        if position >= len(tokens) or tokens[position] != ("op", ")"):
            raise ValueError(f"depends {expression!r}: unclosed '('")
        return position + 1
    if token[0] == "name":
        return position + 1
    raise ValueError(f"depends {expression!r}: unexpected {token[1]!r} where a task name is expected")


def _dicts(value: Any) -> list[dict]:
    """The dict items of a list (anything else yields nothing): malformed parts are the schema check's business."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _names(items: Any) -> set[str]:
    return {item.get("name") for item in _dicts(items)}


def _strings(value: Any) -> Iterator[str]:
    """Every string value inside a nested structure of dicts and lists."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _tags(text: str) -> Iterator[str | None]:
    """The bodies of the `{{...}}` tags in `text`, stripped; None for a `{{` that is never closed."""
    position = text.find("{{")
    while position >= 0:
        end = text.find("}}", position + 2)
        if end < 0:
            yield None
            return
        yield text[position + 2:end].strip()
        position = text.find("{{", end + 2)


class _Scope:
    """What a `{{...}}` tag may name where it stands: the workflow's parameters (None where the document does not
    declare them, e.g. a CronWorkflow running a WorkflowTemplate by reference), the enclosing template, and inside
    a DAG its tasks, their templates and which of them run before the task holding the tag."""

    def __init__(self, parameters: set[str] | None, templates: dict[str, dict], template: dict | None = None,
                 tasks: dict[str, dict] | None = None, task: str | None = None,
                 upstream: dict[str, set[str]] | None = None):
        self.parameters = parameters
        self.templates = templates
        self.template = template
        self.tasks = tasks or {}
        self.task = task
        self.upstream = upstream or {}

    def problem(self, body: str) -> str | None:
        """None if the tag body resolves here, else why not."""
        tag = "{{" + body + "}}"
        if body.startswith("="):
            return f"{tag}: expression tags are not run by the local executor"
        if body in _GLOBALS or _GLOBAL_PATTERNS.fullmatch(body):
            return None
        if match := _WORKFLOW_PARAMETER.fullmatch(body):
            if self.parameters is None or match.group(1) in self.parameters:
                return None
            return f"{tag}: no workflow parameter {match.group(1)!r} in spec.arguments ({_listing(self.parameters)})"
        if match := _IO_REF.fullmatch(body):
            return self._io_problem(tag, *match.groups())
        if match := _TASK_REF.fullmatch(body):
            return self._task_problem(tag, *match.groups())
        return f"{tag}: not a variable the local executor resolves"

    def _io_problem(self, tag: str, side: str, kind: str, name: str, path: str | None) -> str | None:
        if self.template is None:
            return f"{tag}: {side} exist only inside a template"
        if side == "inputs" and kind == "parameters" and path:
            return f"{tag}: an input parameter has no .path"
        if side == "outputs" and not path:
            return f"{tag}: a template names its own outputs only as {side}.{kind}.{name}.path"
        declared = _names((self.template.get(side) or {}).get(kind))
        if name in declared:
            return None
        return (f"{tag}: template {self.template.get('name')!r} declares no {side[:-1]} "
                f"{kind[:-1]} {name!r} ({_listing(declared)})")

    def _task_problem(self, tag: str, task: str, kind: str, name: str) -> str | None:
        if task not in self.tasks:
            return f"{tag}: no task {task!r} in this DAG ({_listing(self.tasks)})"
        template = self.templates.get(self.tasks[task].get("template"))
        if template is not None:
            declared = _names((template.get("outputs") or {}).get(kind))
            if name not in declared:
                return (f"{tag}: template {template.get('name')!r} of task {task!r} declares no output "
                        f"{kind[:-1]} {name!r} ({_listing(declared)})")
        if self.task is not None and task not in self.upstream.get(self.task, set()):
            return f"{tag}: task {task!r} is not upstream of task {self.task!r} (add it to depends)"
        return None


def _listing(names: Any) -> str:
    names = sorted(n for n in names if isinstance(n, str))
    return "declared: " + ", ".join(names) if names else "none declared"


def check_references(doc: dict[str, Any]) -> list[str]:
    """Problems (human-readable; empty when fine) in a rendered WorkflowTemplate, Workflow or CronWorkflow that a
    schema cannot catch, because they are links between parts of the document rather than its shape."""
    if not isinstance(doc, dict) or not isinstance(doc.get("spec"), dict):
        return ["document has no spec"]
    kind = doc.get("kind")
    if kind == "CronWorkflow":
        return _check_cron(doc["spec"])
    if kind in ("WorkflowTemplate", "Workflow", "ClusterWorkflowTemplate"):
        return _check_workflow_spec(doc["spec"], "spec")
    return [f"kind {kind!r} is not a WorkflowTemplate, Workflow or CronWorkflow"]


def _check_cron(spec: dict) -> list[str]:
    """Schedules parse, the time zone exists, and the workflow it starts is named (or inline and sound)."""
    problems = []
    if "schedule" in spec and "schedules" in spec:
        problems.append("spec: set schedules or the legacy schedule, not both")
    key = "schedule" if "schedule" in spec and "schedules" not in spec else "schedules"
    schedules = [spec["schedule"]] if key == "schedule" else spec.get("schedules")
    if not isinstance(schedules, list) or not schedules:
        problems.append("spec.schedules: no schedule")
        schedules = []
    for schedule in schedules:
        try:
            parse_cron(schedule)
        except ValueError as error:
            problems.append(f"spec.{key}: {error}")
    timezone = spec.get("timezone")
    if timezone:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            problems.append(f"spec.timezone: {timezone!r} is not an IANA time zone (e.g. Etc/UTC, Europe/Berlin)")
    workflow_spec = spec.get("workflowSpec")
    if not isinstance(workflow_spec, dict):
        return problems + ["spec.workflowSpec is missing"]
    return problems + _check_workflow_spec(workflow_spec, "spec.workflowSpec")


def _check_workflow_spec(spec: dict, where: str) -> list[str]:
    """A WorkflowSpec: either a reference to a WorkflowTemplate by name, or templates that must hang together."""
    arguments = spec.get("arguments") or {}
    if "workflowTemplateRef" in spec:
        reference = spec["workflowTemplateRef"]
        name = reference.get("name") if isinstance(reference, dict) else None
        problems = [] if name else [f"{where}.workflowTemplateRef.name is missing"]
        # The referenced template declares the parameters; only its own document can check them.
        return problems + _tag_problems(spec, _Scope(None, {}), where)
    if not spec.get("templates"):
        return [f"{where}: neither templates nor workflowTemplateRef.name"]
    problems: list[str] = []
    templates: dict[str, dict] = {}
    for template in _dicts(spec.get("templates")):
        name = template.get("name")
        if name in templates:
            problems.append(f"{where}.templates: template {name!r} is defined twice")
        templates[name] = template
    for field in ("entrypoint", "onExit"):
        if field in spec and spec[field] not in templates:
            problems.append(f"{where}.{field}: {spec[field]!r} names no template ({_listing(templates)})")
    if "entrypoint" not in spec:
        problems.append(f"{where}.entrypoint is missing")
    parameters = _names(arguments.get("parameters"))
    outside = {key: value for key, value in spec.items() if key != "templates"}
    problems += _tag_problems(outside, _Scope(parameters, templates), where)
    for template in templates.values():
        label = f"template {template.get('name')!r}"
        if isinstance(template.get("dag"), dict):
            problems += _check_dag(template, templates, parameters, label)
        else:
            problems += _tag_problems(template, _Scope(parameters, templates, template), label)
            problems += _artifact_path_problems(template, label)
    return problems


EXISTING_FOLDERS = {PurePosixPath("/"), PurePosixPath("/tmp")}  # in every image, writable by all where it is /tmp


def _artifact_path_problems(template: dict, label: str) -> list[str]:
    """An output artifact's folder must be one a stage that is not root can create: Argo mounts each input artifact
    at its path, and the container runtime creates the missing folders above a mount point, owned by root."""
    def paths(kind: str) -> list[PurePosixPath]:
        artifacts = _dicts((template.get(kind) or {}).get("artifacts"))
        return [PurePosixPath(posixpath.normpath(a["path"])) for a in artifacts
                if isinstance(a.get("path"), str) and a["path"].startswith("/")]

    made_for_mounts = {folder for path in paths("inputs") for folder in path.parents} - EXISTING_FOLDERS
    problems = []
    for path in paths("outputs"):
        blocking = sorted(folder for folder in (path, *path.parents) if folder in made_for_mounts)
        if blocking:
            problems.append(f"{label}: output artifact path {path} is under {blocking[0]}, which the container runtime "
                            "creates owned by root to mount an input artifact there: a stage that does not run as "
                            "root cannot write its output (put inputs and outputs under different folders)")
    return problems


def _check_dag(template: dict, templates: dict[str, dict], parameters: set[str], label: str) -> list[str]:
    """Task names, template names, depends, cycles, arguments against inputs, and the tags of one DAG template."""
    problems: list[str] = []
    tasks: dict[str, dict] = {}
    for task in _dicts(template["dag"].get("tasks")):
        if task.get("name") in tasks:
            problems.append(f"{label}: task {task.get('name')!r} is defined twice")
        tasks[task.get("name")] = task
    edges: dict[str, set[str]] = {}
    for name, task in tasks.items():
        where = f"{label} task {name!r}"
        edges[name] = set()
        if "depends" in task and "dependencies" in task:
            problems.append(f"{where}: set depends or dependencies, not both")
        dependencies = task.get("dependencies")
        try:
            edges[name] = (parse_depends(task["depends"]) if task.get("depends") else
                           {d for d in dependencies if isinstance(d, str)} if isinstance(dependencies, list) else set())
        except ValueError as error:
            problems.append(f"{where}: {error}")
        for missing in sorted(edges[name] - set(tasks)):
            problems.append(f"{where}: depends on unknown task {missing!r} ({_listing(tasks)})")
        edges[name] &= set(tasks)
        problems += _argument_problems(task, templates, where)
    problems += [f"{label}: dependency cycle {' -> '.join(cycle)}" for cycle in _cycles(edges)]
    upstream = {name: _ancestors(name, edges) for name in tasks}
    rest = {key: value for key, value in template.items() if key != "dag"}
    rest["dag"] = {key: value for key, value in template["dag"].items() if key != "tasks"}
    problems += _tag_problems(rest, _Scope(parameters, templates, template, tasks), label)
    for name, task in tasks.items():
        scope = _Scope(parameters, templates, template, tasks, name, upstream)
        problems += _tag_problems(task, scope, f"{label} task {name!r}")
    return problems


def _argument_problems(task: dict, templates: dict[str, dict], where: str) -> list[str]:
    """The task names a template of this document and passes exactly what that template's inputs need."""
    if "templateRef" in task or "inline" in task:
        return []  # defined elsewhere or inline: nothing here to compare the arguments with
    if "template" not in task:
        return [f"{where}: names no template (template or templateRef)"]
    target = templates.get(task["template"])
    if target is None:
        return [f"{where}: template {task.get('template')!r} is not defined ({_listing(templates)})"]
    arguments = task.get("arguments") or {}
    inputs = target.get("inputs") or {}
    problems = []
    for kind in ("parameters", "artifacts"):
        declared = {item.get("name"): item for item in _dicts(inputs.get(kind))}
        passed = _names(arguments.get(kind))
        for name in sorted(passed - set(declared), key=str):
            problems.append(f"{where}: passes {kind[:-1]} {name!r} that template {target.get('name')!r} "
                            f"does not declare ({_listing(declared)})")
        for name, item in declared.items():
            if name not in passed and not _has_own_source(kind, item):
                problems.append(f"{where}: does not pass required input {kind[:-1]} {name!r} of template "
                                f"{target.get('name')!r}")
    return problems


def _has_own_source(kind: str, item: dict) -> bool:
    """Whether a template input gets a value without a task argument: a parameter with a value, default or
    valueFrom; an artifact that is optional or has a location or `from` of its own."""
    if kind == "parameters":
        return bool({"value", "default", "valueFrom"} & set(item))
    return item.get("optional") is True or bool(ARTIFACT_SOURCES & set(item))


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One path per cycle found by depth-first search (each closes on its first task)."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    cycles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        path.append(name)
        for upstream in sorted(edges.get(name, ())):
            if state.get(upstream) == "open":
                cycles.append(path[path.index(upstream):] + [upstream])
            elif upstream not in state:
                visit(upstream, path)
        path.pop()
        state[name] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [])
    return cycles


def _ancestors(name: str, edges: dict[str, set[str]]) -> set[str]:
    """Every task that `name` waits for, directly or through others."""
    seen: set[str] = set()
    stack = list(edges.get(name, ()))
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(edges.get(current, ()))
    return seen


def _tag_problems(value: Any, scope: _Scope, where: str) -> list[str]:
    problems = []
    for text in _strings(value):
        for body in _tags(text):
            problem = f"unclosed '{{{{' in {text!r}" if body is None else scope.problem(body)
            if problem:
                problems.append(f"{where}: {problem}")
    return problems


# --- schema ------------------------------------------------------------------------------------------------------

_WIDEN = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": ["integer", "string"],
    "io.k8s.apimachinery.pkg.api.resource.Quantity": ["number", "string"],
}
_DEFINITION = "io.argoproj.workflow.v1alpha1.{kind}"


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of Argo's schema.json made to match what Argo accepts, and strict about keys:
    IntOrString and Quantity also take numbers (the file says string only, Hera writes `limit: 3`), and every
    object definition that lists its properties forbids others, so a misspelt key is an error rather than
    silently ignored. Definitions that already say something about additionalProperties keep it."""
    strict = copy.deepcopy(schema)
    definitions = strict["definitions"]
    for name, types in _WIDEN.items():
        if name not in definitions:
            raise ValueError(f"schema has no definition {name}: is this Argo's schema.json?")
        definitions[name]["type"] = types
    for definition in definitions.values():
        if "properties" in definition and "additionalProperties" not in definition:
            definition["additionalProperties"] = False
    return strict


@lru_cache(maxsize=4)
def _strict_root(path: str) -> dict[str, Any]:
    return strict_schema(json.loads(Path(path).read_text()))


@lru_cache(maxsize=16)
def _validator(path: str, definition: str) -> Any:
    """A compiled validator for one definition, with the whole strict file as root so `#/definitions/...` resolve."""
    import jsonschema

    root = _strict_root(path)
    if definition not in root["definitions"]:
        return None
    schema = {key: value for key, value in root.items() if key not in ("oneOf", "type")}
    schema["$ref"] = f"#/definitions/{definition}"
    cls = jsonschema.validators.validator_for(root, default=jsonschema.Draft202012Validator)
    return cls(schema)


def validate_against_schema(doc: dict[str, Any], schema_path: str | Path) -> list[str]:
    """Errors (`$.json.path: message`, sorted by path; empty when valid) of `doc` against the strict Argo schema for
    its kind, read from `schema_path` (Argo's schema.json). Loaded and compiled once per file and kind."""
    kind = doc.get("kind") if isinstance(doc, dict) else None
    definition = _DEFINITION.format(kind=kind)
    validator = _validator(str(Path(schema_path).resolve()), definition)
    if validator is None:
        return [f"$.kind: {kind!r} has no definition {definition} in {schema_path}"]
    errors = sorted(validator.iter_errors(doc), key=lambda error: error.json_path)
    return [f"{error.json_path}: {error.message}" for error in errors]
