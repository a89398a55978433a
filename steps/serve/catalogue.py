"""SED requests are catalogue photometry, made into the model's inputs exactly as its training data was.

A client of `POST /v1/sed:predict` has what the archives give (Gaia, 2MASS and AllWISE magnitudes with their
errors, the parallax, optionally E(B-V)), not the model's derived inputs (saturation-corrected, dereddened
magnitudes, colours, absolute G, band masks). So the route reads the fields of the raw photometry schema for
every archive band (`catalogue_inputs`), and `preprocessed` computes the model's inputs with the function that made
its training features (`photometry.photometry_columns`, with the model's band set and dereddening), as `stellar
predict sed` does: the same star gets the same answer from both. It works on the request's arrays directly (no
tables): about 0.12 ms for one star. An object too poor to use (fewer usable bands than training required)
is left out of the model's batch with its reason and answered with null outputs and that `problem`, as batch
prediction does; the others are predicted. A request with no usable object is a 422 naming each
(`Batch.with_something_usable`).
"""

from __future__ import annotations

import numpy as np

from steps.ingest.schemas import PHOTOMETRIC_BANDS
from steps.preprocess.photometry import photometry_columns, select_bands
from steps.serve.payloads import ANY_FINITE, Batch, FieldSpec, InputSpec, field_range

CATALOGUE_MODELS = ("sed",)


def catalogue_inputs(max_objects: int) -> InputSpec:
    """The request fields of an SED model: `mag_<band>` and `err_<band>` of every archive band (a model's own bands
    come from them, and the Gaia saturation corrections of BP and RP read G and RP whether or not the model uses
    them, as in training), `parallax`, `parallax_error` and `ebv`, every one optional (an object needs at least
    one). A magnitude or error may be any finite number, as in an archive's table (99 with an error of 99 for no
    measurement): preprocessing masks the band as `stellar predict sed` does, rather than the batch being refused."""
    bands = [name for band in PHOTOMETRIC_BANDS for name in (f"mag_{band}", f"err_{band}")]
    fields = [FieldSpec(name, None, False, -ANY_FINITE, ANY_FINITE) for name in bands]
    fields += [FieldSpec(name, None, False, *field_range(name)) for name in ("parallax", "parallax_error", "ebv")]
    return InputSpec("sed", fields, require_any=True, max_objects=max_objects)


def preprocessed(batch: Batch, model_inputs: InputSpec, model_spec: dict) -> Batch:
    """The model's inputs for a decoded catalogue batch: the usable objects, and the others in `left_out` by their
    index in the request (a field a request leaves out is missing, NaN, as in the archives)."""
    made = photometry_columns(batch.arrays, select_bands(tuple(model_spec["bands"])),
                              bool(model_spec.get("dereddened", True)))
    derived = {**made.numeric, **made.flags()}
    kept = np.array([row for row in range(batch.n) if row not in made.too_poor], dtype=np.int64)
    arrays = {name: np.asarray(derived[name][kept], np.float64) for name in model_inputs.fields if name in derived}
    ids = [batch.ids[row] for row in kept] if batch.ids else None
    return Batch(arrays, len(kept), ids, reports_problems=True, left_out=made.too_poor, requested_ids=batch.ids)
