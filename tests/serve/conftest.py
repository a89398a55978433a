"""Fixtures of the API tests: apps over the registry of a small run of their own, or over a copy a test may change."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api_helpers import ready_client, settings_for

SAMPLES = 100  # objects per modality of the run (as the shared small run of tests/conftest.py)


@pytest.fixture(scope="session")
def api_home(tmp_path_factory, stellar) -> Path:
    """A small run whose production versions are its Keras models, version 1 each (read only: tests that change the
    registry use `registry_copy`). The run's gates leave out the comparison with the NumPy baselines: on 100
    synthetic objects a baseline may win it and be promoted instead, which tests/steps/test_promote_deploy.py
    covers, while these tests serve the Keras models."""
    from steps.evaluate.gates import default_gates_text

    gates = default_gates_text().replace("beat_baseline_by: 0.0", "beat_baseline_by: null")
    assert "beat_baseline_by: null" in gates
    home = tmp_path_factory.mktemp("api-home")
    result = stellar("run", "--home", str(home), "--samples", str(SAMPLES), "-p", f"gates={gates}")
    assert result.returncode == 0, result.stdout + result.stderr
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
