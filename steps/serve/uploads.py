"""Spectra sent to `POST /v1/spectral:predict` -> a validated `Batch` of the model's inputs.

Each uploaded FITS file is read by the connectors' own reader (SDSS-I/II and BOSS `spec-*.fits`, LAMOST, 1-D
library spectra), then preprocessed exactly as the model's training data was (`preprocess_as_trained` with the
model's input spec). A file that cannot be read, or that preprocessing rejects, is answered with its `problem`
naming the file and the reason, and the other files are predicted; nothing here is called on the event loop (it is
CPU work). Spectra sent as arrays (JSON, `.npz`) are on the grid already; one with fewer usable pixels than
preprocessing keeps a spectrum for is answered with its `problem` too (`with_usable_pixels`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from steps.ingest.spectra_files import UnusableSpectrum, read_spectrum, spectra_tables
from steps.models.features import masked_vectors
from steps.models.inputs import Columns
from steps.preprocess.as_trained import SpecMismatch, preprocess_as_trained
from steps.preprocess.common import RawArtifact
from steps.preprocess.spectra import MIN_VALID_FRACTION
from steps.serve.payloads import Batch, InputSpec, InvalidInput

FITS_MEDIA_TYPE = "multipart/form-data"
FILE_FIELD = "file"


def decode_spectra_files(files: list[tuple[str, bytes]], inputs: InputSpec, model_spec: dict) -> Batch:
    """The uploaded spectra (file name, bytes) as model inputs; ids are the spectra's own (e.g. plate-MJD-fiber).

    A file that cannot be read or that preprocessing sets aside is left out of the model's batch and answered with
    its `problem` (its id is the spectrum's, or the file name where it could not be read), as batch prediction
    does; when no file can be predicted, the request is an `InvalidInput` naming each."""
    if not files:
        raise InvalidInput(f"{FILE_FIELD}: no file uploaded (send one or more spec-*.fits as form field "
                           f"{FILE_FIELD!r})")
    spectra, ids, problems = [], [], {}
    for index, (name, data) in enumerate(files):
        ids.append(name)
        try:
            if not data:
                raise UnusableSpectrum("empty")
            spectrum = read_spectrum(data, name)
        except UnusableSpectrum as error:
            problems[index] = f"file {name!r}: {error}"
            continue
        except Exception as error:  # any other failure to parse untrusted bytes is still a malformed file
            problems[index] = f"file {name!r}: not a readable spectrum FITS file ({type(error).__name__})"
            continue
        spectra.append((index, spectrum))
        ids[index] = spectrum.id
    if spectra:  # each row named by its file's place: two files may hold the same object
        data, _ = spectra_tables([dataclasses.replace(spectrum, id=str(index)) for index, spectrum in spectra])
        try:
            features = preprocess_as_trained("spectra", RawArtifact(Path("upload"), data, None, False), model_spec)
        except SpecMismatch as error:
            raise InvalidInput(f"{FILE_FIELD}: {error}") from None
        for row in features.quarantine.rows:
            problems[int(row["id"])] = f"file {files[int(row['id'])][0]!r}: {row['reason']}"
    if len(problems) == len(files):
        raise InvalidInput("; ".join(problems[index] for index in sorted(problems)))
    cols = Columns(features.table)
    arrays: dict[str, np.ndarray] = {}
    for name, field in inputs.fields.items():
        if cols.has(name):
            arrays[name] = cols.vectors(name, field.length) if field.length is not None else cols.scalar(name)
    batch = inputs.decode_arrays(arrays, [ids[int(index)] for index in cols.strings("id")], ranged=False)
    batch.reports_problems, batch.left_out, batch.requested_ids = True, problems, ids
    return batch


def with_usable_pixels(batch: Batch) -> Batch:
    """A batch of spectra on the grid without those that have fewer usable pixels (finite flux, `mask` 0, `ivar`
    not <= 0: `features.masked_vectors`, as every model reads them) than `MIN_VALID_FRACTION` of the grid, which
    preprocessing would have set aside: they are `left_out` with the reason (a fully masked spectrum was answered
    as if average)."""
    flux = batch.arrays.get("flux")
    if flux is None or batch.reports_problems:
        return batch
    length = flux.shape[1]
    _, bad, _ = masked_vectors(Columns(batch.arrays), "flux", length, "mask", "ivar")
    usable = length - bad.sum(axis=1)
    poor = usable < MIN_VALID_FRACTION * length
    if not poor.any():
        return batch
    left_out = {int(row): f"only {usable[row]} of {length} pixels usable (finite flux, mask 0, ivar > 0); a spectrum "
                          f"needs {MIN_VALID_FRACTION:.0%} of the grid, as in training"
                for row in np.flatnonzero(poor)}
    ids = batch.ids or [None] * batch.n
    return Batch({name: values[~poor] for name, values in batch.arrays.items()}, int((~poor).sum()),
                 [ids[row] for row in np.flatnonzero(~poor)], reports_problems=True, left_out=left_out,
                 requested_ids=ids)
