"""A stage's worker pool does not outlive the stage (`steps.core.processes`)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the kernel's parent-death signal is Linux's; elsewhere the launcher stops "
                                       "the stage's process group")

# A stage that ignores SIGTERM itself (as a server's graceful-exit handler does): its forked workers must not
STAGE = """
import os, signal, sys, time
from pathlib import Path
from steps.core.processes import worker_pool

signal.signal(signal.SIGTERM, lambda signum, frame: None)

def work(folder):
    Path(folder, str(os.getpid())).touch()
    time.sleep(600)

with worker_pool(2) as pool:
    list(pool.map(work, [sys.argv[1]] * 2, chunksize=1))
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_workers_of_a_stage_killed_outright_stop_with_it(tmp_path):
    """SIGKILL gives the stage no chance to stop its workers (the preprocess-lightcurves stage's pool used to wait on
    its queue for ever, holding the run's log open); the kernel stops them."""
    started = tmp_path / "workers"
    started.mkdir()
    stage = subprocess.Popen([sys.executable, "-c", STAGE, str(started)], start_new_session=True,
                             cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 60
        while len(list(started.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = [int(path.name) for path in started.iterdir()]
        assert len(workers) == 2, "the pool's workers did not start"
        stage.send_signal(signal.SIGKILL)
        stage.wait(timeout=30)
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers), "a worker outlived its stage"
    finally:
        for pid in [int(path.name) for path in started.iterdir()]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        stage.kill()
        stage.wait()
