"""Render the Argo objects to YAML: what `stellar render` writes and what the Helm chart ships."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from workflows.pipeline import RenderOptions, build_cron_workflow, build_prune_cron_workflow, build_workflow_template
from workflows.validate import check_references

WORKFLOW_TEMPLATE_FILE = "workflowtemplate.yaml"
CRON_WORKFLOW_FILE = "cronworkflow.yaml"
PRUNE_CRON_WORKFLOW_FILE = "prune-cronworkflow.yaml"

__all__ = ["RenderOptions", "rendered_documents", "to_yaml", "write_rendered"]


class _BlockStyleDumper(yaml.SafeDumper):
    """Writes multi-line strings (the gates YAML) as literal blocks, so the rendered file stays readable."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockStyleDumper.add_representer(str, _represent_str)


def to_yaml(doc: dict[str, Any]) -> str:
    """Deterministic YAML for one document."""
    return yaml.dump(doc, Dumper=_BlockStyleDumper, sort_keys=False, width=120)


def rendered_documents(options: RenderOptions | None = None) -> dict[str, dict[str, Any]]:
    """file name -> document, after checking every reference; raises ValueError listing the problems."""
    documents = {WORKFLOW_TEMPLATE_FILE: build_workflow_template(options).to_dict(),
                 CRON_WORKFLOW_FILE: build_cron_workflow(options).to_dict(),
                 PRUNE_CRON_WORKFLOW_FILE: build_prune_cron_workflow(options).to_dict()}
    problems = [f"{name}: {problem}" for name, doc in documents.items() for problem in check_references(doc)]
    if problems:
        raise ValueError("rendered objects do not check out:\n  " + "\n  ".join(problems))
    return documents


def write_rendered(out: Path, options: RenderOptions | None = None) -> list[Path]:
    """Write the documents into `out`; return their paths. Nothing is written unless all render and check out."""
    documents = rendered_documents(options)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, doc in documents.items():
        (out / name).write_text(to_yaml(doc))
        paths.append(out / name)
    return paths
