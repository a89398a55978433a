"""Modes for files and folders made private by `tempfile` and then published by rename.

`mkstemp` and `mkdtemp` create owner-only entries (0600, 0700). A registry alias, a model or a predictions file
renamed into place from one of them would stay unreadable to anyone else: in a cluster, to a serving pod that runs
as another user than the workflow that wrote the registry. Each is given the mode `open()` or `mkdir()` would have
given it under the process's umask.
"""

from __future__ import annotations

import os
from pathlib import Path


def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def as_if_created(path: str | os.PathLike) -> None:
    """Give `path` (a file or a folder) the mode a plain create would have: 0666 or 0777 less the umask."""
    path = Path(path)
    path.chmod((0o777 if path.is_dir() else 0o666) & ~current_umask())
