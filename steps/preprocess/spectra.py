"""Spectra to model inputs: rest frame, one common log-wavelength grid, a mask, and continuum normalisation.

For each spectrum:
1. pixels are bad where SDSS flags them unusable (`BAD_PIXEL_BITS`), where ivar is 0 or flux is not finite;
2. wavelengths are moved to the rest frame by the redshift, and the good pixels are resampled flux-conservingly
   onto the common grid: each output pixel is the overlap-weighted mean of the good input pixels it covers, and
   its variance is propagated from theirs (sum of w^2 sigma^2 / (sum of w)^2); output pixels less than half
   covered by good input are masked;
3. the continuum is a low-order Chebyshev polynomial in log-lambda fitted with asymmetric clipping (absorption
   lines and spikes are rejected iteratively), and flux and ivar are divided by it (ivar times its square).
Masked pixels end with flux 1 and ivar 0. Spectra with too few usable pixels are quarantined with the reason.
The (1+z) change of flux density into the rest frame is left out: continuum normalisation removes any constant.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from numpy.polynomial import chebyshev

from steps.core.quarantine import Quarantine
from steps.ingest.schemas import SDSS_PIXEL_BITS, STELLAR_LABELS_SCHEMA
from steps.ingest.tables import column_arrays, list_column
from steps.preprocess.common import Features, RawArtifact, label_columns

WAVE_MIN, WAVE_MAX = 3900.0, 9000.0     # Angstrom, rest frame vacuum: covered by SDSS for |v| << c
DEFAULT_LENGTH = 1024
# Bits that make a pixel unusable: the fibre or its calibration failed, or the pixel was rejected or has no
# data. Informational bits (NEARBADPIXEL, BRIGHTSKY, PARTIALREJECT, ...) only inflate the noise, which ivar has.
BAD_PIXEL_BITS = sum(1 << SDSS_PIXEL_BITS[name] for name in (
    "NOPLUG", "BADTRACE", "BADFLAT", "BADARC", "MANYBADCOLUMNS", "MANYREJECTED", "LARGESHIFT", "BADSKYFIBER",
    "FULLREJECT", "NODATA", "COMBINEREJ", "BADFLUXFACTOR", "BADSKYCHI"))
MIN_COVERAGE = 0.5          # fraction of an output pixel that good input must cover for it to be kept
MIN_VALID_FRACTION = 0.5    # fraction of output pixels that must be kept for the spectrum to be used
CONTINUUM_DEGREE = 5
CLIP_LOW, CLIP_HIGH = 2.0, 3.0   # sigma: below rejects absorption, above rejects spikes
CLIP_ITERATIONS = 5
LABELS = ("teff", "logg", "feh")


def output_grid(length: int) -> tuple[float, float, np.ndarray]:
    """(loglam of the first pixel centre, step in dex, the `length + 1` pixel edges in log10 Angstrom)."""
    low, high = np.log10(WAVE_MIN), np.log10(WAVE_MAX)
    step = (high - low) / length
    return low + step / 2, step, low + step * np.arange(length + 1)


def _pixel_edges(loglam: np.ndarray) -> np.ndarray:
    """Edges (log10 Angstrom) of pixels centred at `loglam`: midpoints, the ends extended by half a pixel."""
    middle = 0.5 * (loglam[1:] + loglam[:-1])
    return np.concatenate([[2 * loglam[0] - middle[0]], middle, [2 * loglam[-1] - middle[-1]]])


def resample(wave_edges: np.ndarray, flux: np.ndarray, variance: np.ndarray, good: np.ndarray,
             out_edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flux-conserving resampling of good pixels onto `out_edges` (all edges in Angstrom, increasing).

    Returns (flux, variance, coverage): the overlap-weighted mean flux of each output pixel, its propagated
    variance, and the fraction of the output pixel covered by good input (0 where none; flux and variance NaN).
    """
    low, high = wave_edges[:-1], wave_edges[1:]
    first = np.searchsorted(out_edges, low, side="right") - 1
    last = np.searchsorted(out_edges, high, side="left") - 1
    length = out_edges.size - 1
    weight_sum = np.zeros(length)
    flux_sum = np.zeros(length)
    variance_sum = np.zeros(length)
    for step in range(int(np.max(last - first, initial=0)) + 1):
        target = first + step
        inside = good & (target <= last) & (target >= 0) & (target < length)
        target = target[inside]
        overlap = (np.minimum(high[inside], out_edges[target + 1]) - np.maximum(low[inside], out_edges[target]))
        overlap = np.clip(overlap, 0.0, None)
        weight_sum += np.bincount(target, overlap, length)
        flux_sum += np.bincount(target, overlap * flux[inside], length)
        variance_sum += np.bincount(target, overlap**2 * variance[inside], length)
    with np.errstate(invalid="ignore", divide="ignore"):
        return flux_sum / weight_sum, variance_sum / weight_sum**2, weight_sum / np.diff(out_edges)


