"""The synthetic source: stars built on physics, whose labels are known exactly.

It serves the embedded default and the scale benchmarks, and is always named `synthetic` in outputs (the
`source` column and the manifest's `synthetic` flag).
"""

from __future__ import annotations

import pyarrow as pa

from steps.ingest.synthetic import lightcurves, photometry, spectra

GENERATORS = {"spectra": spectra.generate, "photometry": photometry.generate, "lightcurves": lightcurves.generate}


def generate(modality: str, samples: int, seed: int) -> dict[str, pa.Table]:
    """`samples` objects of `modality` drawn with `seed`: the modality's table and its labels, by table name."""
    return GENERATORS[modality](samples, seed)
