"""Spectrum FITS files uploaded to `POST /v1/spectral:predict` -> a validated `Batch` of the model's inputs.

Each file is read by the connectors' own reader (SDSS-I/II and BOSS `spec-*.fits`, LAMOST, 1-D library
spectra), then preprocessed exactly as the model's training data was (`preprocess_as_trained` with the model's
input spec). A file that cannot be read, or that preprocessing rejects, is an `InvalidInput` naming the file and
the reason; nothing here is called on the event loop (it is CPU work).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from steps.ingest.spectra_files import UnusableSpectrum, read_spectrum, spectra_tables
from steps.models.inputs import Columns
from steps.preprocess.as_trained import SpecMismatch, preprocess_as_trained
from steps.preprocess.common import RawArtifact
from steps.serve.payloads import Batch, InputSpec, InvalidInput

FITS_MEDIA_TYPE = "multipart/form-data"
FILE_FIELD = "file"


def decode_spectra_files(files: list[tuple[str, bytes]], inputs: InputSpec, model_spec: dict) -> Batch:
    """The uploaded spectra (file name, bytes) as model inputs; ids are the spectra's own (e.g. plate-MJD-fiber)."""
    if not files:
        raise InvalidInput(f"{FILE_FIELD}: no file uploaded (send one or more spec-*.fits as form field "
                           f"{FILE_FIELD!r})")
    spectra, names = [], {}
    for name, data in files:
        if not data:
            raise InvalidInput(f"file {name!r}: empty")
        try:
            spectrum = read_spectrum(data, name)
        except UnusableSpectrum as error:
            raise InvalidInput(f"file {name!r}: {error}") from None
        except Exception as error:  # any other failure to parse untrusted bytes is still a malformed file
            raise InvalidInput(f"file {name!r}: not a readable spectrum FITS file ({type(error).__name__})") from None
        spectra.append(spectrum)
        names[spectrum.id] = name
    data, _ = spectra_tables(spectra)
    try:
        features = preprocess_as_trained("spectra", RawArtifact(Path("upload"), data, None, False), model_spec)
    except SpecMismatch as error:
        raise InvalidInput(f"{FILE_FIELD}: {error}") from None
    for row in features.quarantine.rows:
        raise InvalidInput(f"file {names.get(row['id'], row['id'])!r}: {row['reason']}")
    cols = Columns(features.table)
    arrays: dict[str, np.ndarray] = {}
    for name, field in inputs.fields.items():
        if not cols.has(name):
            continue
        arrays[name] = cols.vectors(name, field.length) if field.length is not None else cols.scalar(name)
    return inputs.decode_arrays(arrays, cols.strings("id").tolist())
