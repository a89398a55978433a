"""SED model quality over several held-out splits, with every band and with Gaia's bands alone.

    .venv/bin/python bench/bench_sed_quality.py [--catalogue ../shared/data/gaia/benchmark_stars] [--seeds 42 0 1 2]
    .venv/bin/python bench/bench_sed_quality.py --catalogue synthetic --samples 200     # `make run`'s source

The catalogue is ingested as `stellar run` ingests it (a synthetic source drawn with the workflow's seed, 42, so
its seed-42 split is `make run`'s), and for each seed it goes through the pipeline's own stages (preprocess, split
with 20% test and 10% validation, train with the same seed and at most 100 epochs, as `stellar run` does), and the
Keras model and the NumPy baseline are measured on the test split: robust sigma (1.4826 MAD) and RMSE of Teff and
log g (what the SED gates compare) and the share of test stars inside the predicted 68% interval. The test stars
are measured twice: as they are, and with every band but Gaia's G, BP and RP removed (magnitudes, errors and the
colours that use them), the photometry of most Gaia stars, whose 2MASS and WISE magnitudes are missing or
saturated. A test split of a few dozen stars
scatters a robust sigma by ~10-20%, so the median over seeds says more than one split.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from steps.ingest.__main__ import ingest  # noqa: E402
from steps.ingest.bands import gaia_bands_only  # noqa: E402
from steps.models import load_model  # noqa: E402
from steps.core.statistics import robust_sigma  # noqa: E402
from steps.models.splits import read_split  # noqa: E402
from steps.preprocess.__main__ import main as preprocess  # noqa: E402
from steps.split.__main__ import split_features  # noqa: E402
from steps.train import train_from_split  # noqa: E402

WORKFLOW_SEED = 42  # `stellar run`'s defaults: the synthetic draw, and the most epochs a model trains
WORKFLOW_EPOCHS = 100
SHARED = Path(__file__).resolve().parents[2] / "shared/data"


def measure(model_dir: Path, test: pa.Table) -> dict[str, float]:
    """Robust sigma, RMSE and 68% coverage of Teff and log g on the test stars."""
    predicted = load_model(model_dir).predict_table(test, blank_beyond_labels=False)  # as evaluation measures
    out: dict[str, float] = {"n": test.num_rows}
    for label in ("teff", "logg"):
        truth = test.column(label).to_numpy(zero_copy_only=False).astype(float)
        residual = np.asarray(predicted[label], float) - truth
        sigma = np.asarray(predicted[f"{label}_err"], float)
        known = np.isfinite(residual)
        out[f"{label}_robust_sigma"] = robust_sigma(residual)
        out[f"{label}_rmse"] = float(np.sqrt(np.mean(residual[known] ** 2)))
        out[f"{label}_cov68"] = float(np.mean(np.abs(residual[known]) <= sigma[known]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogue", default=str(SHARED / "gaia/benchmark_stars"),
                        help="a catalogue folder or file, or 'synthetic'")
    parser.add_argument("--samples", type=int, default=0, help="objects to read (0: all; synthetic: 200)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 0, 1, 2])
    parser.add_argument("--trainers", nargs="+", choices=("keras", "baseline"), default=["keras", "baseline"],
                        help="the models to train and measure (baseline alone takes seconds)")
    args = parser.parse_args()
    samples = args.samples or (200 if args.catalogue == "synthetic" else 0)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        ingest("photometry", args.catalogue, samples, WORKFLOW_SEED, root / "raw")
        if preprocess(["photometry", "--in", str(root / "raw"), "--out", str(root / "features")]) != 0:
            raise SystemExit("preprocessing failed")
        for seed in args.seeds:
            split = root / f"split-{seed}"
            split_features({"photometry": root / "features"}, split, seed, 0.2, 0.1)
            test = pq.read_table(split / "photometry" / "test.parquet")
            for trainer in args.trainers:
                model = train_from_split("sed", split, root / f"{trainer}-{seed}", trainer=trainer,
                                         epochs=WORKFLOW_EPOCHS, seed=seed)
                gaia_only = gaia_bands_only(test, read_split(split, "photometry")[1]["bands"])
                for bands, table in (("all", test), ("Gaia only", gaia_only)):
                    rows.append({"seed": seed, "trainer": trainer, "bands": bands, **measure(model, table)})
                    r = rows[-1]
                    print(f"seed {seed:3d} {trainer:8s} {bands:9s} n={r['n']:3d}  Teff {r['teff_robust_sigma']:6.1f} K "
                          f"(RMSE {r['teff_rmse']:6.1f}, 68% {r['teff_cov68']:.2f})  log g "
                          f"{r['logg_robust_sigma']:.3f} (RMSE {r['logg_rmse']:.3f}, 68% {r['logg_cov68']:.2f})",
                          flush=True)
    print(f"\nmedian over {len(args.seeds)} splits of {args.catalogue}")
    for bands in ("all", "Gaia only"):
        for trainer in args.trainers:
            mine = [r for r in rows if r["trainer"] == trainer and r["bands"] == bands]
            median = {key: float(np.median([r[key] for r in mine])) for key in mine[0] if key not in
                      ("seed", "trainer", "bands")}
            print(f"{bands:9s} {trainer:8s} Teff {median['teff_robust_sigma']:6.1f} K "
                  f"(RMSE {median['teff_rmse']:6.1f}, 68% {median['teff_cov68']:.2f})  "
                  f"log g {median['logg_robust_sigma']:.3f} (RMSE {median['logg_rmse']:.3f}, "
                  f"68% {median['logg_cov68']:.2f})")


if __name__ == "__main__":
    main()
