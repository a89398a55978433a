"""Modes for files and folders made private by `tempfile` and then published by rename.

`mkstemp` and `mkdtemp` create owner-only entries (0600, 0700), and a tree copied from a private folder keeps the
source's modes. A registry alias, a model or a predictions file renamed into place from one of them would stay
unreadable to anyone else: in a cluster, to a serving pod that runs as another user than the workflow that wrote
the registry. Each is given the mode `open()` or `mkdir()` would have given it under the process's umask.
"""

from __future__ import annotations

import os
from pathlib import Path


def _process_umask() -> int:
    """The umask, read once at import: from /proc where there is one, since reading it with `os.umask` means
    setting it, for a moment, for every thread of the process."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


UMASK = _process_umask()


def as_if_created(path: str | os.PathLike) -> None:
    """Give `path` (a file or a folder, and everything in a folder) the mode a plain create would have: 0666 or
    0777 less the umask."""
    path = Path(path)
    path.chmod((0o777 if path.is_dir() else 0o666) & ~UMASK)
    if path.is_dir():
        for entry in path.rglob("*"):
            if not entry.is_symlink():
                entry.chmod((0o777 if entry.is_dir() else 0o666) & ~UMASK)
