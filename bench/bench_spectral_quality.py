"""Spectral model quality on a labelled library, over several held-out splits: the figure a weekly run measures.

    .venv/bin/python bench/bench_spectral_quality.py [--library ../shared/data/miles] [--seeds 42 1 2 3 4]

For each split seed the library goes through the pipeline's own stages (ingest, preprocess, split with 20% test
and 10% validation, train), and both the Keras model and the NumPy baseline are measured on the FGK stars
(4000-7000 K by the library's label) of the test split: robust sigma (1.4826 MAD) of Teff, log g and [Fe/H], and
the share of test stars inside the predicted 68% and 95% intervals. One seed's 70-odd test stars scatter a robust sigma
by ~10%; the median over seeds says more. Each split also counts the test stars the domain check
(`steps.models.domain`) puts outside the training domain: FGK stars, and stars whose label lies outside the
Teff range the model trains on (its `teff_range`); and, for the test stars outside 4000-7000 K (M stars and K
giants below it, F, A, B and O stars above it), the median relative error of the predicted Teff.

The library's labels are themselves measurements. With `--reference` (by default the Gaia FGK benchmark stars of
`../shared/data/gaia/benchmark_stars`, whose Teff comes from angular diameters and log g from masses and radii),
the stars the library shares with the reference (by HD number) are also measured against the reference's values:
the Keras model's held-out prediction of each (from the first split where it was a test star), and the library's
own labels. Where the model is nearer the reference than the library's labels are, its scatter against test labels is
the labels' as much as its own.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from astropy.table import Table  # noqa: E402

from steps.ingest.__main__ import ingest  # noqa: E402
from steps.models import load_model  # noqa: E402
from steps.models.domain import outside  # noqa: E402
from steps.core.statistics import robust_sigma  # noqa: E402
from steps.preprocess.__main__ import main as preprocess  # noqa: E402
from steps.preprocess.spectra import DEFAULT_LENGTH  # noqa: E402
from steps.split.__main__ import split_features  # noqa: E402
from steps.train import train_from_split  # noqa: E402

LABELS = ("teff", "logg", "feh")
FGK = (4000.0, 7000.0)
GIANT_LOGG = 3.5  # below: a giant, for the reference comparison's split
SHARED = Path(__file__).resolve().parents[2] / "shared/data"
GAIA_BENCHMARK_STARS = "gaia/benchmark_stars/gbs_v3_tmass_gaiadr3_hip_allwise_all_lite.fits"


def hd_number(name: object) -> int | None:
    """The HD catalogue number in a star name ('HD012345', 'HD 12345', b'HD12345'), or None."""
    text = (name.decode() if isinstance(name, bytes) else str(name)).replace(" ", "").upper()
    return int(text[2:]) if text.startswith("HD") and text[2:].isdigit() else None


def reference_labels(library: Path, reference: Path) -> pd.DataFrame:
    """Library stars (index: the library's id) with their own labels and the reference's (`ref_` columns), matched
    by HD number; a library without a `labels.csv` naming its stars matches none."""
    if not (library / "labels.csv").is_file():
        return pd.DataFrame()
    mine = pd.read_csv(library / "labels.csv")
    mine["hd"] = [hd_number(name) for name in mine["name"]]
    theirs = Table.read(reference).to_pandas()
    theirs = pd.DataFrame({"hd": [hd_number(name) for name in theirs["hd"]], "ref_teff": theirs["teff"],
                           "ref_logg": theirs["logg"], "ref_feh": theirs["fe_h"]})
    both = mine.dropna(subset=["hd"]).merge(theirs.dropna(subset=["hd"]), on="hd")
    return both.set_index(both.columns[0])[[*LABELS, *(f"ref_{label}" for label in LABELS)]]


def measure(model_dir: Path, test_path: Path, predictions: dict[str, list[np.ndarray]]) -> dict[str, float]:
    """Robust sigma and 68% coverage per label on the FGK stars of a test split; each test star's predicted labels
    are appended to `predictions` (by id)."""
    table = pq.read_table(test_path)
    teff = table.column("teff").to_numpy(zero_copy_only=False)
    fgk = (teff >= FGK[0]) & (teff <= FGK[1])
    model = load_model(model_dir)
    predicted = model.predict_table(table, blank_beyond_labels=False)  # as evaluation measures
    values = np.column_stack([np.asarray(predicted[label], float) for label in LABELS])
    for star, row in zip(table.column("id").to_pylist(), values):
        predictions.setdefault(star, []).append(row)
    flagged = outside(predicted["in_domain"])
    low, high = model.info["training"]["teff_range"]
    off_range = (teff < low) | (teff > high)
    others = np.isfinite(teff) & ~fgk
    teff_error = np.abs(np.asarray(predicted["teff"], float) / teff - 1.0)
    out: dict[str, float] = {"n": int(fgk.sum()), "fgk_outside": int(flagged[fgk].sum()),
                             "off_range": int(off_range.sum()), "off_range_outside": int(flagged[off_range].sum()),
                             "others": int(others.sum()), "others_teff_error": float(np.nanmedian(teff_error[others]))}
    for label in LABELS:
        truth = table.column(label).to_numpy(zero_copy_only=False).astype(float)[fgk]
        residual = np.asarray(predicted[label], float)[fgk] - truth
        sigma = np.asarray(predicted[f"{label}_err"], float)[fgk]
        known = np.isfinite(residual)
        out[label] = robust_sigma(residual)
        out[f"{label}_cov68"] = float(np.mean(np.abs(residual[known]) <= sigma[known]))
        out[f"{label}_cov95"] = float(np.mean(np.abs(residual[known]) <= 1.96 * sigma[known]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", default=str(SHARED / "miles"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2, 3, 4])
    parser.add_argument("--length", type=int, default=DEFAULT_LENGTH, help="pixels of the common wavelength grid")
    parser.add_argument("--reference", default=str(SHARED / GAIA_BENCHMARK_STARS),
                        help="a FITS table with hd, teff, logg, fe_h columns; 'none' to skip")
    args = parser.parse_args()
    if args.reference != "none" and not Path(args.reference).is_file():
        raise SystemExit(f"--reference {args.reference}: no such file ('none' skips the comparison)")
    rows = []
    predictions: dict[str, dict[str, list[np.ndarray]]] = {"keras": {}, "baseline": {}}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        ingest("spectra", args.library, 0, 0, root / "raw")
        if preprocess(["spectra", "--in", str(root / "raw"), "--out", str(root / "features"),
                       "--length", str(args.length)]) != 0:
            raise SystemExit("preprocessing failed")
        for seed in args.seeds:
            split = root / f"split-{seed}"
            split_features({"spectra": root / "features"}, split, seed, 0.2, 0.1)
            for trainer in ("keras", "baseline"):
                started = time.perf_counter()
                model = train_from_split("spectral", split, root / f"{trainer}-{seed}", trainer=trainer, seed=0)
                seconds = time.perf_counter() - started
                rows.append({"seed": seed, "trainer": trainer, "seconds": seconds,
                             **measure(model, split / "spectra" / "test.parquet", predictions[trainer])})
                r = rows[-1]
                print(f"seed {seed:3d} {trainer:8s} n={r['n']:3d}  Teff {r['teff']:6.1f} K  log g {r['logg']:.3f}  "
                      f"[Fe/H] {r['feh']:.3f}  (68% coverage {r['teff_cov68']:.2f}/{r['logg_cov68']:.2f}/"
                      f"{r['feh_cov68']:.2f}, 95% {r['teff_cov95']:.2f}/{r['logg_cov95']:.2f}/{r['feh_cov95']:.2f})"
                      f"  outside the domain: FGK {r['fgk_outside']}, off-range "
                      f"{r['off_range_outside']}/{r['off_range']}  other stars: median |Teff error| "
                      f"{r['others_teff_error']:.1%} (n={r['others']})  trained in {seconds:.0f} s", flush=True)
    print(f"\nmedian over {len(args.seeds)} splits, FGK test stars of {args.library}")
    for trainer in ("keras", "baseline"):
        mine = [r for r in rows if r["trainer"] == trainer]
        print(f"{trainer:8s} Teff {np.median([r['teff'] for r in mine]):6.1f} K  "
              f"log g {np.median([r['logg'] for r in mine]):.3f}  [Fe/H] {np.median([r['feh'] for r in mine]):.3f}  "
              "coverage 68% " + "/".join(f"{np.median([r[f'{x}_cov68'] for r in mine]):.2f}" for x in LABELS) +
              ", 95% " + "/".join(f"{np.median([r[f'{x}_cov95'] for r in mine]):.2f}" for x in LABELS) + "  "
              f"outside the domain: FGK {sum(r['fgk_outside'] for r in mine)}/{sum(r['n'] for r in mine)}, "
              f"off-range {sum(r['off_range_outside'] for r in mine)}/{sum(r['off_range'] for r in mine)}, "
              f"other stars' median |Teff error| {np.median([r['others_teff_error'] for r in mine]):.1%}")

    if args.reference != "none":
        compare_with_reference(reference_labels(Path(args.library), Path(args.reference)), predictions)


def compare_with_reference(stars: pd.DataFrame, predictions: dict[str, dict[str, list[np.ndarray]]]) -> None:
    """Robust sigma against the reference's labels, for the library's labels and for each trainer's prediction (from
    the first split where the star was a test star: one model's, as a user gets), on the shared FGK stars that were
    test stars."""
    tested = [star for star in stars.index if star in predictions["keras"]]
    if not tested:
        print("\nno test star of the library is in the reference")
        return
    stars = stars.loc[tested]
    fgk = ((stars["ref_teff"] >= FGK[0]) & (stars["ref_teff"] <= FGK[1])).to_numpy()
    reference = stars[[f"ref_{label}" for label in LABELS]].to_numpy(float)
    print(f"\nagainst the reference, {fgk.sum()} FGK stars of the library that were test stars at least once")
    estimates = {"library label": stars[list(LABELS)].to_numpy(float),
                 **{trainer: np.array([predictions[trainer][star][0] for star in tested])
                    for trainer in ("keras", "baseline")}}
    for group, members in (("all", fgk), ("dwarfs", fgk & (stars["ref_logg"] >= GIANT_LOGG).to_numpy()),
                           ("giants", fgk & (stars["ref_logg"] < GIANT_LOGG).to_numpy())):
        for what, values in estimates.items():
            sigma = [robust_sigma(values[members, i] - reference[members, i]) for i in range(len(LABELS))]
            print(f"{group:6s} n={members.sum():2d} {what:13s} Teff {sigma[0]:6.1f} K  log g {sigma[1]:.3f}  "
                  f"[Fe/H] {sigma[2]:.3f}")


if __name__ == "__main__":
    main()
