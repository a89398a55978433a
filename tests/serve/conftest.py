"""Fixtures of the API tests: apps over the registry of the shared small run, or over a copy a test may change."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api_helpers import ready_client, settings_for


@pytest.fixture(scope="session")
def api_home(pipeline_home) -> Path:
    """The shared small run's home (read only: tests that change the registry use `registry_copy`)."""
    return pipeline_home


@pytest.fixture(scope="session")
def client(api_home) -> Iterator[TestClient]:
    """One ready app over the shared run's registry, for tests that only read."""
    with ready_client(settings_for(api_home)) as client:
        yield client


@pytest.fixture
def registry_copy(api_home, tmp_path) -> Path:
    """A home whose registry is a private copy of the shared run's."""
    shutil.copytree(api_home / "registry", tmp_path / "registry")
    return tmp_path
