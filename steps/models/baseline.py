"""The NumPy baselines (`--force-dummy`): no TensorFlow, deterministic, seconds to train.

- `spectral`: ridge regression of (log10 Teff, log g, [Fe/H]) on the leading principal components of the flux
  (bad pixels filled with the training mean spectrum) and of the continuum shape where the features have it, and
  the squares of the first few; kind `ridge-pca`. A linear model cannot follow the spectrum from M dwarfs to
  B stars (trained on all of MILES, its FGK test stars' Teff went from 106 K to 147 K, median of 4 splits), so it
  learns only from stars of `SPECTRAL_TEFF_RANGE`, and of those only the ones whose labels agree with their spectra
  (`clean_labels`).
- `sed`: ridge regression on the magnitudes, colours, absolute G and parallax, not their errors
  (`sed_feature_columns`; heavy tails compressed; training rows' missing values median-imputed, with missing
  indicators) and their squares; kind `ridge`. A star with bands missing is answered by the ridge refitted on the
  features it has (`RidgeMoments`, saved with the model), not by the full fit with the missing ones imputed: trained
  on `make run`'s synthetic photometry, the imputed fit put test stars with Gaia's bands alone at a Teff RMSE of
  1,072 K, the refit at 66 K (medians of 4 splits, `bench/bench_sed_quality.py`). Its penalty is chosen on the
  validation rows answered the same way (`_choose_as_answered`).
- `lightcurve`: softmax regression with an L2 penalty, minimised by L-BFGS, on principal components of the
  global and local views and the scalar period-search features; classes weighted equally; kind `softmax`.

Penalties are chosen on the validation split from a small grid. Each regression target gets a 1-sigma
uncertainty from out-of-sample residuals (the validation residuals and the training leave-one-out residuals,
pooled): for spectra it scales with the signal-to-noise ratio, sigma(snr)^2 = s0^2 + (s1/snr)^2, fitted on
snr bins; otherwise it is constant. Either way it is scaled so that median |residual / sigma| = 0.6745, as for a
Gaussian, which makes the 68% interval cover about 68% of the out-of-sample residuals.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from steps.core.names import MODALITY, MODEL_NAMES
from steps.core.statistics import MAD_TO_SIGMA
from steps.models.domain import Domain, PeriodRange, SpectrumResidual
from steps.models.features import Featurizer, Scalars, VectorPCA
from steps.models.inputs import Columns
from steps.models.io import FORMAT_VERSION, Trained
from steps.models.linear import (RidgeFit, RidgeMoments, balanced_weights, fit_softmax, ridge, robust_outliers,
                                 softmax)
from steps.models.metrics import regression_metrics
from steps.models.predictor import ClassifierPredictor, RegressionPredictor
from steps.models.transforms import forward_transform
from steps.models.splits import classified_rows, classifier_fit_metrics

TASK = {"spectral": "regression", "lightcurve": "classification", "sed": "regression"}
DEFAULT_LABELS = ("teff", "logg", "feh")
TARGET_TRANSFORMS = {"teff": "log10"}
# Never model inputs, whatever a spec lists: identifiers, labels, and the simulation's true period.
NOT_FEATURES = {"id", "class", "period_true", "teff", "logg", "feh", "label", "source", "synthetic"}

SPECTRAL_COMPONENTS = 32
SHAPE_COMPONENTS = 8  # of the continuum shape
SPECTRAL_QUADRATIC = 8
# The spectral baseline's training domain (K): FGK stars and their neighbours, where a linear model holds (the Keras
# model learns from every star: `keras.training.STELLAR_TEFF_RANGE`). And the spectral models' label-outlier rule:
# a star whose leave-one-out ridge residual is beyond OUTLIER_SIGMA robust sigmas in any label disagrees with its
# spectrum (a wrong label, a wrong star), and is not learnt from.
SPECTRAL_TEFF_RANGE = (3500.0, 8000.0)
OUTLIER_SIGMA = 4.0
VIEW_COMPONENTS = 16
RIDGE_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # times the number of training rows
SOFTMAX_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
MIN_SNR_ROWS = 60
MIN_COMPLETE_ROWS = 30  # training rows with every input that the sigma of a refitting model needs
MIN_REFIT_ROWS = 10  # rows with inputs missing that its `refit_scale` needs
REFIT_FOLDS = 5  # the training rows with inputs missing are answered out of fold, a fifth at a time


def _vector_length(spec: dict[str, Any], keys: tuple[str, ...], table: pa.Table, column: str) -> int:
    for path in keys:
        value: Any = spec
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int) and value > 0:
            return value
    if column not in table.column_names:
        raise ValueError(f"the training table has no column {column!r}")
    for row in table.column(column).to_pylist():
        if row is not None:
            return len(row)
    raise ValueError(f"column {column!r}: no row has a value, so its length is unknown")


def _feature_columns(spec: dict[str, Any], table: pa.Table, fallback) -> list[str]:
    listed = spec.get("features")
    names = table.column_names
    if listed:
        missing = [c for c in listed if c not in names]
        if missing:
            raise ValueError(f"spec.json lists feature columns the table lacks: {', '.join(missing)}")
        candidates = list(listed)
    else:
        candidates = [c for c in names if fallback(c)]
    numeric = [c for c in candidates if c not in NOT_FEATURES and not c.endswith("_true")
               and (pa.types.is_integer(table.schema.field(c).type)
                    or pa.types.is_floating(table.schema.field(c).type))]
    return numeric


def fit_sigma(residuals: np.ndarray, snr: np.ndarray | None, column: str = "snr") -> dict[str, Any]:
    """A 1-sigma model for one target from out-of-sample residuals (see the module docstring)."""
    residuals = np.asarray(residuals, np.float64)
    ok = np.isfinite(residuals)
    res = residuals[ok]
    if res.size == 0:
        return {"kind": "constant", "sigma": None, "n": 0}
    constant = {"kind": "constant", "sigma": float(MAD_TO_SIGMA * np.median(np.abs(res))), "n": int(res.size)}
    if snr is None:
        return constant
    snr = np.asarray(snr, np.float64)[ok]
    valid = np.isfinite(snr) & (snr > 0)
    if valid.sum() < MIN_SNR_ROWS:
        return constant
    r, s = res[valid], snr[valid]
    n_bins = int(min(5, valid.sum() // 30))
    edges = np.quantile(s, np.linspace(0, 1, n_bins + 1))
    which = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, n_bins - 1)
    x, y = [], []
    for b in range(n_bins):
        members = which == b
        if members.sum() >= 10:
            x.append(float(np.mean(1.0 / s[members] ** 2)))
            y.append(float((MAD_TO_SIGMA * np.median(np.abs(r[members]))) ** 2))
    if len(x) < 2:
        return constant
    from scipy.optimize import nnls

    (a, c), _ = nnls(np.column_stack([np.ones(len(x)), x]), np.array(y))
    if a <= 0 and c <= 0:
        return constant
    snr_ref = float(np.median(s))
    filled = np.where(np.isfinite(snr) & (snr > 0), snr, snr_ref)
    scale = MAD_TO_SIGMA * float(np.median(np.abs(res / np.sqrt(a + c / filled ** 2))))
    if not math.isfinite(scale) or scale <= 0:
        return constant
    return {"kind": "snr", "column": column, "s0": float(math.sqrt(a)) * scale, "s1": float(math.sqrt(c)) * scale,
            "snr_ref": snr_ref, "n": int(res.size)}


def in_teff_range(table: pa.Table, teff_range: tuple[float, float]) -> pa.Table:
    """The rows whose Teff lies in the range (rows without a Teff are kept: they teach the other labels)."""
    if "teff" not in table.column_names:
        return table
    teff = Columns(table).scalar("teff")
    keep = ~np.isfinite(teff) | ((teff >= teff_range[0]) & (teff <= teff_range[1]))
    return table.filter(pa.array(keep))


def _base_info(name: str, kind: str, spec: dict[str, Any], featurizer: Featurizer, n_train: int, n_val: int,
               seed: int, epochs: int | None) -> dict[str, Any]:
    fields = featurizer.fields
    return {
        "format_version": FORMAT_VERSION, "name": name, "kind": kind, "task": TASK[name], "modality": MODALITY[name],
        "features": featurizer.config(), "feature_names": featurizer.feature_names(),
        "feature_columns": fields["required"] + fields["optional"], "inputs": fields,
        "training": {"trainer": "baseline", "seed": int(seed), "epochs": epochs, "n_train": n_train,
                     "n_val": n_val, "spec_modality": spec.get("modality")},
    }


def _train_regression(name: str, kind: str, featurizer: Featurizer, train: pa.Table, val: pa.Table,
                      spec: dict[str, Any], seed: int, epochs: int | None, sigma_column: str | None,
                      clean_labels: bool = False, submodels: bool = False,
                      spectrum_length: int | None = None) -> Trained:
    """Ridge on the featurizer's features; with `clean_labels`, fitted once more without the training rows that
    the first fit's leave-one-out residuals call label outliers (`OUTLIER_SIGMA`); with `submodels`, saved with
    the moments that refit it for an object's missing inputs (`RidgeMoments`); with `spectrum_length`, its domain
    check also measures spectra against the training spectra (`SpectrumResidual`)."""
    wanted = list(spec.get("labels") or DEFAULT_LABELS)
    labels = [t for t in wanted if t in train.column_names]
    if not labels:
        raise ValueError(f"{name}: the training table has none of the labels {wanted}")
    ct, cv = Columns(train), Columns(val)
    featurizer.fit(ct)
    transforms = {t: TARGET_TRANSFORMS[t] for t in labels if t in TARGET_TRANSFORMS}

    def targets(cols: Columns) -> np.ndarray:
        """The targets of a batch in the fitted space, one column per label."""
        return np.column_stack([forward_transform(transforms.get(t), cols.scalar(t)) for t in labels])

    x_train, y_train = featurizer.transform(ct), targets(ct)
    x_val, y_val = (featurizer.transform(cv), targets(cv)) if cv.n else (None, None)
    fit = ridge(x_train, y_train, x_val, y_val, tuple(a * ct.n for a in RIDGE_GRID))
    left_out, n_train = 0, ct.n
    if clean_labels:
        kept = ~robust_outliers(fit.loo_residuals, OUTLIER_SIGMA)
        left_out = int((~kept).sum())
        if left_out:
            ct = Columns(train.filter(pa.array(kept)))
            x_train, y_train = x_train[kept], y_train[kept]
            fit = ridge(x_train, y_train, x_val, y_val, tuple(a * ct.n for a in RIDGE_GRID))
    if submodels and cv.n:
        fit = _choose_as_answered(x_train, y_train, x_val, y_val, featurizer.unknown_features(cv),
                                  tuple(a * ct.n for a in RIDGE_GRID))
    info = _base_info(name, kind, spec, featurizer, n_train, cv.n, seed, epochs)
    if sigma_column and sigma_column not in info["inputs"]["optional"]:
        info["inputs"]["optional"].append(sigma_column)
    info.update({"targets": labels, "target_transforms": transforms,
                 "hyperparameters": {
                     "alpha": dict(zip(labels, fit.alpha.tolist())), "alpha_grid": list(fit.scores["alphas"]),
                     "selection": ("leave-one-out RMSE" if not cv.n else "validation RMSE in the fitted space" + (
                         ", rows with missing inputs answered by the refit" if submodels else ""))}})
    if clean_labels:
        info["training"].update({"label_outliers_left_out": left_out, "outlier_rule": (
            f"leave-one-out ridge residual > {OUTLIER_SIGMA:g} robust sigma in any label")})
    domain = Domain.fit(x_train, seed=seed)
    if spectrum_length:
        domain.residual = SpectrumResidual.fit(ct, spectrum_length, seed)
    info["domain"] = domain.record()
    arrays = {**featurizer.state(), "coef": fit.coef, "intercept": fit.intercept, **domain.arrays()}
    if submodels:
        arrays.update(RidgeMoments.of(x_train, y_train, fit.alpha).arrays())
        info["missing_inputs"] = ("refitted on the features the object has, from the training moments, its "
                                  "uncertainty widened by the refit's larger training residuals and by each "
                                  "label's refit_scale")
    model = RegressionPredictor(None, info, spec, arrays)
    info["uncertainty"] = model.uncertainty = _fit_uncertainty(model, fit, x_train, y_train, ct, cv, targets, labels,
                                                               sigma_column, seed)
    metrics: dict[str, Any] = {"model": name, "kind": kind, "hyperparameters": info["hyperparameters"],
                               "selection_scores": {t: fit.scores[f"target{i}"] for i, t in enumerate(labels)}}
    for split, table in (("train", train), ("val", val)):
        if table.num_rows:
            pred = model.predict_table(table)
            metrics[split] = {t: regression_metrics(Columns(table).scalar(t), pred[t], pred[f"{t}_err"])
                              for t in labels}
    return Trained(info, arrays, metrics)


def _choose_as_answered(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                        unknown_val: np.ndarray, alphas: tuple[float, ...]) -> RidgeFit:
    """The ridge whose penalty, per target, gives the lowest validation RMSE when each validation row is answered
    as the model will answer it: refitted around its missing inputs (`RidgeMoments.predict`), not by the full fit
    with them imputed. Ties go to the larger penalty, as in `ridge`; a target without validation values is chosen
    by its leave-one-out RMSE, as `ridge` does."""
    partial = unknown_val.any(axis=1)
    scores = np.empty((len(alphas), y_train.shape[1]))
    for index, alpha in enumerate(alphas):
        moments = RidgeMoments.of(x_train, y_train, np.full(y_train.shape[1], alpha))
        coef, intercept, _ = moments.subset(np.ones(x_train.shape[1], bool))
        z = x_val @ coef + intercept
        z[partial] = moments.predict(x_val[partial], unknown_val[partial])[0]
        squares = (z - y_val) ** 2
        scores[index] = np.sqrt(np.nansum(squares, axis=0) / np.maximum(np.isfinite(squares).sum(axis=0), 1))
    fits = []
    for t in range(y_train.shape[1]):
        if not np.isfinite(y_val[:, t]).any():
            fits.append(ridge(x_train, y_train[:, t], alphas=alphas))
            scores[:, t] = fits[-1].scores["target0"]
            continue
        best = min(range(len(alphas)), key=lambda i: (round(float(scores[i, t]), 12), -alphas[i]))
        fits.append(ridge(x_train, y_train[:, t], alphas=(alphas[best],)))
    return RidgeFit(np.column_stack([f.coef[:, 0] for f in fits]), np.array([f.intercept[0] for f in fits]),
                    np.array([f.alpha[0] for f in fits]), np.column_stack([f.loo_residuals[:, 0] for f in fits]),
                    {"alphas": list(map(float, alphas)), **{f"target{t}": scores[:, t].tolist()
                                                             for t in range(y_train.shape[1])}})


def _fit_uncertainty(model: RegressionPredictor, fit: RidgeFit, x_train: np.ndarray, y_train: np.ndarray,
                     ct: Columns, cv: Columns, targets, labels: list[str], sigma_column: str | None,
                     seed: int) -> dict[str, Any]:
    """Each label's 1-sigma model (`fit_sigma`) from the out-of-sample residuals: the validation rows' as the model
    answers them, and the training rows' leave-one-out ones.

    A model that refits around missing inputs (the SED model, with a constant sigma) fits it on the rows with every
    input (all rows while fewer than `MIN_COMPLETE_ROWS` have): the leave-one-out residuals of the others are the
    full fit's, with their missing inputs imputed, which the model no longer answers with. The rows with inputs
    missing, out of fold for the training rows (`_refit_out_of_fold`), then give `refit_scale`: how much larger than
    that sigma their residuals are once divided by their own widening factor. A star misses a band for a reason (too
    bright, too faint), and the training residuals that the widening comes from cannot see it: on a 3,000-star
    synthetic model the 68% intervals of the stars with a band missing held 50% (Teff) and 53% (log g) of them
    without it, 65% and 76% with it."""
    loo_residuals = fit.loo_residuals
    if model.moments is None:
        residuals, snr = [loo_residuals], [ct.scalar(sigma_column) if sigma_column else None]
        if cv.n:
            residuals.insert(0, model.fitted_space(cv)[0] - targets(cv))
            snr.insert(0, cv.scalar(sigma_column) if sigma_column else None)
        pooled_snr = np.concatenate(snr) if sigma_column else None
        pooled = np.vstack(residuals)
        return {t: fit_sigma(pooled[:, i], pooled_snr, sigma_column or "snr") for i, t in enumerate(labels)}
    unknown = model.featurizer.unknown_features(ct)
    partial = unknown.any(axis=1)
    complete = ~partial if (~partial).sum() >= MIN_COMPLETE_ROWS else np.ones(len(partial), bool)
    base, refitted = [loo_residuals[complete]], [_refit_out_of_fold(x_train, y_train, unknown, fit.alpha, seed)]
    if cv.n:
        z, widen = model.fitted_space(cv)
        val_partial = model.featurizer.unknown_features(cv).any(axis=1)
        scaled = (z - targets(cv)) / widen
        base.append(scaled[~val_partial])
        refitted.append(scaled[val_partial])
    pooled, others = np.vstack(base), np.vstack(refitted)
    uncertainty = {}
    for i, t in enumerate(labels):
        uncertainty[t] = fit_sigma(pooled[:, i], None)
        far = others[:, i][np.isfinite(others[:, i])]
        sigma = uncertainty[t]["sigma"]
        if sigma and far.size >= MIN_REFIT_ROWS:
            uncertainty[t].update({"refit_scale": float(MAD_TO_SIGMA * np.median(np.abs(far)) / sigma),
                                   "refit_rows": int(far.size)})
    return uncertainty


def _refit_out_of_fold(x_train: np.ndarray, y_train: np.ndarray, unknown: np.ndarray, alpha: np.ndarray,
                       seed: int) -> np.ndarray:
    """(m, T) residuals, divided by their widening factors, of the m training rows with inputs missing (`unknown`
    features), each answered by the refit from the moments of the other `REFIT_FOLDS - 1` folds."""
    partial = np.flatnonzero(unknown.any(axis=1))
    if not partial.size:
        return np.zeros((0, y_train.shape[1]))
    fold = np.random.default_rng(seed).permutation(len(x_train)) % REFIT_FOLDS
    out = np.full((partial.size, y_train.shape[1]), np.nan)
    for k in range(REFIT_FOLDS):
        held = fold[partial] == k
        if not held.any():
            continue
        moments = RidgeMoments.of(x_train[fold != k], y_train[fold != k], alpha)
        rows = partial[held]
        z, widen = moments.predict(x_train[rows], unknown[rows])
        out[held] = (z - y_train[rows]) / widen
    return out


def _train_spectral(train: pa.Table, val: pa.Table, spec: dict[str, Any], seed: int, epochs: int | None) -> Trained:
    length = _vector_length(spec, ("grid.length", "length"), train, "flux")
    blocks = [VectorPCA("flux", length, SPECTRAL_COMPONENTS, "mask", "ivar")]
    if "continuum_shape" in train.column_names:
        shape_length = _vector_length(spec, ("continuum_blocks",), train, "continuum_shape")
        blocks.append(VectorPCA("continuum_shape", shape_length, SHAPE_COMPONENTS, optional=True))
    trained = _train_regression("spectral", "ridge-pca", Featurizer(blocks, quadratic_leading=SPECTRAL_QUADRATIC),
                                in_teff_range(train, SPECTRAL_TEFF_RANGE), in_teff_range(val, SPECTRAL_TEFF_RANGE),
                                spec, seed, epochs, "snr" if "snr" in train.column_names else None, clean_labels=True,
                                spectrum_length=length)
    trained.info["training"]["teff_range"] = list(SPECTRAL_TEFF_RANGE)
    return trained


def measurement_error(column: str) -> bool:
    """Whether a photometric column is a measurement's error (`err_G`, `parallax_error`)."""
    return column.startswith("err_") or column.endswith("_error")


