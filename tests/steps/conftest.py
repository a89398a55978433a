"""Fixtures shared by the stage tests: baselines trained on a learnable split and on one with shuffled labels."""

from __future__ import annotations

import pytest

from split_fixtures import train_all


@pytest.fixture(scope="session")
def learnable(tmp_path_factory):
    """(split, {model: directory}) where every model can learn its labels."""
    return train_all(tmp_path_factory.mktemp("learnable"), noise=False)


@pytest.fixture(scope="session")
def noise(tmp_path_factory):
    """(split, {model: directory}) trained on shuffled labels: nothing to learn, so the gates must refuse."""
    return train_all(tmp_path_factory.mktemp("noise"), noise=True)
