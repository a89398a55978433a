"""Synthetic SDSS-like stellar spectra: the rest-frame model of `stellar_spectrum`, Doppler shifted, observed on
the SDSS log-wavelength grid with photon and sky noise, and flagged the way the SDSS pipeline flags pixels."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from steps.ingest.schemas import SDSS_PIXEL_BITS, SPECTRA_SCHEMA, STELLAR_LABELS_SCHEMA
from steps.ingest.synthetic.objects import SOURCE, draw_star, object_id, object_rng
from steps.ingest.synthetic.stellar_spectrum import SDSS_RESOLUTION, rest_frame_spectrum
from steps.ingest.tables import list_column

SPEED_OF_LIGHT_KMS = 299792.458
# SDSS-I/II coadd grid: log10(lambda/A) from 3.5800 in steps of 1e-4 dex (69 km/s per pixel) up to 9200 A.
LOGLAM_START = 3.5800
LOGLAM_STEP = 1e-4
LOGLAM = np.round(LOGLAM_START + LOGLAM_STEP * np.arange(int((np.log10(9200.0) - LOGLAM_START) / LOGLAM_STEP) + 1), 4)
WAVE = 10**LOGLAM

# Night-sky emission (vacuum A) and peak brightness relative to the sky continuum: [O I] 5578, Na D, [O I]
# 6302/6365 and the strongest OH Meinel lines. The sky is subtracted from the flux but its photons add noise.
SKY_LINES = np.array([5578.9, 5891.6, 5897.6, 6302.0, 6365.5, 7318.3, 7342.9, 7371.3, 7823.8, 7916.4, 7966.7,
                      8346.8, 8401.7, 8432.4, 8467.3, 8505.1, 8829.7, 8888.7, 8922.2, 8960.2])
SKY_PEAKS = np.array([30.0, 6.0, 6.0, 12.0, 4.0, 6.0, 8.0, 6.0, 8.0, 10.0, 8.0, 12.0, 10.0, 10.0, 12.0, 10.0,
                      14.0, 16.0, 12.0, 14.0])
BRIGHT_SKY = 5.0               # sky-to-continuum ratio above which SDSS flags BRIGHTSKY

SNR_RANGE = (5.0, 80.0)        # median S/N per pixel, drawn log-uniformly
FLUX_RANGE = (5.0, 150.0)      # median flux density, 1e-17 erg/s/cm^2/A, drawn log-uniformly
RV_SIGMA_KMS = 60.0            # radial velocity dispersion of disk stars; clipped at 300 km/s


def _sky(rng: np.random.Generator, continuum_level: float) -> np.ndarray:
    """Sky brightness on the observed grid: a continuum plus emission lines at the instrumental resolution."""
    level = continuum_level * rng.uniform(0.2, 1.0)
    sigma = SKY_LINES / SDSS_RESOLUTION / 2.3548
    lines = (SKY_PEAKS * rng.uniform(0.7, 1.3, SKY_LINES.size)) * np.exp(
        -0.5 * ((WAVE[:, None] - SKY_LINES[None, :]) / sigma) ** 2)
    return level * (1 + lines.sum(axis=1))


def _bad_pixels(rng: np.random.Generator, flux: np.ndarray, ivar: np.ndarray, and_mask: np.ndarray) -> None:
    """Add the defects of real coadds in place: cosmic-ray residuals rejected in the combine (ivar 0, a spike
    in flux) with their flagged neighbours, and sometimes a red end with no data."""
    for _ in range(rng.poisson(1.5)):
        start = rng.integers(1, WAVE.size - 6)
        stop = start + rng.integers(1, 5)
        flux[start:stop] += rng.uniform(5, 50) * np.abs(np.median(flux))
        ivar[start:stop] = 0.0
        and_mask[start:stop] |= 1 << SDSS_PIXEL_BITS["COMBINEREJ"]
        and_mask[[start - 1, stop]] |= 1 << SDSS_PIXEL_BITS["NEARBADPIXEL"]
    if rng.random() < 0.1:
        missing = rng.integers(20, 150)
        flux[-missing:] = 0.0
        ivar[-missing:] = 0.0
        and_mask[-missing:] |= 1 << SDSS_PIXEL_BITS["NODATA"]


def synthetic_spectrum(seed: int, index: int) -> tuple[dict, dict]:
    """One observed spectrum and its labels: (spectra row, labels row)."""
    rng = object_rng(seed, "spectra", index)
    star = draw_star(rng)
    velocity = float(np.clip(rng.normal(0.0, RV_SIGMA_KMS), -300.0, 300.0))
    z = velocity / SPEED_OF_LIGHT_KMS
    model = rest_frame_spectrum(WAVE / (1 + z), star)
    model *= 10 ** rng.uniform(*np.log10(FLUX_RANGE)) / np.median(model)

    sky = _sky(rng, float(np.median(model)))
    snr = 10 ** rng.uniform(*np.log10(SNR_RANGE))
    # Photon noise of star plus sky, scaled so the median S/N per pixel is `snr`.
    gain = (np.median(model / np.sqrt(model + sky)) / snr) ** 2
    variance = gain * (model + sky)
    flux = model + rng.normal(0.0, 1.0, WAVE.size) * np.sqrt(variance)
    ivar = 1.0 / variance
    and_mask = np.where(sky > BRIGHT_SKY * sky.min(), 1 << SDSS_PIXEL_BITS["BRIGHTSKY"], 0).astype(np.int32)
    _bad_pixels(rng, flux, ivar, and_mask)

    spectrum_id = object_id("spectra", index)
    row = {"id": spectrum_id, "loglam": LOGLAM, "flux": flux.astype(np.float32), "ivar": ivar.astype(np.float32),
           "and_mask": and_mask, "z": z, "source": SOURCE}
    labels = {"id": spectrum_id, "teff": star.teff, "logg": star.logg, "feh": star.feh}
    return row, labels


def generate(samples: int, seed: int) -> dict[str, pa.Table]:
    """`samples` synthetic spectra: the `spectra` and `labels` tables of a raw artifact."""
    rows, labels = zip(*(synthetic_spectrum(seed, index) for index in range(samples))) if samples else ((), ())
    columns = {
        "id": pa.array([row["id"] for row in rows], pa.string()),
        "loglam": list_column([row["loglam"] for row in rows], pa.float64()),
        "flux": list_column([row["flux"] for row in rows], pa.float32()),
        "ivar": list_column([row["ivar"] for row in rows], pa.float32()),
        "and_mask": list_column([row["and_mask"] for row in rows], pa.int32()),
        "z": pa.array([row["z"] for row in rows], pa.float64()),
        "source": pa.array([row["source"] for row in rows], pa.string()),
    }
    return {"spectra": pa.table(columns, schema=SPECTRA_SCHEMA),
            "labels": pa.Table.from_pylist(list(labels), schema=STELLAR_LABELS_SCHEMA)}
