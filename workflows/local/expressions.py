"""Argo's `{{...}}` substitution and the `retryStrategy.expression` language, as far as local runs need them."""

from __future__ import annotations

import ast
import re
from typing import Mapping

_TAG = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")


class UnresolvedReference(KeyError):
    """A `{{...}}` tag that names nothing in scope."""


def substitute(text: str, scope: Mapping[str, str], keep: tuple[str, ...] = ()) -> str:
    """Replace every `{{name}}` by `scope[name]`; tags starting with a prefix in `keep` are left as they are."""

    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name.startswith("="):
            raise UnresolvedReference(f"{match.group(0)}: expression tags are not run by the local executor")
        if name in scope:
            return scope[name]
        if name.startswith(keep):
            return match.group(0)
        raise UnresolvedReference(f"{match.group(0)} names nothing in scope")

    return _TAG.sub(replace, text)


_ALLOWED = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.Compare, ast.Eq, ast.NotEq,
            ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Call, ast.Name, ast.Constant, ast.Load,
            ast.List, ast.Tuple)
_FUNCTIONS = {"asInt": int, "asFloat": float, "string": str}


def retry_expression_allows(expression: str, exit_code: int, status: str, duration: float, message: str = "") -> bool:
    """Evaluate a retry `expression` over `lastRetry.*` the way Argo's expr language would for these forms:
    comparisons, `&&`, `||`, `!`, `in [...]` and the functions asInt, asFloat, string."""
    source = (expression.replace("&&", " and ").replace("||", " or ")
              .replace("lastRetry.exitCode", "exitCode").replace("lastRetry.status", "status")
              .replace("lastRetry.duration", "duration").replace("lastRetry.message", "message"))
    source = re.sub(r"!(?!=)", " not ", source)
    tree = ast.parse(source.strip(), mode="eval")
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED) or (isinstance(node, ast.Call) and (
                not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS)):
            raise ValueError(f"retry expression {expression!r}: {type(node).__name__} is not supported locally")
    # Argo exposes lastRetry values as strings.
    names = {"exitCode": str(exit_code), "status": status, "duration": str(duration), "message": message,
             "true": True, "false": False, **_FUNCTIONS}
    return bool(eval(compile(tree, "<retry expression>", "eval"), {"__builtins__": {}}, names))  # noqa: S307


_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)")


def parse_duration(value: str | int | float) -> float:
    """Seconds in an Argo/Go duration (`15s`, `1m30s`, `500ms`) or a bare number of seconds."""
    if isinstance(value, (int, float)) or str(value).replace(".", "", 1).isdigit():
        return float(value)
    text = str(value).strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"{value!r} is not a duration (examples: 15s, 1m30s, 500ms)")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)
