"""Arrow helpers for the per-object array columns (spectra, light curves): numpy arrays in, numpy arrays out,
without a Python loop over elements."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa


def list_column(arrays: Sequence[np.ndarray], value_type: pa.DataType) -> pa.ListArray:
    """One list-typed column from a sequence of 1-D arrays (one per row)."""
    lengths = np.fromiter((len(array) for array in arrays), dtype=np.int32, count=len(arrays))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = (np.concatenate(arrays) if len(arrays) else np.empty(0)).astype(value_type.to_pandas_dtype())
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, value_type))


def column_arrays(column: pa.ChunkedArray | pa.Array, dtype: type | np.dtype) -> list[np.ndarray]:
    """The rows of a list-typed column as numpy arrays of `dtype` (a null row becomes an empty array)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = array.offsets.to_numpy()
    values = array.values.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    return [values[start:stop] for start, stop in zip(offsets[:-1], offsets[1:])]
