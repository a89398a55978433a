"""Processes that end with the process that started them: a stage's worker pool, and the launcher of a local run.

When `stellar run` is killed outright (SIGKILL, the OOM killer), the launcher has the kernel stop each stage
(`workflows.local.launch`). A stage's own worker processes are its children, not the executor's: each has to ask
for the same, or it waits on its work queue for ever once the stage is gone.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1


def stop_with_parent() -> str | None:
    """Ask the kernel (Linux) to send this process SIGTERM when the thread that started it ends. Returns why it
    could not (None where it was done, and on other systems, where `workflows.local.launch` stops the stage's whole
    process group instead)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(ctypes.get_errno())}"
    return None


def _worker_started(parent: int) -> None:
    """A pool worker's initializer: stop with the stage (on SIGTERM, whatever handler the stage had installed when
    it forked the worker), and stop now if the stage has already gone."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    stop_with_parent()
    if os.getppid() != parent:
        os._exit(128 + signal.SIGTERM)


def worker_pool(workers: int) -> "ProcessPoolExecutor":
    """A process pool whose workers end when the process that made it ends, however that ends. Make it from the
    thread that submits to it (the kernel ties each worker to the thread that forked it). The workers are forked
    on Linux, so that their parent is this process (Python 3.14 starts them from a forkserver by default). Imported
    here: the launcher, which runs before every stage, needs only `stop_with_parent`."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("fork") if sys.platform.startswith("linux") else None
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_started,
                               initargs=(os.getpid(),))
