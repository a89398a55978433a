"""The sources ingest can read, by name, and what every source returns.

A source turns (modality, sample size, seed) into the raw tables of `steps.ingest.schemas`. Archive connectors
register here beside the synthetic source; the command line offers exactly the names registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from steps.ingest import synthetic
from steps.ingest.schemas import DATA_SCHEMAS, LABEL_SCHEMAS


@dataclass(frozen=True)
class Source:
    """A named source: `read(modality, samples, seed)` gives the modality's data table and its labels table."""

    name: str
    read: Callable[[str, int, int], dict[str, pa.Table]]
    synthetic: bool
    modalities: tuple[str, ...]


SOURCES = {source.name: source for source in (
    Source("synthetic", synthetic.generate, synthetic=True, modalities=tuple(synthetic.GENERATORS)),
)}


class UnknownSource(ValueError):
    """A source name that no connector is registered under, or one that lacks the modality asked for."""


def get_source(name: str, modality: str) -> Source:
    """The source registered as `name`, checked to provide `modality`."""
    if name not in SOURCES:
        raise UnknownSource(f"unknown source {name!r}; known sources: {', '.join(sorted(SOURCES))}")
    source = SOURCES[name]
    if modality not in source.modalities:
        raise UnknownSource(f"source {name!r} provides no {modality} (only {', '.join(source.modalities)})")
    return source


def read(name: str, modality: str, samples: int, seed: int) -> dict[str, pa.Table]:
    """Read `samples` objects of `modality` from source `name`, checked against the raw schemas."""
    tables = get_source(name, modality).read(modality, samples, seed)
    expected = {modality: DATA_SCHEMAS[modality], "labels": LABEL_SCHEMAS[modality]}
    for table_name, schema in expected.items():
        if not tables[table_name].schema.equals(schema):
            raise TypeError(f"source {name!r} wrote {modality} table {table_name!r} with schema "
                            f"{tables[table_name].schema}, not the raw schema {schema}")
    return tables