def fit_continuum(flux: np.ndarray, valid: np.ndarray, loglam: np.ndarray) -> np.ndarray:
    """Continuum of each row of `flux` (spectra x pixels) on the common grid `loglam`, ignoring invalid pixels.

    Fits all spectra at once (batched normal equations), rejecting pixels more than CLIP_LOW sigma below or
    CLIP_HIGH sigma above the fit on each iteration, sigma being the MAD-based scatter of the kept pixels.
    """
    x = np.interp(loglam, [loglam[0], loglam[-1]], [-1.0, 1.0])
    basis = chebyshev.chebvander(x, CONTINUUM_DEGREE)                # pixels x terms
    data = np.where(valid, flux, 0.0)
    keep = valid.copy()
    for _ in range(CLIP_ITERATIONS):
        weights = keep.astype(np.float64)
        normal = np.einsum("pi,np,pj->nij", basis, weights, basis)
        normal += 1e-9 * np.eye(basis.shape[1])                     # keeps a row with no kept pixel solvable
        coefficients = np.linalg.solve(normal, np.einsum("pi,np->ni", basis, weights * data)[..., None])[..., 0]
        continuum = coefficients @ basis.T
        residual = np.where(keep, data - continuum, np.nan)
        sigma = 1.4826 * np.nanmedian(np.abs(residual - np.nanmedian(residual, axis=1, keepdims=True)), axis=1,
                                      keepdims=True)
        keep = valid & (data - continuum > -CLIP_LOW * sigma) & (data - continuum < CLIP_HIGH * sigma)
    return continuum


def _bad_reason(loglam: np.ndarray, flux: np.ndarray, ivar: np.ndarray, and_mask: np.ndarray, z: float) -> str | None:
    """Why a raw spectrum cannot be used at all, or None."""
    if not (loglam.size == flux.size == ivar.size == and_mask.size) or flux.size < 2:
        return f"malformed: loglam/flux/ivar/and_mask lengths {loglam.size}/{flux.size}/{ivar.size}/{and_mask.size}"
    if not np.isfinite(flux).any():
        return "no finite flux"
    if not (ivar > 0).any():
        return "no pixel with positive ivar"
    if not np.isfinite(z) or z <= -1:
        return f"unusable redshift {z}"
    return None


def preprocess_spectra(raw: RawArtifact, length: int = DEFAULT_LENGTH) -> Features:
    """Rest-frame, resampled, masked, continuum-normalised spectra with their labels; bad ones quarantined."""
    data = raw.data
    ids = data.column("id").to_pylist()
    sources = data.column("source").to_pylist()
    redshifts = data.column("z").to_numpy(zero_copy_only=False)
    columns = zip(column_arrays(data.column("loglam"), np.float64), column_arrays(data.column("flux"), np.float64),
                  column_arrays(data.column("ivar"), np.float64), column_arrays(data.column("and_mask"), np.int64))
    loglam_start, loglam_step, out_edges = output_grid(length)
    out_wave_edges = 10**out_edges
    quarantine = Quarantine("preprocess.spectra")
    kept, fluxes, variances = [], [], []
    for row, (loglam, flux, ivar, and_mask) in enumerate(columns):
        reason = _bad_reason(loglam, flux, ivar, and_mask, redshifts[row])
        if reason is None:
            good = ((and_mask & BAD_PIXEL_BITS) == 0) & (ivar > 0) & np.isfinite(flux) & np.isfinite(ivar)
            with np.errstate(divide="ignore"):
                variance = np.where(good, 1.0 / ivar, np.inf)
            rest_edges = 10 ** _pixel_edges(loglam) / (1 + redshifts[row])
            out_flux, out_variance, coverage = resample(rest_edges, flux, variance, good, out_wave_edges)
            usable = coverage >= MIN_COVERAGE
            if usable.mean() < MIN_VALID_FRACTION:
                reason = f"only {usable.sum()} of {length} pixels usable after masking and resampling"
        if reason is not None:
            quarantine.add(ids[row], reason, sources[row])
            continue
        kept.append(row)
        fluxes.append(np.where(usable, out_flux, np.nan))
        variances.append(np.where(usable, out_variance, np.nan))

    flux = np.array(fluxes).reshape(len(kept), length)
    variance = np.array(variances).reshape(len(kept), length)
    loglam_grid = loglam_start + loglam_step * np.arange(length)
    valid = np.isfinite(flux) & (variance > 0)
    continuum = fit_continuum(flux, valid, loglam_grid) if kept else np.empty((0, length))
    valid &= continuum > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        normalised = np.where(valid, flux / continuum, 1.0)
        ivar = np.where(valid, continuum**2 / variance, 0.0)
        snr = np.nanmedian(np.where(valid, normalised * np.sqrt(ivar), np.nan), axis=1)

    kept_ids = [ids[row] for row in kept]
    table = pa.table({
        "id": pa.array(kept_ids, pa.string()),
        "flux": list_column(list(normalised), pa.float32()),
        "ivar": list_column(list(ivar), pa.float32()),
        "mask": list_column(list((~valid).astype(np.uint8)), pa.uint8()),
        "snr": pa.array(snr, pa.float64()),
        **label_columns(kept_ids, raw.labels, STELLAR_LABELS_SCHEMA),
    })
    spec = {
        "modality": "spectra",
        "grid": {"loglam_start": loglam_start, "loglam_step": loglam_step, "length": length,
                 "wavelength": "rest frame, vacuum, log10 Angstrom"},
        "inputs": {"flux": "continuum-normalised flux (1.0 where masked)", "ivar": "inverse variance of flux",
                   "mask": "1 = bad pixel"},
        "labels": list(LABELS),
        "normalisation": (f"continuum: Chebyshev polynomial of degree {CONTINUUM_DEGREE} in log-lambda, fitted with "
                          f"{CLIP_LOW:g}/{CLIP_HIGH:g}-sigma low/high clipping over {CLIP_ITERATIONS} iterations; "
                          "flux divided by it, ivar multiplied by its square"),
        "bad_pixel_bits": BAD_PIXEL_BITS,
    }
    return Features(table=table, spec=spec, quarantine=quarantine, objects_in=data.num_rows,
                    parameters={"modality": "spectra", "length": length})
