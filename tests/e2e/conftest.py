"""One small end-to-end run shared by the end-to-end tests, and a way to call the `stellar` command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

SMALL_SAMPLES = 100


def run_stellar(*args: str, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `stellar ARGS` in a child process, as a user would."""
    return subprocess.run([sys.executable, "-m", "workflows.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="session")
def stellar() -> Callable[..., subprocess.CompletedProcess]:
    """`stellar(*args)` -> CompletedProcess."""
    return run_stellar


@pytest.fixture(scope="session")
def pipeline_home(tmp_path_factory) -> Path:
    """A home after one complete `stellar run` at small size."""
    home = tmp_path_factory.mktemp("home")
    result = run_stellar("run", "--home", str(home), "--samples", str(SMALL_SAMPLES))
    assert result.returncode == 0, result.stdout + result.stderr
    return home
