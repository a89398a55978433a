"""What every modality's preprocessing shares: reading the raw artifact, joining labels, publishing features.

A modality's preprocessing is a pure function from the raw tables to a `Features` result; this module does the
I/O around it, so the science code can be tested on in-memory tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from steps.core.artifacts import ArtifactWriter, read_manifest, read_parquet
from steps.core.names import FEATURES_FILE, SPEC_FILE
from steps.core.quarantine import QUARANTINE_TABLE, Quarantine
from steps.ingest.schemas import DATA_FILES, DATA_SCHEMAS, LABEL_SCHEMAS, LABELS_FILE



class RawInputError(ValueError):
    """The input directory is not a usable raw artifact of the modality asked for."""


@dataclass
class RawArtifact:
    """A raw artifact read back: its data table, its labels (None when the source has none), its flags."""

    path: Path
    data: pa.Table
    labels: pa.Table | None
    synthetic: bool


@dataclass
class Features:
    """The result of preprocessing one modality."""

    table: pa.Table
    spec: dict[str, Any]
    quarantine: Quarantine
    objects_in: int
    parameters: dict[str, Any] = field(default_factory=dict)


def read_raw(path: Path, modality: str) -> RawArtifact:
    """Read the raw artifact at `path`, checking it is a finished ingest output with the raw schema's columns."""
    try:
        manifest = read_manifest(path)
    except FileNotFoundError as error:
        raise RawInputError(str(error)) from None
    if manifest.stage != f"ingest.{modality}":
        raise RawInputError(f"{path}: an output of stage {manifest.stage!r}, not of ingest.{modality}")
    data = _read_table(path / DATA_FILES[modality], DATA_SCHEMAS[modality])
    labels_path = path / LABELS_FILE
    labels = _read_table(labels_path, LABEL_SCHEMAS[modality]) if labels_path.is_file() else None
    return RawArtifact(path=path, data=data, labels=labels, synthetic=manifest.synthetic)


def _read_table(path: Path, schema: pa.Schema) -> pa.Table:
    if not path.is_file():
        raise RawInputError(f"{path.parent}: no {path.name}")
    try:
        table = read_parquet(path, "a raw table")
    except ValueError as error:
        raise RawInputError(str(error)) from None
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        raise RawInputError(f"{path}: missing column(s) {', '.join(missing)}")
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise RawInputError(f"{path}: columns do not match the raw schema: {error}") from None


def label_columns(ids: list[str], labels: pa.Table | None, schema: pa.Schema) -> dict[str, pa.Array]:
    """The label columns of `schema` (all but `id`) for `ids`, in order; null (NaN for floats) where unlabelled."""
    names = [name for name in schema.names if name != "id"]
    if labels is None:
        return {name: _missing_labels(schema.field(name).type, len(ids)) for name in names}
    row_of = {label_id: row for row, label_id in enumerate(labels.column("id").to_pylist())}
    rows = pa.array([row_of.get(object_id) for object_id in ids], pa.int64())
    columns = {}
    for name in names:
        column = labels.column(name).take(rows)
        if pa.types.is_floating(column.type):
            column = column.fill_null(np.nan)
        columns[name] = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return columns


def _missing_labels(value_type: pa.DataType, count: int) -> pa.Array:
    if pa.types.is_floating(value_type):
        return pa.array(np.full(count, np.nan), value_type)
    return pa.nulls(count, value_type)


def publish(out: Path, modality: str, raw: RawArtifact, features: Features, max_bad_fraction: float) -> None:
    """Publish features, spec and quarantine atomically; fail (publishing nothing) when too many were bad."""
    parameters = {**features.parameters, "max_bad_fraction": max_bad_fraction}
    with ArtifactWriter(out, stage=f"preprocess.{modality}", parameters=parameters, inputs={"raw": raw.path},
                        synthetic=raw.synthetic) as writer:
        writer.write_table(FEATURES_FILE, features.table)
        writer.write_json(SPEC_FILE, features.spec)
        writer.write_table(QUARANTINE_TABLE, features.quarantine.table())
        writer.count("objects_in", features.objects_in)
        writer.count("objects_out", features.table.num_rows)
        writer.count("quarantined", len(features.quarantine))
        features.quarantine.check(features.objects_in, max_bad_fraction)
