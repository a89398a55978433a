"""Artifact files: a Parquet table that is missing, cut short or without a column is named in the error."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steps.core.artifacts import read_parquet


def test_read_parquet_names_the_file_and_what_is_wrong(tmp_path):
    path = tmp_path / "table.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "value": [1.0, 2.0]}), path)
    assert read_parquet(path, "a test table", ["id"]).column_names == ["id"]
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'none.parquet'}: missing \\(a test table\\)"):
        read_parquet(tmp_path / "none.parquet", "a test table")
    with pytest.raises(ValueError, match=f"{path}: no column reason, flag \\(a test table\\)"):
        read_parquet(path, "a test table", ["id", "reason", "flag"])
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"{path}: not a readable Parquet file \\(a test table\\): "):
        read_parquet(path, "a test table", ["id"])
    with pytest.raises(ValueError, match="not a readable Parquet file"):
        read_parquet(path, "a test table")


def test_an_artifact_json_takes_numpy_values_and_paths(tmp_path):
    """The writer's own JSON fallback called `.item()` on any array: one of three values could not be written."""
    import json
    from pathlib import Path

    import numpy as np

    from steps.core.artifacts import ArtifactWriter

    with ArtifactWriter(tmp_path / "a", stage="test") as writer:
        writer.write_json("values.json", {"array": np.arange(3), "scalar": np.float32(0.5), "path": Path("/x")})
    assert json.loads((tmp_path / "a" / "values.json").read_text()) == {"array": [0, 1, 2], "scalar": 0.5,
                                                                         "path": "/x"}
