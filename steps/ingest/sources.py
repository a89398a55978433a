"""The sources ingest can read, and what every source returns.

A source value is either a registered name (`synthetic`, and the live archive connectors as they register) or
the location of a folder to replay (a local path, or `s3://bucket/prefix`), whose files are read in the
archives' own formats by the folder readers of the modality. Every source returns the raw tables of
`steps.ingest.schemas` plus a quarantine of the records it could not use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from steps.core.quarantine import Quarantine
from steps.ingest import (gaia_live, kepler_live, lightcurve_files, photometry_files, sdss_live, spectra_files,
                          synthetic)
from steps.ingest.schemas import DATA_SCHEMAS, LABEL_SCHEMAS


@dataclass(frozen=True)
class IngestRequest:
    """What to ingest: a modality, how many objects to draw or query (folders are read whole: 0), the seed of
    synthetic draws, the folder to replay (for folder sources) and the raw-archive cache URI (live archives)."""

    modality: str
    samples: int
    seed: int = 0
    location: str | None = None
    cache: str | None = None
    shown_as: str | None = None  # how logs name the location (`stellar predict` reads one file through a folder)


@dataclass
class Ingested:
    """A source's result: the modality's table, its labels (null where unknown), and what was set aside."""

    data: pa.Table
    labels: pa.Table
    quarantine: Quarantine = field(default_factory=lambda: Quarantine("ingest"))


@dataclass(frozen=True)
class Source:
    """A named source and the modalities it provides."""

    name: str
    read: Callable[[IngestRequest], Ingested]
    synthetic: bool
    modalities: tuple[str, ...]


def _synthetic(request: IngestRequest) -> Ingested:
    tables = synthetic.generate(request.modality, request.samples, request.seed)
    return Ingested(tables[request.modality], tables["labels"])


SOURCES = {source.name: source for source in (
    Source("synthetic", _synthetic, synthetic=True, modalities=tuple(synthetic.GENERATORS)),
    Source("sdss", sdss_live.read_sdss, synthetic=False, modalities=("spectra",)),
    Source("gaia", gaia_live.read_gaia, synthetic=False, modalities=("photometry",)),
    Source("kepler", kepler_live.read_kepler, synthetic=False, modalities=("lightcurves",)),
)}

# Folder readers by modality: each takes the request (its `location` set) and recognises the formats inside.
FOLDER_READERS: dict[str, Callable[[IngestRequest], Ingested]] = {
    "spectra": spectra_files.read_spectra_folder,
    "photometry": photometry_files.read_photometry_folder,
    "lightcurves": lightcurve_files.read_lightcurve_folder,
}


class UnknownSource(ValueError):
    """A source that is neither a registered name nor a readable folder, or lacks the modality asked for."""


def is_location(value: str) -> bool:
    """True when a source value names a folder (local path or s3:// prefix) rather than a registered source."""
    return value.startswith("s3://") or value.startswith("/") or value.startswith(".") or Path(value).is_dir()


def resolve(value: str, modality: str) -> Source:
    """The source a `--source` value means, checked to provide `modality`."""
    if value in SOURCES:
        source = SOURCES[value]
        if modality not in source.modalities:
            raise UnknownSource(f"source {value!r} provides no {modality} (only {', '.join(source.modalities)})")
        return source
    if is_location(value):
        if modality not in FOLDER_READERS:
            raise UnknownSource(f"no folder reader for {modality} yet; cannot replay {value!r}")
        if not value.startswith("s3://") and not Path(value).is_dir():
            raise UnknownSource(f"source folder {value!r} does not exist")
        return Source(f"folder:{value}", FOLDER_READERS[modality], synthetic=False, modalities=(modality,))
    raise UnknownSource(f"unknown source {value!r}: give one of {', '.join(sorted(SOURCES))}, or a folder to replay")


def read(value: str, request: IngestRequest) -> tuple[Source, Ingested]:
    """Read from the source `value`, checked against the raw schemas."""
    source = resolve(value, request.modality)
    if source.name.startswith("folder:"):  # a replayed folder is read whole: `samples` sizes draws and queries
        request = IngestRequest(request.modality, 0, request.seed, value, request.cache)
    ingested = source.read(request)
    expected = {"data": DATA_SCHEMAS[request.modality], "labels": LABEL_SCHEMAS[request.modality]}
    for table_name, schema in expected.items():
        table = getattr(ingested, table_name)
        if not table.schema.equals(schema):
            raise TypeError(f"source {source.name!r} wrote a {request.modality} {table_name} table with schema "
                            f"{table.schema}, not the raw schema {schema}")
    return source, ingested
