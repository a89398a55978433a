"""Fixtures shared by the whole suite: a real S3 server on loopback, the shared real-data folder, one small
complete `stellar run` (the end-to-end and API tests read its registry), and the `stellar` command line; and how
`make test` spreads the suite over its pytest-xdist workers."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

SMALL_SAMPLES = 100
# The test folders whose tests read the session's complete run (`pipeline_home`), directly or through a copy
PIPELINE_HOME_FOLDERS = ("tests/e2e/", "tests/serve/")


@pytest.hookimpl(optionalhook=True)  # a run without pytest-xdist (`-p no:xdist`) never calls it
def pytest_xdist_make_scheduler(config, log):
    """How `make test` spreads the tests over its pytest-xdist workers: a test file at a time, so that a file's module
    fixtures (trained models, rendered charts) are made once, and the folders that read the session's complete run
    as one unit, so that the run behind `pipeline_home` is made once too. (xdist 3.8's `--dist loadgroup` groups by
    rewriting `item._nodeid`, which pytest 9 no longer reads: its `xdist_group` marks group nothing.) Only for `-n`'s
    default distribution: another `--dist` is left to xdist."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return " + ".join(PIPELINE_HOME_FOLDERS) if path.startswith(PIPELINE_HOME_FOLDERS) else path

    return ByFile(config, log)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`../shared` beside the repository (real data, Argo schemas); skips where a fresh clone lacks it."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: real data and Argo schemas live beside the repository, not in it")
    return SHARED


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 (a real HTTP endpoint), with throw-away credentials."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh bucket on the loopback S3 server; returns its name."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return name


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
