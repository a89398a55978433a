"""Fit the synthetic photometry's colour corrections on the Gaia FGK benchmark stars.

    .venv/bin/python bench/calibrate_synthetic_colours.py [--catalogue ../shared/data/gaia/benchmark_stars/...fits]

The synthetic source integrates a model spectrum through box passbands, and its colours come out bluer than real
stars' (a 5,772 K dwarf at BP-RP 0.62; the Sun's is 0.82). For each band X but G, the difference between a
benchmark star's observed X - G and the synthetic X - G of a star of its reference Teff, log g and [Fe/H] is fitted
as b * (5040/Teff - 5040/9550): zero at Vega's Teff, where every colour is zero by the definition of the magnitude
scale. The stars are nearby (reddening neglected). 2MASS and AllWISE magnitudes count only with quality flag A and
fainter than their saturation (J, H, Ks > 3; W1, W2 > 4.5); fits clip at 4 robust sigma. It prints each band's
slope, the scatter about the fit and the stars it used: the slopes are `COLOUR_SLOPES` in
`steps/ingest/synthetic/photometry.py`, and the last column checks them (the median residual of the calibrated
colours).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from astropy.table import Table  # noqa: E402

from steps.ingest.schemas import PHOTOMETRIC_BANDS  # noqa: E402
from steps.ingest.synthetic.objects import Star  # noqa: E402
from steps.ingest.synthetic.photometry import VEGA, absolute_magnitudes, model_magnitudes  # noqa: E402
from steps.core.statistics import robust_sigma  # noqa: E402

CATALOGUE = (Path(__file__).resolve().parents[2] / "shared/data/gaia/benchmark_stars"
             / "gbs_v3_tmass_gaiadr3_hip_allwise_all_lite.fits")
COLUMNS = {"G": "phot_g_mean_mag", "BP": "phot_bp_mean_mag", "RP": "phot_rp_mean_mag", "J": "j_m", "H": "h_m",
           "Ks": "ks_m", "W1": "w1mpro", "W2": "w2mpro"}
QUALITY = {"J": ("ph_qual_tmass", 0), "H": ("ph_qual_tmass", 1), "Ks": ("ph_qual_tmass", 2),
           "W1": ("ph_qual_allwise", 0), "W2": ("ph_qual_allwise", 1)}
SATURATION = {"J": 3.0, "H": 3.0, "Ks": 3.0, "W1": 4.5, "W2": 4.5}  # brighter than this: not used
FEWEST_STARS = 5


def usable(table: Table, band: str) -> np.ndarray:
    """Stars whose `band` magnitude can calibrate: quality A and fainter than saturation (2MASS, AllWISE)."""
    mags = np.array(table[COLUMNS[band]], float)
    ok = np.ones(len(mags), bool)
    if band in QUALITY:
        column, position = QUALITY[band]
        ok &= np.array([len(str(q)) > position and str(q)[position] == "A" for q in table[column]])
        ok &= mags > SATURATION[band]
    return ok


def fit_slope(x: np.ndarray, offset: np.ndarray, ok: np.ndarray) -> tuple[float, float, np.ndarray]:
    """b of offset = b * x through the origin, clipped at 4 robust sigma: (b, scatter, stars kept)."""
    keep = ok.copy()
    for _ in range(5):
        slope = float(np.sum(x[keep] * offset[keep]) / np.sum(x[keep] ** 2))
        residual = offset - slope * x
        scatter = robust_sigma(residual[keep])
        keep = ok & (np.abs(residual) < 4 * scatter)
    return slope, scatter, keep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogue", default=str(CATALOGUE))
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the table's units that FITS does not know (dex, electron/s)
        table = Table.read(args.catalogue)
    teff, logg = np.array(table["teff"], float), np.array(table["logg"], float)
    feh = np.nan_to_num(np.array(table["fe_h"], float))
    stars = [Star(teff=t, logg=g, feh=z, mass=1.0) for t, g, z in zip(teff, logg, feh)]
    raw = dict(zip(PHOTOMETRIC_BANDS, np.array([model_magnitudes(s) for s in stars]).T))
    calibrated = dict(zip(PHOTOMETRIC_BANDS, np.array([absolute_magnitudes(s) for s in stars]).T))
    observed = {band: np.array(table[column], float) for band, column in COLUMNS.items()}
    x = 5040.0 / teff - 5040.0 / VEGA.teff
    print(f"{len(table)} stars, Teff {teff.min():.0f}-{teff.max():.0f} K")
    print("band  stars  kept  slope b   scatter  Teff of the stars  calibrated: median residual")
    for band in PHOTOMETRIC_BANDS[1:]:
        colour = observed[band] - observed["G"]
        offset = colour - (raw[band] - raw["G"])
        ok = usable(table, band) & np.isfinite(offset)
        if ok.sum() < FEWEST_STARS:
            print(f"{band:4s} {ok.sum():6d}  too few to fit")
            continue
        slope, scatter, keep = fit_slope(x, offset, ok)
        after = colour - (calibrated[band] - calibrated["G"])
        print(f"{band:4s} {ok.sum():6d} {keep.sum():5d}  {slope:+.4f}  {scatter:7.3f}  {teff[ok].min():.0f}-"
              f"{teff[ok].max():.0f} K      {np.median(after[keep]):+.3f}")


if __name__ == "__main__":
    main()
