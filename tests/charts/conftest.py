"""Fixtures of the chart tests: the Helm library, the chart generator, the Argo schema."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def helm():
    """The Helm library; these tests render and lint only through it."""
    return pytest.importorskip("helm_python", reason="helm-python-sdk (the test extra) is not installed")


@pytest.fixture(scope="session")
def sync():
    """charts/sync.py, the generator of the pipeline chart's Hera-derived files (a script, not a package)."""
    spec = importlib.util.spec_from_file_location("chart_sync", REPO / "charts" / "sync.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def argo_schema(shared_dir) -> Path:
    return shared_dir / "schemas" / "argo-workflows" / "schema.json"
