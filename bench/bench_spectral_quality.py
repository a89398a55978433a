"""Spectral model quality on a labelled library, over several held-out splits: the figure a weekly run measures.

    .venv/bin/python bench/bench_spectral_quality.py [--library ../shared/data/miles] [--seeds 42 1 2 3 4]

For each split seed the library goes through the pipeline's own stages (ingest, preprocess, split with 20% test
and 10% validation, train), and both the Keras model and the NumPy baseline are measured on the FGK stars
(4000-7000 K by the library's label) of the test split: robust sigma (1.4826 MAD) of Teff, log g and [Fe/H], and
the share of test stars inside the predicted 68% interval. One seed's 70-odd test stars scatter a robust sigma
by ~10%; the median over seeds says more.
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
import pyarrow.parquet as pq  # noqa: E402

from steps.ingest.__main__ import ingest  # noqa: E402
from steps.models import load_model  # noqa: E402
from steps.models.metrics import MAD_TO_SIGMA  # noqa: E402
from steps.preprocess.__main__ import main as preprocess  # noqa: E402
from steps.split.__main__ import split_features  # noqa: E402
from steps.train import train_from_split  # noqa: E402

LABELS = ("teff", "logg", "feh")
FGK = (4000.0, 7000.0)


def robust_sigma(residuals: np.ndarray) -> float:
    residuals = residuals[np.isfinite(residuals)]
    return float(MAD_TO_SIGMA * np.median(np.abs(residuals - np.median(residuals))))


def measure(model_dir: Path, test_path: Path) -> dict[str, float]:
    """Robust sigma and 68% coverage per label on the FGK stars of a test split."""
    table = pq.read_table(test_path)
    teff = table.column("teff").to_numpy(zero_copy_only=False)
    fgk = (teff >= FGK[0]) & (teff <= FGK[1])
    predicted = load_model(model_dir).predict_table(table)
    out: dict[str, float] = {"n": int(fgk.sum())}
    for label in LABELS:
        truth = table.column(label).to_numpy(zero_copy_only=False).astype(float)[fgk]
        residual = np.asarray(predicted[label], float)[fgk] - truth
        sigma = np.asarray(predicted[f"{label}_err"], float)[fgk]
        known = np.isfinite(residual)
        out[label] = robust_sigma(residual)
        out[f"{label}_cov68"] = float(np.mean(np.abs(residual[known]) <= sigma[known]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", default=str(Path(__file__).resolve().parents[2] / "shared/data/miles"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2, 3, 4])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        ingest("spectra", args.library, 0, 0, root / "raw")
        if preprocess(["spectra", "--in", str(root / "raw"), "--out", str(root / "features")]) != 0:
            raise SystemExit("preprocessing failed")
        for seed in args.seeds:
            split = root / f"split-{seed}"
            split_features({"spectra": root / "features"}, split, seed, 0.2, 0.1)
            for trainer in ("keras", "baseline"):
                started = time.perf_counter()
                model = train_from_split("spectral", split, root / f"{trainer}-{seed}", trainer=trainer, seed=0)
                seconds = time.perf_counter() - started
                rows.append({"seed": seed, "trainer": trainer, "seconds": seconds,
                             **measure(model, split / "spectra" / "test.parquet")})
                r = rows[-1]
                print(f"seed {seed:3d} {trainer:8s} n={r['n']:3d}  Teff {r['teff']:6.1f} K  log g {r['logg']:.3f}  "
                      f"[Fe/H] {r['feh']:.3f}  (68% coverage {r['teff_cov68']:.2f}/{r['logg_cov68']:.2f}/"
                      f"{r['feh_cov68']:.2f})  trained in {seconds:.0f} s", flush=True)
    print(f"\nmedian over {len(args.seeds)} splits, FGK test stars of {args.library}")
    for trainer in ("keras", "baseline"):
        mine = [r for r in rows if r["trainer"] == trainer]
        print(f"{trainer:8s} Teff {np.median([r['teff'] for r in mine]):6.1f} K  "
              f"log g {np.median([r['logg'] for r in mine]):.3f}  [Fe/H] {np.median([r['feh'] for r in mine]):.3f}")


if __name__ == "__main__":
    main()