def sed_feature_columns(spec: dict[str, Any], table: pa.Table, errors: bool) -> list[str]:
    """The SED models' input columns: spec.json `features`, or the magnitudes, colours, absolute G, parallax and
    (with `errors`) the measurement errors (`err_*`, `parallax_error`) by name.

    The ridge baseline takes no errors: in a quadratic of the features an error can only act as a predictor of the
    star, never as the weight of its band. It did: on `make run`'s synthetic photometry, when its errors were drawn
    at the true magnitudes, it put four copies of one star whose errors grew from 0.003 to 0.03 mag at 5,491, 5,174,
    4,273 and 3,194 K. The Keras ensemble keeps them, as it learns how far to trust a band (a saturated 2MASS
    magnitude comes with a large error): without them its Teff robust sigma on the Gaia benchmark stars went from 96
    to 114 K (median of 4 splits, `bench/bench_sed_quality.py`).

    Neither model reads the `mask_<band>` codes, which say why a band is unusable: its magnitude is NaN whatever the
    reason, and the models answer from the bands there are. As numbers in the ridge's quadratic the codes made what
    a catalogue did change the answer: one star got 3,716 K with J absent and 4,662 K with J a 99.999 placeholder.
    What the reasons tell of the star itself, that a band is saturated (it is bright), is `saturated_<band>`."""
    columns = [c for c in _feature_columns(spec, table, lambda c: c.startswith(("mag_", "c_"))
                                           or c in ("abs_G", "parallax") or measurement_error(c))
               if not c.startswith("mask_")]
    if not errors:
        columns = [c for c in columns if not measurement_error(c)]
    if not columns:
        raise ValueError("sed: no numeric feature columns (spec.json `features`, or mag_*/err_*/c_*/abs_G/parallax)")
    return columns


