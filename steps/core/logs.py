"""Stage logging: everything to stderr, one format, so Argo's log view and the local executor's log files agree."""

import logging
import sys


def get_logger(name: str) -> logging.Logger:
    """Return a logger that writes `time level name: message` lines to stderr."""
    root = logging.getLogger("stellar")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
    return root.getChild(name)
