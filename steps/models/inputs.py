"""Uniform, validated read access to a batch of objects: a pyarrow Table, a pandas DataFrame, a mapping of column
name to array, or a list of records.

Models read their inputs only through `Columns`, so the batch prediction path (tables) and the API path (JSON
records, or the arrays the API decodes a request into) share one implementation and agree to the last bit.
Missing scalars read as NaN (a model imputes them); a malformed value is a `ValueError` that names the field, and
for records the record's position.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


class Columns:
    """Read-only columns of a batch of objects, whatever container they came in."""

    def __init__(self, data: Any):
        if isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        if isinstance(data, pa.Table):
            self._kind, self._data, self.n = "arrow", data, data.num_rows
            self.names = set(data.column_names)
        elif isinstance(data, pd.DataFrame):
            self._kind, self._data, self.n = "pandas", data, len(data)
            self.names = {str(name) for name in data.columns}
        elif isinstance(data, Mapping):
            sizes = {name: len(values) for name, values in data.items()}
            if len(set(sizes.values())) > 1:
                raise ValueError(f"arrays of different lengths: {sizes}")
            self._kind, self._data, self.n = "arrays", dict(data), next(iter(sizes.values()), 0)
            self.names = set(self._data)
        elif isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
            for index, record in enumerate(data):
                if not isinstance(record, Mapping):
                    raise TypeError(f"record {index}: expected an object with named fields, "
                                    f"got {type(record).__name__}")
            self._kind, self._data, self.n = "records", list(data), len(data)
            self.names = {key for record in self._data for key in record}
        else:
            raise TypeError(f"cannot read inputs from {type(data).__name__}: give a pyarrow Table, a pandas "
                            "DataFrame, a mapping of column name to array, or a list of records")

    def has(self, name: str) -> bool:
        """Whether the batch has a field `name` (for records: whether any record has it)."""
        return name in self.names

    def _where(self, index: int, name: str) -> str:
        return f"record {index}: field {name!r}" if self._kind == "records" else f"column {name!r}, row {index}"

    def raw(self, name: str) -> list[Any]:
        """The values of one field as Python objects (None where absent)."""
        if not self.has(name):
            return [None] * self.n
        if self._kind == "arrow":
            return self._data.column(name).to_pylist()
        if self._kind in ("pandas", "arrays"):
            values = self._data[name].tolist() if self._kind == "pandas" else list(self._data[name])
            return [None if _is_missing_scalar(v) else v for v in values]
        return [record.get(name) for record in self._data]

    def scalar(self, name: str) -> np.ndarray:
        """One numeric field as float64, NaN where missing or null."""
        if not self.has(name):
            return np.full(self.n, np.nan)
        if self._kind == "arrow":
            column = self._data.column(name)
            if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
                    or pa.types.is_boolean(column.type) or pa.types.is_null(column.type)):
                raise ValueError(f"column {name!r}: expected numbers, got {column.type}")
            return np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
        if self._kind == "pandas":
            series = self._data[name]
            if pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
                return series.to_numpy(dtype=np.float64, na_value=np.nan)
        if self._kind == "arrays":
            values = np.asarray(self._data[name])
            if values.ndim == 1 and values.dtype.kind in "biuf":
                return values.astype(np.float64, copy=False)
        out = np.empty(self.n, dtype=np.float64)
        for index, value in enumerate(self.raw(name)):
            out[index] = _number(value, lambda: self._where(index, name))
        return out

    def strings(self, name: str) -> np.ndarray:
        """One text field as an object array of str (None where missing)."""
        return np.array([None if v is None else str(v) for v in self.raw(name)], dtype=object)

    def vectors(self, name: str, length: int, required: bool = True) -> np.ndarray:
        """A fixed-length list field as an (n, length) float64 array; NaN for null entries or (optional) absence.

        A list of the wrong length is a ValueError naming the field, the row and both lengths.
        """
        if self.n == 0:
            return np.zeros((0, length))
        if not self.has(name):
            if required:
                raise KeyError(f"field {name!r} is required (a list of {length} numbers)")
            return np.full((self.n, length), np.nan)
        if self._kind == "arrow":
            return self._arrow_vectors(name, length, required)
        if self._kind == "arrays":
            values = np.asarray(self._data[name])
            if values.dtype.kind not in "biuf" or values.shape != (self.n, length):
                raise ValueError(f"array {name!r}: expected shape ({self.n}, {length}) of numbers, "
                                 f"got {values.shape} of {values.dtype}")
            return values.astype(np.float64, copy=False)
        out = np.full((self.n, length), np.nan)
        for index, value in enumerate(self.raw(name)):
            where = self._where(index, name)
            if value is None:
                if required:
                    raise ValueError(f"{where}: missing (a list of {length} numbers is required)")
                continue
            if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__len__"):
                raise ValueError(f"{where}: expected a list of {length} numbers, got {type(value).__name__}")
            if len(value) != length:
                raise ValueError(f"{where}: expected {length} values, got {len(value)}")
            row = np.asarray(value)
            if row.dtype.kind in "biuf" and row.ndim == 1:
                out[index] = row
            else:
                out[index] = [_number(v, lambda: where) for v in value]
        return out

    def _arrow_vectors(self, name: str, length: int, required: bool) -> np.ndarray:
        column = self._data.column(name)
        if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
                or pa.types.is_fixed_size_list(column.type)):
            raise ValueError(f"column {name!r}: expected a list of numbers per row, got {column.type}")
        value_type = column.type.value_type
        if not (pa.types.is_integer(value_type) or pa.types.is_floating(value_type)
                or pa.types.is_boolean(value_type)):
            raise ValueError(f"column {name!r}: expected lists of numbers, got lists of {value_type}")
        array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        valid = ~np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        if required and not valid.all():
            row = int(np.flatnonzero(~valid)[0])
            raise ValueError(f"column {name!r}, row {row}: missing (a list of {length} numbers is required)")
        lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
        bad = valid & (np.nan_to_num(lengths.astype(np.float64), nan=-1) != length)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"column {name!r}, row {row}: expected {length} values, got {int(lengths[row])}")
        values = pc.cast(pc.list_flatten(array), pa.float64()).to_numpy(zero_copy_only=False)
        out = np.full((self.n, length), np.nan)
        out[valid] = np.asarray(values, dtype=np.float64).reshape(-1, length)
        return out


def _is_missing_scalar(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and value != value:
        return True
    return value is pd.NA or value is pd.NaT


def _number(value: Any, where) -> float:
    if value is None:
        return np.nan
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if value is pd.NA:
        return np.nan
    raise ValueError(f"{where()}: expected a number, got {type(value).__name__} {value!r:.40}")
