"""SED requests are catalogue photometry, preprocessed exactly as the model's training data was.

A client of `POST /v1/sed:predict` has what the archives give (Gaia, 2MASS and AllWISE magnitudes with their
errors, the parallax, optionally E(B-V)), not the model's derived inputs (saturation-corrected, dereddened
magnitudes, colours, absolute G, band masks). So the route reads the fields of the raw photometry schema for the
model's bands (`catalogue_inputs`) and `preprocessed` turns them into the model's inputs with
`preprocess_as_trained`, as `stellar predict sed` does: the same star gets the same answer from both. An object
that preprocessing sets aside (fewer usable bands than training required) is left out of the model's batch with
its reason, and answered with null outputs and that `problem`, as batch prediction does; the others are predicted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from steps.ingest.schemas import PHOTOMETRY_SCHEMA
from steps.models.inputs import Columns
from steps.preprocess.as_trained import SpecMismatch, preprocess_as_trained
from steps.preprocess.common import RawArtifact
from steps.serve.payloads import Batch, FieldSpec, InputSpec, InvalidInput, field_range

CATALOGUE_MODELS = ("sed",)


def catalogue_inputs(model_spec: dict, max_objects: int) -> InputSpec:
    """The request fields of an SED model: `mag_<band>` and `err_<band>` for its bands, `parallax`,
    `parallax_error` and `ebv`, every one optional (an object needs at least one)."""
    names = [name for band in model_spec["bands"] for name in (f"mag_{band}", f"err_{band}")]
    names += ["parallax", "parallax_error", "ebv"]
    return InputSpec("sed", [FieldSpec(name, None, False, *field_range(name)) for name in names], require_any=True,
                     max_objects=max_objects)


def preprocessed(batch: Batch, model_inputs: InputSpec, model_spec: dict) -> Batch:
    """The model's inputs for a decoded catalogue batch: the usable objects, and the others in `left_out` by their
    index in the request (a missing value is NaN, as in the archives)."""
    keys = [str(index) for index in range(batch.n)]
    columns = {"id": pa.array(keys, pa.string()), "source": pa.array(["api"] * batch.n, pa.string())}
    for field in PHOTOMETRY_SCHEMA:
        if field.name not in columns:
            values = batch.arrays.get(field.name, np.full(batch.n, np.nan))
            columns[field.name] = pa.array(np.asarray(values, np.float64), pa.float64())
    raw = RawArtifact(Path("request"), pa.table(columns, schema=PHOTOMETRY_SCHEMA), None, False)
    try:
        features = preprocess_as_trained("photometry", raw, model_spec)
    except SpecMismatch as error:
        raise InvalidInput(f"body: {error}") from None
    left_out = {int(row["id"]): row["reason"] for row in features.quarantine.rows}
    cols = Columns(features.table)
    kept = [int(key) for key in cols.strings("id")]
    kept_ids = [batch.ids[i] for i in kept] if batch.ids else None
    usable = (model_inputs.decode_arrays({name: cols.scalar(name) for name in model_inputs.fields if cols.has(name)},
                                         kept_ids) if kept else Batch({}, 0, kept_ids))
    usable.reports_problems, usable.left_out, usable.requested_ids = True, left_out, batch.ids
    return usable