def _train_sed(train: pa.Table, val: pa.Table, spec: dict[str, Any], seed: int, epochs: int | None) -> Trained:
    columns = sed_feature_columns(spec, train, errors=False)
    featurizer = Featurizer([Scalars(columns, quadratic=True, name="photometry", require_any=True)])
    return _train_regression("sed", "ridge", featurizer, train, val, spec, seed, epochs, None, submodels=True)


def _train_lightcurve(train: pa.Table, val: pa.Table, spec: dict[str, Any], seed: int,
                      epochs: int | None) -> Trained:
    classes, train_kept, val_kept, y_train, y_val = classified_rows("lightcurve", train, val, spec)
    global_length = _vector_length(spec, ("global_length",), train, "global_view")
    local_length = _vector_length(spec, ("local_length",), train, "local_view")
    scalars = _feature_columns(spec, train, lambda c: c not in ("global_view", "local_view"))
    scalars = [c for c in scalars if c not in ("global_view", "local_view")]
    featurizer = Featurizer([VectorPCA("global_view", global_length, VIEW_COMPONENTS),
                             VectorPCA("local_view", local_length, VIEW_COMPONENTS),
                             Scalars(scalars, name="scalars")])
    ct = Columns(train_kept)
    featurizer.fit(ct)
    x_train = featurizer.transform(ct)
    w_train = balanced_weights(y_train, len(classes))
    cv = Columns(val_kept)
    x_val = featurizer.transform(cv) if cv.n else None
    fits, scores = [], []
    for lam in SOFTMAX_GRID:
        fit = fit_softmax(x_train, y_train, len(classes), lam, w_train)
        if x_val is not None and cv.n:
            proba = softmax(x_val @ fit.coef + fit.intercept)
            w_val = balanced_weights(y_val, len(classes))
            score = float(-np.sum(w_val * np.log(np.clip(proba[np.arange(cv.n), y_val], 1e-15, 1))) / w_val.sum())
        else:
            score = fit.loss
        fits.append(fit), scores.append(score)
    best = min(range(len(SOFTMAX_GRID)), key=lambda i: (round(scores[i], 12), -SOFTMAX_GRID[i]))
    fit = fits[best]
    info = _base_info("lightcurve", "softmax", spec, featurizer, ct.n, cv.n, seed, epochs)
    if "period" not in info["inputs"]["optional"]:
        info["inputs"]["optional"].append("period")
    info.update({"classes": classes, "label_column": "class", "period_column": "period",
                 "hyperparameters": {"l2": fit.lam, "l2_grid": list(SOFTMAX_GRID), "class_weights": "balanced",
                                     "selection": "validation class-balanced log loss" if cv.n else "training loss",
                                     "iterations": fit.iterations, "converged": fit.converged}})
    domain = Domain.fit(x_train, seed=seed)
    domain.period = PeriodRange.fit(ct.scalar("period"))
    info["domain"] = domain.record()
    arrays = {**featurizer.state(), "coef": fit.coef, "intercept": fit.intercept, **domain.arrays()}
    model = ClassifierPredictor(None, info, spec, arrays)
    metrics: dict[str, Any] = {"model": "lightcurve", "kind": "softmax", "hyperparameters": info["hyperparameters"],
                               "selection_scores": dict(zip(map(str, SOFTMAX_GRID), scores)),
                               **classifier_fit_metrics(model.predict_proba, classes,
                                                        {"train": (train, train_kept), "val": (val, val_kept)})}
    return Trained(info, arrays, metrics)


TRAINERS = {"spectral": _train_spectral, "sed": _train_sed, "lightcurve": _train_lightcurve}


def train_baseline(name: str, train: pa.Table, val: pa.Table, spec: dict[str, Any], seed: int = 0,
                   epochs: int | None = None) -> Trained:
    """Fit the baseline `name` on the training table, choosing hyper-parameters on the validation table.

    `seed` and `epochs` are recorded; the baselines are deterministic and solved to convergence, so neither
    changes the result.
    """
    if name not in TRAINERS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    if train.num_rows < 3:
        raise ValueError(f"{name}: {train.num_rows} training rows; at least 3 are needed")
    return TRAINERS[name](train, val, spec, seed, epochs)
