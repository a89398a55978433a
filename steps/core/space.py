"""A full disk, said in one line: where, how much is free there, and what frees space.

Every stage's `__main__` runs its `main` through `exit_status`: a write that fails for want of space (ENOSPC, or a
quota: EDQUOT), however deep in a library and whatever it was chained to, ends the stage with exit status 2 and one
line instead of a traceback. Status 2 is the one the workflow's retry expression does not retry (bad input or
usage): 15, 30 and 60 seconds later the disk is as full. The local executor says the same of its own copies into
the artifact store (`out_of_space`), where `shutil.copytree` would report a list of (source, target, error) tuples.
"""

from __future__ import annotations

import errno
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from steps.core.logs import get_logger

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
NO_SPACE_TEXTS = ("No space left on device", "Disk quota exceeded")  # in shutil.Error's tuples, TensorFlow's errors
NO_SPACE_STATUS = 2  # not retried: see the module docstring
FREEING = "free space there (stellar prune deletes old runs, the artifacts only they used and unused model versions)"


def out_of_space(error: BaseException) -> bool:
    """Whether `error`, or any error it was raised from or while handling, is a write refused for want of space."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in NO_SPACE_ERRNOS:
            return True
        if isinstance(error, shutil.Error) or not isinstance(error, OSError):
            if any(text in str(error) for text in NO_SPACE_TEXTS):
                return True
        error = error.__cause__ or error.__context__
    return False


def failed_path(error: BaseException) -> str | None:
    """The file a write failed on, where `error` (or one it was chained to) says: an OSError's filename, or the
    target of the first of a `shutil.Error`'s (source, target, error) tuples."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, shutil.Error) and error.args and isinstance(error.args[0], list) and error.args[0]:
            return str(error.args[0][0][1])
        if isinstance(error, OSError) and error.filename:
            return str(error.filename)
        error = error.__cause__ or error.__context__
    return None


def free_space(where: str | Path) -> str:
    """'<free> free of <total> on its file system', of `where` (or the nearest folder above it that exists)."""
    folder = Path(where)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return "the free space there is unknown"
    return f"{human_bytes(usage.free)} free of {human_bytes(usage.total)} on its file system"


def no_space(doing: str, where: str | Path) -> str:
    """The one line a full disk gets: what could not be written, where, the space there, what frees it."""
    return f"no space left to {doing} ({free_space(where)}): {FREEING}, or give it another place"


def exit_status(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a stage's `main(argv)` (None: the command line's); a full disk is one line on stderr and exit status 2,
    naming the file the write failed on where the error says, else the stage's `--out`."""
    try:
        return main(argv)
    except Exception as error:
        if not out_of_space(error):
            raise
        where = failed_path(error) or _output(sys.argv[1:] if argv is None else argv)
        get_logger("stage").error("%s", no_space(f"write {where}", where))
        return NO_SPACE_STATUS


def _output(args: list[str]) -> str:
    """The `--out` of a stage's arguments (`--out DIR` or `--out=DIR`), else the working folder."""
    for index, arg in enumerate(args):
        if arg == "--out" and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith("--out="):
            return arg.removeprefix("--out=")
    return "."


def human_bytes(size: int) -> str:
    """A size as `du -h` gives it, in powers of 1024."""
    value, units = float(size), ["B", "KiB", "MiB", "GiB", "TiB"]
    while value >= 1024 and len(units) > 1:
        value, units = value / 1024, units[1:]
    return f"{size} B" if units[0] == "B" else f"{value:.1f} {units[0]}"
