"""TensorFlow's first import, without the native start-up lines that `TF_CPP_MIN_LOG_LEVEL` cannot silence.

TensorFlow 2.21 logs through Abseil before anything initialises Abseil's logging, and Abseil then writes every
message to the process's stderr whatever its level (abseil-cpp pull request 1957, open): each `stellar predict`
or training stage printed two banners ("All log messages before absl::InitializeLog() ...", the oneDNN notice, "Could
not find cuda drivers") and a cuInit error. `import_tensorflow` captures the file descriptor 2 while TensorFlow
loads and looks for its devices, then writes back every captured line except those; anything else (a real warning,
a GPU's device lines, Python's own messages) comes through, in order.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType

NO_DRIVER = "Could not find cuda drivers"
START_UP_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    NO_DRIVER,
)
WITHOUT_A_DRIVER = ("failed call to cuInit",)  # noise only where TensorFlow found no CUDA driver at all


def kept_lines(captured: str) -> str:
    """`captured` less TensorFlow's start-up noise (its cuInit error too, where it found no CUDA driver)."""
    noise = START_UP_NOISE + (WITHOUT_A_DRIVER if NO_DRIVER in captured else ())
    return "".join(line for line in captured.splitlines(keepends=True) if not any(text in line for text in noise))


@contextlib.contextmanager
def native_stderr_filtered() -> Iterator[None]:
    """Capture what the process writes to file descriptor 2 inside the block; write back `kept_lines` of it."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all (a daemon's): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = kept_lines(captured.read().decode(errors="replace"))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def import_tensorflow() -> ModuleType:
    """Import TensorFlow and find its devices (where the cuInit error comes from) with the start-up noise left out."""
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with native_stderr_filtered():
            import tensorflow

            tensorflow.config.list_physical_devices()
    return sys.modules["tensorflow"]
