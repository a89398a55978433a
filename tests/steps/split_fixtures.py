"""Small labelled split directories with known, learnable relations: fixtures for the model and evaluation tests.

The layout and schemas are those of the split stage (`<modality>/{train,val,test}.parquet` and
`<modality>/spec.json`); the manifest is marked synthetic. The physics is deliberately rough (line depths
that follow Teff, log g and [Fe/H]; blackbody colours; box-shaped transits and sinusoidal pulsations), enough
that a good model beats the null predictor by a wide margin. With `noise=True` every label is shuffled across
objects, so nothing is learnable: what a gate must refuse.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from steps.core.artifacts import ArtifactWriter

BANDS = {"G": 0.64, "BP": 0.51, "RP": 0.78, "J": 1.25, "H": 1.65, "Ks": 2.16, "W1": 3.4, "W2": 4.6}
COLOURS = [("BP", "RP"), ("G", "RP"), ("BP", "G"), ("G", "J"), ("J", "H"), ("H", "Ks"), ("J", "Ks"), ("W1", "W2"),
           ("Ks", "W1")]
CLASSES = ["transit", "eclipsing_binary", "pulsator", "rotator", "quiet"]
LC_FEATURES = ["period", "ls_period", "ls_power", "bls_period", "bls_power", "bls_depth", "amplitude", "std",
               "skew", "n_cadences"]


def _labels(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {"teff": rng.uniform(3800, 8000, n), "logg": rng.uniform(1.0, 5.0, n), "feh": rng.uniform(-2.0, 0.5, n)}


def spectra(rng: np.random.Generator, n: int, length: int = 256, blocks: int = 16) -> tuple[pa.Table, dict]:
    """Continuum-normalised spectra on a log-wavelength grid, with noise, masks and inverse variances, and the
    continuum's shape (a black body's, in dex relative to its mean; the reddest blocks uncovered in a fifth)."""
    wave = np.exp(np.linspace(np.log(3800.0), np.log(9000.0), length))
    lab = _labels(rng, n)
    teff, logg, feh = lab["teff"][:, None], lab["logg"][:, None], lab["feh"][:, None]
    flux = np.ones((n, length))
    for centre in (4102.0, 4341.0, 4861.0, 6563.0):  # Balmer: strongest near 9000 K, broader at high log g
        depth = 0.7 * np.exp(-((teff - 9000.0) / 3000.0) ** 2)
        width = 6.0 + 4.0 * logg
        flux -= depth * np.exp(-0.5 * ((wave - centre) / width) ** 2)
    metal = np.linspace(4200.0, 8600.0, 30)
    for i, centre in enumerate(metal):  # metal lines: deeper when metal-rich and cool
        depth = np.clip(0.25 * 10 ** (0.4 * feh) * (5000.0 / teff) ** (2 + i % 3), 0, 0.8)
        flux -= depth * np.exp(-0.5 * ((wave - centre) / (4.0 + (i % 4))) ** 2)
    for centre in (5175.0, 8542.0, 8662.0):  # gravity-sensitive lines
        flux -= np.clip(0.08 * logg * 10 ** (0.3 * feh), 0, 0.7) * np.exp(-0.5 * ((wave - centre) / 8.0) ** 2)
    band = (wave > 7050) & (wave < 7400)  # molecular band in cool stars
    flux -= np.clip((4600.0 - teff) / 2000.0, 0, 0.5) * band
    snr = rng.uniform(8.0, 80.0, n)
    flux += rng.normal(size=flux.shape) / snr[:, None]
    mask = (rng.random(flux.shape) < 0.02).astype(np.uint8)
    flux[mask == 1] = np.where(rng.random(int(mask.sum())) < 0.5, np.nan, 5.0)
    ivar = np.where(mask == 1, 0.0, snr[:, None] ** 2)
    block_wave = np.exp(np.linspace(np.log(3800.0), np.log(9000.0), blocks))
    planck = -5 * np.log10(block_wave) - np.log10(np.expm1(1.4388e8 / (block_wave * teff)))
    own = np.random.default_rng([n, blocks])  # the shared generator's draws (other fixtures') stay as they were
    shape = planck - planck.mean(axis=1, keepdims=True) + own.normal(scale=0.01, size=planck.shape)
    shape[own.random(n) < 0.2, -3:] = np.nan
    table = pa.table({
        "flux": pa.array(list(flux.astype(np.float32)), pa.list_(pa.float32())),
        "ivar": pa.array(list(ivar.astype(np.float32)), pa.list_(pa.float32())),
        "mask": pa.array(list(mask), pa.list_(pa.uint8())),
        "continuum_shape": pa.array(list(shape.astype(np.float32)), pa.list_(pa.float32())),
        "snr": snr, **lab,
    })
    spec = {"modality": "spectra", "grid": {"kind": "loglinear", "start": 3800.0, "stop": 9000.0, "length": length},
            "labels": ["teff", "logg", "feh"], "normalisation": "continuum", "continuum_blocks": blocks}
    return table, spec


def photometry(rng: np.random.Generator, n: int) -> tuple[pa.Table, dict]:
    """Blackbody magnitudes in eight bands with a metallicity term, parallaxes, errors and missing bands."""
    lab = _labels(rng, n)
    teff, logg, feh = lab["teff"], lab["logg"], lab["feh"]
    log_l = (4.438 - logg) + 4 * np.log10(teff / 5772.0)
    parallax = rng.uniform(0.3, 10.0, n)
    dist_mod = 5 * np.log10(1000.0 / parallax) - 5
    h_c_k = 14387.77  # micron K
    cols: dict[str, np.ndarray] = {}
    ref = None
    for band, lam in BANDS.items():
        planck = -2.5 * np.log10(1.0 / (lam ** 5 * (np.exp(h_c_k / (lam * teff)) - 1.0)))
        ref = planck if ref is None else ref
        mag = planck - 2.5 * log_l + dist_mod + 0.15 * feh * (lam < 0.7) + 30.0
        err = rng.uniform(0.005, 0.05, n)
        mag = mag + rng.normal(size=n) * err
        missing = rng.random(n) < (0.15 if band.startswith("W") else 0.04)
        cols[f"mag_{band}"] = np.where(missing, np.nan, mag)
        cols[f"err_{band}"] = np.where(missing, np.nan, err)
        cols[f"mask_{band}"] = missing.astype(np.uint8)
    table = {"id": None}
    for band in BANDS:
        for prefix in ("mag_", "err_", "mask_"):
            table[f"{prefix}{band}"] = cols[f"{prefix}{band}"]
    for a, b in COLOURS:
        table[f"c_{a}_{b}"] = cols[f"mag_{a}"] - cols[f"mag_{b}"]
    parallax_error = parallax * rng.uniform(0.02, 0.1, n)
    observed_parallax = parallax + rng.normal(size=n) * parallax_error
    table["abs_G"] = cols["mag_G"] + 5 * np.log10(np.clip(observed_parallax, 1e-3, None)) - 10
    table["parallax"], table["parallax_error"] = observed_parallax, parallax_error
    table.update(lab)
    del table["id"]
    features = [f"mag_{b}" for b in BANDS] + [f"c_{a}_{b}" for a, b in COLOURS] + ["abs_G", "parallax"]
    spec = {"modality": "photometry", "bands": list(BANDS), "features": features, "labels": ["teff", "logg", "feh"]}
    return pa.table(table), spec


def with_foreign_line(table: pd.DataFrame, depth: float = 0.8) -> pd.DataFrame:
    """The spectra with an absorption line where no fixture star has one (a pixel wide, near 6100 A): unlike every
    training spectrum in a way the leading principal components do not show."""
    length = len(table["flux"].iloc[0])
    line = depth * np.exp(-0.5 * (np.arange(length) - 0.55 * length) ** 2)
    return table.assign(flux=[np.asarray(f) - line for f in table["flux"]])


def lightcurves(rng: np.random.Generator, n: int, global_length: int = 64,
                local_length: int = 32) -> tuple[pa.Table, dict]:
    """Folded global/local views of five classes, with period-search features."""
    labels = rng.choice(CLASSES, size=n)
    phase_g = np.linspace(-0.5, 0.5, global_length)
    phase_l = np.linspace(-0.5, 0.5, local_length)
    views_g, views_l, rows = [], [], []
    for cls in labels:
        period = float(10 ** rng.uniform(-0.5, 1.5))
        noise = rng.uniform(0.05, 0.2)
        g = rng.normal(size=global_length) * noise
        loc = rng.normal(size=local_length) * noise
        depth = 0.0
        if cls == "transit":
            depth = rng.uniform(0.5, 2.0)
            g -= depth * (np.abs(phase_g) < 0.02)
            loc -= depth * (np.abs(phase_l) < 0.2)
        elif cls == "eclipsing_binary":
            depth = rng.uniform(1.0, 4.0)
            g -= depth * (np.abs(phase_g) < 0.04) + 0.5 * depth * (np.abs(np.abs(phase_g) - 0.5) < 0.04)
            loc -= depth * np.clip(1 - np.abs(phase_l) / 0.3, 0, 1)
        elif cls == "pulsator":
            amp = rng.uniform(0.5, 2.0)
            g += amp * (np.mod(phase_g * 2 + 0.5, 1.0) - 0.5) * 2
            period = float(10 ** rng.uniform(-1.0, 0.0))
        elif cls == "rotator":
            amp = rng.uniform(0.3, 1.0)
            g += amp * np.sin(2 * np.pi * phase_g + rng.uniform(0, 2 * np.pi))
            period = float(10 ** rng.uniform(0.3, 1.5))
        views_g.append(g.astype(np.float32)), views_l.append(loc.astype(np.float32))
        periodic = cls != "quiet"
        rows.append({
            "period": period if periodic else float(10 ** rng.uniform(-0.5, 1.5)), "period_true": period,
            "ls_period": period * (1 if rng.random() < 0.8 else 2), "ls_power": rng.uniform(0.3, 0.9) if cls in (
                "pulsator", "rotator") else rng.uniform(0.0, 0.3),
            "bls_period": period, "bls_power": rng.uniform(10, 50) if depth else rng.uniform(0, 10),
            "bls_depth": depth * 1e-3 if depth else abs(rng.normal()) * 1e-4,
            "amplitude": float(g.max() - g.min()), "std": float(g.std()),
            "skew": float(((g - g.mean()) ** 3).mean() / max(g.std(), 1e-9) ** 3),
            "n_cadences": float(rng.integers(2000, 4000)),
        })
    table = {
        "global_view": pa.array(views_g, pa.list_(pa.float32())),
        "local_view": pa.array(views_l, pa.list_(pa.float32())),
        **{k: np.array([r[k] for r in rows]) for k in LC_FEATURES},
        "class": pa.array([str(c) for c in labels]),
        "period_true": np.array([r["period_true"] for r in rows]),
    }
    spec = {"modality": "lightcurves", "global_length": global_length, "local_length": local_length,
            "features": LC_FEATURES, "classes": CLASSES}
    return pa.table(table), spec


def write_split(out: Path, n: int = 300, seed: int = 0, noise: bool = False, fractions=(0.6, 0.2, 0.2),
                spectrum_length: int = 256, global_length: int = 64, local_length: int = 32) -> Path:
    """Write a synthetic split directory with all three modalities; return its path."""
    rng = np.random.default_rng(seed)
    builders = {"spectra": lambda: spectra(rng, n, spectrum_length), "photometry": lambda: photometry(rng, n),
                "lightcurves": lambda: lightcurves(rng, n, global_length, local_length)}
    with ArtifactWriter(out, stage="split", parameters={"synthetic_seed": seed, "noise": noise},
                        synthetic=True) as writer:
        for modality, build in builders.items():
            table, spec = build()
            ids = pa.array([f"{modality[:4]}-{seed}-{i:05d}" for i in range(table.num_rows)])
            table = table.add_column(0, "id", ids)
            if noise:
                label_cols = ["class"] if modality == "lightcurves" else ["teff", "logg", "feh"]
                for col in label_cols:
                    position = table.column_names.index(col)
                    shuffled = table.column(col).take(pa.array(rng.permutation(table.num_rows)))
                    table = table.set_column(position, col, shuffled)
            n_train, n_val = int(fractions[0] * n), int(fractions[1] * n)
            parts = {"train": table.slice(0, n_train), "val": table.slice(n_train, n_val),
                     "test": table.slice(n_train + n_val)}
            for part, rows in parts.items():
                writer.write_table(f"{modality}/{part}.parquet", rows)
            writer.path(f"{modality}/spec.json").write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
    return Path(out)


def train_all(root: Path, noise: bool) -> tuple[Path, dict[str, Path]]:
    """A fixture split (learnable, or with shuffled labels) and a baseline of each model trained on it."""
    from steps.train import train_from_split

    split = write_split(root / "split", n=300, seed=21, noise=noise)
    return split, {name: train_from_split(name, split, root / name, trainer="baseline")
                   for name in ("spectral", "lightcurve", "sed")}


def said_to_have_learnt_half_the_test(split: Path, model: Path, out: Path) -> tuple[Path, list[str]]:
    """A copy of the SED `model` whose `training_ids.json` says it learnt the first half of the split's test objects
    (as a production version trained on another split of the same library would have): (the copy, those keys)."""
    import shutil

    from steps.models.io import TRAINING_IDS, object_keys
    from steps.models.splits import read_split

    test_ids = sorted(object_keys(read_split(split, "photometry")[0]["test"]))
    learnt = test_ids[: len(test_ids) // 2]
    with ArtifactWriter(out, stage="train.sed") as writer:
        for path in model.iterdir():
            if path.is_dir():
                shutil.copytree(path, writer.path(path.name))
            elif path.name not in ("manifest.json", TRAINING_IDS):
                shutil.copy2(path, writer.path(path.name))
        writer.path(TRAINING_IDS).write_text(json.dumps(learnt))
    return out, learnt
