"""`python -m workflows.local.launch EXECUTOR_PID COMMAND...`: become a stage's COMMAND, tied to its run.

The executor starts each stage in a session of its own, so that stopping a run signals the stage's whole
process group. A `stellar run` killed outright (SIGKILL, the OOM killer) cannot do that, and its stages would run
on unattended. On Linux this asks the kernel to send the stage SIGTERM when the executor thread that started it
ends (`prctl(PR_SET_PDEATHSIG)`, which `exec` keeps), exits at once if the executor is already gone, and then
execs COMMAND unchanged, as the stage's container would run it. Elsewhere (macOS, the BSDs: no such call) it stays
as COMMAND's parent (`supervise`): it checks every `POLL_SECONDS` that the executor is still its parent, stops the
stage's process group with SIGTERM when it is not, and ends as COMMAND ends (its exit status, or the same signal).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from steps.core.processes import stop_with_parent

EXIT_EXECUTOR_GONE = 128 + signal.SIGTERM
POLL_SECONDS = 1.0


def tie_to_parent(executor_pid: int) -> bool:
    """Ask for SIGTERM when the parent ends; False when the executor has already ended."""
    failure = stop_with_parent()
    if failure:
        print(f"launch: {failure}; the stage is not stopped if the run is killed", file=sys.stderr)
    return os.getppid() == executor_pid


def supervise(executor_pid: int, command: list[str]) -> int:
    """Run `command` as a child; SIGTERM the process group once `executor_pid` is no longer this process's parent.
    Returns the child's exit status; a child ended by a signal ends this process by the same signal."""
    signal.signal(signal.SIGTERM, lambda signum, frame: None)  # the group's SIGTERM reaches the child directly
    try:
        child = subprocess.Popen(command)
    except OSError as error:
        print(f"could not start {command[0]}: {error}", file=sys.stderr)
        return 127
    while True:
        try:
            code = child.wait(timeout=POLL_SECONDS)
            break
        except subprocess.TimeoutExpired:
            if os.getppid() != executor_pid:
                os.killpg(os.getpgrp(), signal.SIGTERM)
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def main(argv: list[str], exec_command: bool = sys.platform.startswith("linux")) -> int:
    """Exec the command (`exec_command`: where the kernel can tie it to the executor) or supervise it; return an
    exit status only when the command cannot be run or was supervised."""
    if len(argv) < 2 or not argv[0].isdigit():
        print("usage: python -m workflows.local.launch EXECUTOR_PID COMMAND...", file=sys.stderr)
        return 2
    if not tie_to_parent(int(argv[0])):
        return EXIT_EXECUTOR_GONE
    command = argv[1:]
    if not exec_command:
        return supervise(int(argv[0]), command)
    try:
        os.execvp(command[0], command)
    except OSError as error:
        print(f"could not start {command[0]}: {error}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
