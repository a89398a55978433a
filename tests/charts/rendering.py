"""Rendering the charts offline through the Helm library (helm_python), and the value sets the chart tests use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
PIPELINE_CHART = REPO / "charts" / "stellar-pipeline"
API_CHART = REPO / "charts" / "stellar-api"
NAMESPACE = "stellar"
# Kubernetes versions every object is validated for: the oldest the charts support (kubeVersion >=1.30) and a
# recent one.
KUBE_VERSIONS = ("1.30", "1.34")
ARGO_KINDS = {"WorkflowTemplate", "CronWorkflow"}

# Value sets each chart is rendered with: defaults alone, the kind setup (`make deploy`), and production-like ones.
PIPELINE_VALUES = {
    "defaults": {},
    "kind": {"image": {"registry": "localhost/stellar-pipeline", "tag": "0.1.0", "pullPolicy": "Never"},
             "workflow": {"parameters": {"samples": 500, "trainer": "keras"}}},
    "production": {"s3": {"existingSecret": "prod-s3"},
                   "artifactRepository": {"bucket": "prod-artifacts", "endpoint": "s3.eu-west-1.amazonaws.com",
                                          "insecure": False, "region": "eu-west-1", "default": False},
                   "cron": {"schedules": ["0 2 * * 0", "0 2 * * 3"], "timezone": "Europe/Berlin",
                            "concurrencyPolicy": "Replace"},
                   "resources": {"train": {"requests": {"cpu": "4", "memory": "8Gi"},
                                           "limits": {"cpu": "8", "memory": "16Gi"}}},
                   "rbac": {"deployerServiceMonitor": True}},
    "template-only": {"cron": {"enabled": False}, "prune": {"enabled": False}, "rbac": {"create": False}},
}
API_VALUES = {
    "defaults": {},
    "kind": {"image": {"registry": "localhost/stellar-pipeline", "tag": "0.1.0", "pullPolicy": "Never"},
             "service": {"type": "NodePort", "nodePort": 30080},
             "autoscaling": {"enabled": False}, "replicaCount": 1,
             "models": {"spectral": "3", "lightcurve": "1", "sed": "2"}},
    "production": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
                   "imagePullSecrets": [{"name": "registry-credentials"}],
                   "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "3Gi"}},
                   "networkPolicy": {"ingressFrom": [{"namespaceSelector": {"matchLabels": {"team": "astro"}}}],
                                     "egressPorts": [443]},
                   "server": {"extraArgs": ["--workers", "2"]}},
    "minimal": {"networkPolicy": {"enabled": False}, "podDisruptionBudget": {"enabled": False},
                "serviceAccount": {"create": False, "name": "existing-account"}},
}


def render(chart: Path, values: dict[str, Any] | None = None, release: str | None = None) -> list[dict[str, Any]]:
    """Every object the chart renders with `values` (schema-checked by Helm), in template order."""
    import helm_python

    name = release or chart.name
    rendered = helm_python.Chart.load(chart).render(values or {}, name=name, namespace=NAMESPACE, is_install=True)
    return [doc for path, text in sorted(rendered.items()) if path.endswith((".yaml", ".yml"))
            for doc in yaml.safe_load_all(text) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one document of `kind` (named `name`, where several are of that kind)."""
    [doc] = [doc for doc in by_kind(docs, kind) if name is None or doc["metadata"]["name"] == name]
    return doc
