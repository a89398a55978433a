"""The code version recorded in manifests and cache keys: package version plus a hash of the stage sources.

The hash makes a local edit of stage code invalidate cached results even when the version number did not move.
"""

import functools
import hashlib
from importlib import metadata
from pathlib import Path

PACKAGE = "stellar-pipeline"


def package_version() -> str:
    """The installed package version (the image tag in a cluster)."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "0.0.0"


@functools.cache
def code_version() -> str:
    """`<version>+<12 hex digits>`: the package version and a hash of every .py file under `steps/`."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return f"{package_version()}+{digest.hexdigest()[:12]}"
