"""What `stellar run` prints after its table: the records each task set aside."""

from __future__ import annotations

from pathlib import Path

from steps.core.artifacts import ArtifactWriter
from steps.core.quarantine import Quarantine
from steps.core.storage import LocalStore
from workflows.local.cache import StoredArtifact
from workflows.local.executor import CACHED, SUCCEEDED, RunResult, TaskState
from workflows.run import quarantine_lines


def _artifact(root: Path, key: str, counts: dict[str, int], quarantine: Quarantine | None) -> StoredArtifact:
    with ArtifactWriter(root / key, stage="test") as writer:
        if quarantine is not None:
            writer.write_table("quarantine.parquet", quarantine.table())
        for name, value in counts.items():
            writer.count(name, value)
    return StoredArtifact(key=key, sha256="-")


def test_the_records_each_task_set_aside_are_counted_with_their_reasons_and_where_they_are(tmp_path):
    """The run summary named none of them; they were only in each artifact's quarantine.parquet."""
    ingest = Quarantine("ingest.spectra")
    ingest.add("m0002", "m0002.fits: all flux values are zero", "m0002.fits")
    ingest.add("m0999", "label row m0999 matches no spectrum file", "labels.csv")   # not an object
    preprocess = Quarantine("preprocess.lightcurves")
    for index in range(4):
        preprocess.add(f"kplr{index}", "only 12 valid cadences, fewer than 100", "")
    preprocess.add("kplr9", "median flux -1 is not positive", "")
    labels_only = Quarantine("ingest.photometry")
    labels_only.add("x", "label row x matches no spectrum file", "labels.csv")
    tasks = {
        "ingest-sdss-spectra": TaskState("ingest-sdss-spectra", SUCCEEDED, outputs={
            "raw": _artifact(tmp_path, "a/raw", {"objects": 40, "quarantined": 2}, ingest)}),
        "preprocess-lightcurves": TaskState("preprocess-lightcurves", CACHED, outputs={
            "features": _artifact(tmp_path, "b/features", {"objects_in": 60, "objects_out": 55, "quarantined": 5},
                                  preprocess)}),
        "ingest-gaia-photometry": TaskState("ingest-gaia-photometry", SUCCEEDED, outputs={
            "raw": _artifact(tmp_path, "c/raw", {"objects": 3, "quarantined": 1}, labels_only)}),
        "split-spectra": TaskState("split-spectra", SUCCEEDED, outputs={
            "split": _artifact(tmp_path, "d/split", {"train": 28}, None)}),
    }
    lines = quarantine_lines(RunResult("r", tmp_path / "run", tasks, {}), LocalStore(tmp_path), reasons=1)
    assert lines == [
        f"  ingest-sdss-spectra: 1 of 41; m0002.fits: all flux values are zero ({tmp_path}/a/raw/quarantine.parquet)",
        "  preprocess-lightcurves: 5 of 60; only 12 valid cadences, fewer than 100 (4 records, e.g. kplr0); ... "
        f"({tmp_path}/b/features/quarantine.parquet)"]


def test_an_artifact_whose_records_cannot_be_read_gives_no_line_and_no_error(tmp_path):
    quarantine = Quarantine("ingest.spectra")
    quarantine.add("m0002", "all flux values are zero", "m0002.fits")
    artifact = _artifact(tmp_path, "a/raw", {"objects": 40, "quarantined": 1}, quarantine)
    (tmp_path / "a" / "raw" / "quarantine.parquet").write_bytes(b"cut short")
    tasks = {"ingest-sdss-spectra": TaskState("ingest-sdss-spectra", SUCCEEDED, outputs={"raw": artifact})}
    assert quarantine_lines(RunResult("r", tmp_path / "run", tasks, {}), LocalStore(tmp_path)) == []
