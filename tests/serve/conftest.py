"""Fixtures of the API tests: apps over the registry of a copy of the shared small run, or over a copy a test may
change."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api_helpers import ready_client, settings_for


@pytest.fixture(scope="session")
def api_home(tmp_path_factory, pipeline_home) -> Path:
    """A copy of the shared small run's home (tests/conftest.py) whose production versions are its Keras models,
    version 1 each (each run registers its candidates first). On 100 synthetic objects the gates may promote a
    NumPy baseline instead (they do for SED), which tests/steps/test_promote_deploy.py covers, while these tests
    serve the Keras models. Read only: tests that change the registry use `registry_copy`."""
    from steps.core.registry import PRODUCTION, ModelRegistry

    home = tmp_path_factory.mktemp("api") / "home"
    shutil.copytree(pipeline_home, home, ignore=shutil.ignore_patterns("run.lock"))
    registry = ModelRegistry.open(str(home / "registry"))
    for name in registry.names():
        if registry.aliases(name).get(PRODUCTION) != "1":
            registry.set_alias(name, PRODUCTION, "1")
    return home


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
