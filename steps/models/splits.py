"""Reading one modality of a split directory: `<modality>/{train,val,test}.parquet` and `<modality>/spec.json`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def read_split(split_dir: str | os.PathLike, modality: str) -> tuple[dict[str, pa.Table], dict[str, Any], Path]:
    """The train/val/test tables and the spec of one modality of a split directory (val/test may be absent)."""
    folder = Path(split_dir) / modality
    if not folder.is_dir():
        raise FileNotFoundError(f"{split_dir}: no {modality}/ folder (is it a split directory?)")
    spec_path = folder / "spec.json"
    if not spec_path.is_file():
        raise FileNotFoundError(f"{spec_path}: missing (the input spec of {modality})")
    try:
        spec = json.loads(spec_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{spec_path}: not valid JSON: {error}") from None
    tables = {}
    for part in ("train", "val", "test"):
        path = folder / f"{part}.parquet"
        if path.is_file():
            tables[part] = pq.read_table(path)
        elif part == "train":
            raise FileNotFoundError(f"{path}: missing (the training rows of {modality})")
    schema = tables["train"].schema
    for part in ("val", "test"):
        tables.setdefault(part, schema.empty_table())
    return tables, spec, spec_path
