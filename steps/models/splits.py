"""Reading one modality of a split directory: `<modality>/{train,val,test}.parquet` and `<modality>/spec.json`."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from steps.core.artifacts import read_parquet
from steps.models.inputs import Columns
from steps.models.metrics import classification_metrics


def split_holding(split_dirs: list[Path], modality: str, needed_by: str) -> Path:
    """The one of `split_dirs` that holds `modality` (a pipeline run splits each modality on its own; a split by
    hand may hold several), naming them all when none or more than one does."""
    holding = [Path(d) for d in split_dirs if (Path(d) / modality).is_dir()]
    if len(holding) != 1:
        given = ", ".join(str(d) for d in split_dirs)
        raise FileNotFoundError(f"--split: {'none' if not holding else 'more than one'} of {given} holds the "
                                f"{modality} split that {needed_by} needs (a {modality}/ folder)")
    return holding[0]


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
            tables[part] = read_parquet(path, f"the {part} rows of {modality}")
        elif part == "train":
            raise FileNotFoundError(f"{path}: missing (the training rows of {modality})")
    schema = tables["train"].schema
    for part in ("val", "test"):
        tables.setdefault(part, schema.empty_table())
    return tables, spec, spec_path


def classified_rows(name: str, train: pa.Table, val: pa.Table, spec: dict[str, Any]
                    ) -> tuple[list[str], pa.Table, pa.Table, np.ndarray, np.ndarray]:
    """A classifier's classes (the spec's, else those the training labels name) and the train and validation rows
    labelled with one of them, with their class indices. Rows with no or another class cannot be learnt from."""
    if "class" not in train.column_names:
        raise ValueError(f"{name}: the training table has no `class` column")
    labels = Columns(train).strings("class")
    classes = list(spec.get("classes") or sorted({c for c in labels if c is not None}))
    index = {c: i for i, c in enumerate(classes)}
    keep = np.array([c in index for c in labels], bool)
    if keep.sum() < 2:
        raise ValueError(f"{name}: fewer than 2 training rows with a class among {classes}")
    train = train.filter(pa.array(keep))
    if val.num_rows:
        val = val.filter(pa.array([c in index for c in Columns(val).strings("class")], pa.bool_()))
    indices = [np.array([index[c] for c in Columns(t).strings("class")], np.int64) for t in (train, val)]
    return classes, train, val, indices[0], indices[1]


def classifier_fit_metrics(predict_proba: Callable[[pa.Table], np.ndarray], classes: list[str],
                           tables: dict[str, tuple[pa.Table, pa.Table]]) -> dict[str, Any]:
    """A classifier's training record: per split (`{"train": (all rows, kept rows), "val": ...}`) how many rows
    had no usable class, and its classification metrics on the kept rows."""
    metrics: dict[str, Any] = {"dropped_rows": {split: every.num_rows - kept.num_rows
                                                for split, (every, kept) in tables.items()}}
    for split, (_, kept) in tables.items():
        if kept.num_rows:
            metrics[split] = classification_metrics(Columns(kept).strings("class"), predict_proba(kept), classes)
    return metrics
