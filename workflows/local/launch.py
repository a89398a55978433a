"""`python -m workflows.local.launch EXECUTOR_PID COMMAND...`: become a stage's COMMAND, tied to its run.

The executor starts each stage in a session of its own, so that stopping a run signals the stage's whole
process group. A `stellar run` killed outright (SIGKILL, the OOM killer) cannot do that, and its stages would run
on unattended. On Linux this asks the kernel to send the stage SIGTERM when the executor thread that started it
ends (`prctl(PR_SET_PDEATHSIG)`, which `exec` keeps), exits at once if the executor is already gone, and then
execs COMMAND unchanged, as the stage's container would run it. Elsewhere it only execs COMMAND.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
EXIT_EXECUTOR_GONE = 128 + signal.SIGTERM


def tie_to_parent(executor_pid: int) -> bool:
    """Ask for SIGTERM when the parent ends; False when the executor has already ended."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            print(f"launch: prctl(PR_SET_PDEATHSIG) failed: {os.strerror(ctypes.get_errno())}; the stage is not "
                  f"stopped if the run is killed", file=sys.stderr)
    return os.getppid() == executor_pid


def main(argv: list[str]) -> int:
    """Exec the command; return an exit status only when that is impossible."""
    if len(argv) < 2 or not argv[0].isdigit():
        print("usage: python -m workflows.local.launch EXECUTOR_PID COMMAND...", file=sys.stderr)
        return 2
    if not tie_to_parent(int(argv[0])):
        return EXIT_EXECUTOR_GONE
    command = argv[1:]
    try:
        os.execvp(command[0], command)
    except OSError as error:
        print(f"could not start {command[0]}: {error}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
