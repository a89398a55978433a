"""A full disk is one line naming where, and a stage's exit status the workflow does not retry."""

from __future__ import annotations

import errno
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from steps.core.space import NO_SPACE_STATUS, exit_status, failed_path, free_space, out_of_space

FULL = Path("/dev/full")  # every write to it fails with ENOSPC


STAGE = """
import sys
from steps.core.space import exit_status

def main(argv=None):
    with open("/dev/full", "w") as handle:
        handle.write("x" * 10_000)
    return 0

sys.exit(exit_status(main))
"""


@pytest.mark.skipif(not FULL.exists(), reason="no /dev/full on this system")
def test_a_stage_that_runs_out_of_space_ends_with_one_line_and_status_2(tmp_path):
    out = tmp_path / "out" / "model"
    done = subprocess.run([sys.executable, "-c", STAGE, "--split", "s", "--out", str(out)], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[2], timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == NO_SPACE_STATUS and len(lines) == 1 and "Traceback" not in lines[0]
    assert f"no space left to write {out} (" in lines[0] and "free of" in lines[0] and "stellar prune" in lines[0]


class _Said:
    """A stand-in logger that keeps what `exit_status` says."""

    def __init__(self):
        self.lines: list[str] = []

    def error(self, fmt: str, text: str) -> None:
        self.lines.append(text)


def test_the_file_a_write_failed_on_is_named_before_the_stages_output(monkeypatch):
    logger = _Said()
    said = logger.lines
    monkeypatch.setattr("steps.core.space.get_logger", lambda name: logger)

    def scratch_full(argv) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", "/scratch/baselines/x.npz")

    assert exit_status(scratch_full, ["--out=/out/evaluation"]) == NO_SPACE_STATUS
    assert said[-1].startswith("no space left to write /scratch/baselines/x.npz (")

    def unnamed_full(argv) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    assert exit_status(unnamed_full, ["--split", "s", "--out=/out/evaluation"]) == NO_SPACE_STATUS
    assert said[-1].startswith("no space left to write /out/evaluation (")


def test_other_errors_are_not_taken_for_a_full_disk():
    def broken(argv) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", "/x")

    with pytest.raises(PermissionError):
        exit_status(broken, [])
    assert exit_status(lambda argv: 3, []) == 3


def test_a_full_disk_is_found_through_chained_errors_and_shutils_tuples():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as error:
            raise RuntimeError("saving the model failed") from error
    except RuntimeError as chained:
        assert out_of_space(chained) and failed_path(chained) is None
    copied = shutil.Error([("/a/f", "/b/f", "[Errno 28] No space left on device"), ("/a/g", "/b/g", "x")])
    assert out_of_space(copied) and failed_path(copied) == "/b/f"
    assert not out_of_space(shutil.Error([("/a/f", "/b/f", "[Errno 13] Permission denied")]))
    assert not out_of_space(ValueError("3 columns"))


def test_free_space_is_measured_on_the_nearest_folder_that_exists(tmp_path):
    said = free_space(tmp_path / "not" / "yet")
    assert re.fullmatch(r"[\d.]+ (B|KiB|MiB|GiB|TiB) free of [\d.]+ (B|KiB|MiB|GiB|TiB) on its file system", said)
