"""Training the three Keras models on a split: seeded, deterministic, early-stopped, calibrated on validation.

`train_keras(name, train, val, spec, seed, epochs)` returns a `Trained` whose `save` writes `model.keras` and
`saved_model/`. The recipe, shared by the three models:

1. fit the input `Encoder` on the training rows (normalisation statistics go into `model.json`);
2. seed everything (`keras.utils.set_random_seed`) and make TensorFlow's ops deterministic, so the same inputs
   and seed give the same weights;
3. train with Adam, at most `epochs` epochs (default per model), with early stopping on a validation score
   (see `_Score`; the training rows stand in when there is no validation split) that restores the best
   epoch's weights;
4. calibrate on the validation split: regression sigmas are scaled per target so that median |res/sigma| is
   0.6745 (for a network whose inputs on its training rows are out-of-sample estimates, as the spectral model's
   are, those rows count too: see `_sigma_scales`; the SED model's validation rows count also in copies with bands
   dropped, as its training rows are); classifier logits get a temperature minimising the validation log loss
   (ECE recorded before/after);
5. measure the train and validation splits with the same predictor class that serves the model.

Regression targets are learnt in the fitted space of the baselines (log10 Teff, log g, [Fe/H]), standardised by
their training mean and standard deviation. The SED model is trained on the training rows plus copies in which
each band (its magnitude, error, colours and abs_G) is dropped at random, and 2MASS's and AllWISE's bands also all
together, so that it predicts with missing bands as real photometry misses them.

The spectral model (`networks.spectral_hybrid`) reads the normalised flux and, where the features have it, the
continuum shape that normalisation removed (it carries Teff). It learns from every star of `STELLAR_TEFF_RANGE`, M
dwarfs to O stars (its kernel is local: a hot star's estimate comes from hot stars), and its training set is cleaned
as a careful spectroscopist would clean a labelled library: its means learn [Fe/H] only from stars of at most
`METALLICITY_TEFF_MAX` (its uncertainty from every label), and stars whose label disagrees with their spectrum, a
leave-one-out ridge residual beyond `OUTLIER_SIGMA` robust sigmas in any label, are left out (that ridge on the
pixels also weighs the continuum shape against the flux, by the RMSE of its leave-one-out residuals over the rows no
candidate weight calls a label outlier). The estimate is then a kernel ridge regression (linear + Gaussian kernel)
on the leading principal components, solved in closed form with its width and penalties chosen by leave-one-out
error: on MILES it cuts the leave-one-out error of log g by a fifth against the linear ridge; a second kernel ridge
regression per label, on that label's estimate and a few leading components, refines it where its leave-one-out
residuals say so. Teff, which the continuum shape carries, gets such an estimate of its own (its own continuum
weight, cleaning and width), and where that estimate lies in `TEFF_GATE`, Teff comes from one more, fitted on the
FGK stars and their neighbours alone; log g comes from the estimate of all three labels, and [Fe/H] from one of all
three labels that sees only the spectrum redder than 3900 A, divided by its local pseudo-continuum (a third input;
`kernel_estimate.fit_spectral_estimate`, `kernel_estimate.metallicity_window`, `kernel_estimate.LOCAL_INPUT`). A
small network learns a correction to it (early stopping keeps it only where it helps on validation) and, trained
last on its own with the means frozen, the per-star uncertainty.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from steps.models.keras.startup import import_tensorflow

import_tensorflow()  # first, so that TensorFlow's native start-up noise is left out wherever this is imported

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from steps.core.names import MODALITY  # noqa: E402
from steps.ingest.bands import BANDS, band_of  # noqa: E402
from steps.models.baseline import (  # noqa: E402
    DEFAULT_LABELS,
    SPECTRAL_TEFF_RANGE,
    TARGET_TRANSFORMS,
    TASK,
    _feature_columns,
    _vector_length,
    in_teff_range,
    measurement_error,
    sed_feature_columns,
)
from steps.models.domain import Domain, PeriodRange, SpectrumResidual  # noqa: E402
from steps.models.inputs import Columns  # noqa: E402
from steps.models.io import FORMAT_VERSION, KERAS_MODEL, SAVED_MODEL, Trained  # noqa: E402
from steps.models.keras import KIND  # noqa: E402
from steps.models.keras.calibration import (  # noqa: E402
    best_temperature,
    expected_calibration_error,
    fit_temperature,
    log_loss,
    member_moments,
    sigma_scale,
    softmax,
)
from steps.models.keras.encoders import Encoder, ScalarInput, VectorInput  # noqa: E402
from steps.models.keras.kernel_estimate import (  # noqa: E402
    LOCAL_INPUT,
    METALLICITY_WINDOW_START,
    fit_spectral_estimate,
    local_continuum_pixels,
    metallicity_window,
)
from steps.models.keras.networks import (  # noqa: E402
    VARIANCE_LAYERS,
    ensemble_nll,
    gaussian_nll,
    heteroscedastic_nll,
    sed_ensemble,
    spectral_hybrid,
    views_cnn,
)
from steps.models.keras.predictor import KerasClassifierPredictor, KerasRegressionPredictor  # noqa: E402
from steps.models.linear import balanced_weights  # noqa: E402
from steps.models.metrics import regression_metrics  # noqa: E402
from steps.models.transforms import forward_transform  # noqa: E402
from steps.models.splits import classified_rows, classifier_fit_metrics  # noqa: E402

APERIODIC_CLASSES = ("quiet", "constant", "non_variable")
# Teff labels a star can have: a row labelled outside is broken (MILES's m0974 says 23 K) and is not learnt from.
# The spectral model learns from every other star, hot and cool: its kernel is local, so a B star's estimate comes
# from B stars (the linear baseline keeps to `baseline.SPECTRAL_TEFF_RANGE`).
STELLAR_TEFF_RANGE = (2000.0, 60000.0)
# K: the spectral model's means (the closed-form estimate and the network's correction) learn [Fe/H] from stars of at
# most this Teff. Hotter stars have few, weak metal lines at this resolution and their tabulated [Fe/H] is the least
# reliable: on MILES, learning it from them cost the FGK test stars' [Fe/H] 0.143 dex against 0.117 (median of 4
# split seeds), and the correction's learning it 0.1205 against 0.1165 (8 seeds). The uncertainty learns from every
# label, so a hot star's [Fe/H] comes with the uncertainty its labels show (0.5-1.8 dex for MILES B stars).
METALLICITY_TEFF_MAX = 8000.0
# K: where a star's Teff estimate lies in this range, its Teff comes from an estimate fitted on the stars of
# `baseline.SPECTRAL_TEFF_RANGE` alone (`kernel_estimate.TeffGate`; the edges are logistic, TEFF_GATE_EDGE dex).
# Fitted on every star, the Teff estimate's width, penalties and continuum weight follow the hot stars, whose errors
# in log Teff are the largest: on MILES that cost the FGK test stars' Teff 89 K against 84 K (closed-form estimate,
# median of 8 split seeds). Fewer than TEFF_GATE_MIN_ROWS such stars, or no star outside them: no gate.
TEFF_GATE = (3700.0, 7600.0)
TEFF_GATE_EDGE = 0.01
TEFF_GATE_MIN_ROWS = 30
# Light-curve features that vary by factors (log10 when positive): periods, periodogram powers, depths, amplitudes.
SCALE_LIKE = ("period", "power", "depth", "amplitude", "std")


@dataclass(frozen=True)
class Recipe:
    """Optimisation settings of one model."""

    max_epochs: int  # when --epochs is not given
    batch_size: int  # at scale; small training sets use smaller batches (about 8 steps per epoch)
    learning_rate: float
    patience: int  # epochs without a better validation score before stopping
    dropout_copies: int = 0  # SED: extra copies of the training rows with bands dropped
    band_dropout: float = 0.0  # SED: probability that a band is dropped in a copy
    survey_dropout: float = 0.0  # SED: probability that every band of a survey but Gaia is dropped in a copy


RECIPES = {
    "spectral": Recipe(max_epochs=200, batch_size=32, learning_rate=1e-3, patience=20),
    "lightcurve": Recipe(max_epochs=200, batch_size=64, learning_rate=2e-3, patience=20),
    "sed": Recipe(max_epochs=300, batch_size=256, learning_rate=3e-3, patience=25, dropout_copies=3,
                  band_dropout=0.2, survey_dropout=0.3),
}




class _EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of every epoch (validation included)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


class _Score(keras.callbacks.Callback):
    """Adds `score` (lower is better) of the model on held-out rows to each epoch's logs, for early stopping.

    The Gaussian NLL and the cross-entropy themselves make poor stopping criteria: both keep rising on held-out
    rows as the network grows confident about a few outliers, long before its predictions stop improving, and
    the confidence is recalibrated afterwards anyway. So regression stops on the mean over targets of
    log(mean |error|) of the predicted means (scale-free: each target's relative improvement counts alike), and
    classification on the log loss at the best temperature (how well the logits rank, calibration aside).
    """

    def __init__(self, x: dict[str, np.ndarray], y: np.ndarray, score: Callable[[np.ndarray, np.ndarray], float]):
        super().__init__()
        self.x, self.y, self.score = x, y, score

    def on_epoch_end(self, epoch, logs=None):
        outputs = self.model.predict(self.x, batch_size=1024, verbose=0)
        logs["score"] = self.score(np.asarray(outputs, np.float64), self.y)


def regression_score(outputs: np.ndarray, y: np.ndarray) -> float:
    """Mean over targets of log(mean |y - predicted mean|), NaN truths left out (see `_Score`)."""
    n_targets = y.shape[1]
    errors = np.abs(member_moments(outputs, n_targets)[0] - y)
    logs = [math.log(max(float(np.nanmean(errors[:, t])), 1e-12)) for t in range(n_targets)
            if np.isfinite(errors[:, t]).any()]
    return float(np.mean(logs)) if logs else math.inf


def classification_score(logits: np.ndarray, y: np.ndarray) -> float:
    """Log loss at the temperature that minimises it, the bound included (see `_Score`)."""
    return log_loss(logits, y, best_temperature(logits, y))


def _seed(seed: int) -> None:
    keras.backend.clear_session()
    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()


def _batch_size(recipe: Recipe, n_rows: int) -> int:
    return int(min(recipe.batch_size, max(8, n_rows // 8)))


def _fit(model: keras.Model, recipe: Recipe, epochs: int, x: dict[str, np.ndarray], y: np.ndarray,
         held_out: tuple[dict[str, np.ndarray], np.ndarray] | None, score: Callable[[np.ndarray, np.ndarray], float],
         sample_weight: np.ndarray | None = None) -> dict[str, Any]:
    """Fit with early stopping on `score` of the held-out rows (the training rows when there are none), the
    best epoch's weights restored; return the epochs run, the best one, the timings and the history."""
    n = len(y)
    batch = _batch_size(recipe, n)
    monitored_on = "val" if held_out is not None and len(held_out[1]) else "train"
    x_score, y_score = held_out if monitored_on == "val" else (x, y)
    timer = _EpochTimer()
    stopper = keras.callbacks.EarlyStopping(monitor="score", mode="min", patience=recipe.patience,
                                            restore_best_weights=True)
    history = model.fit(x, y, sample_weight=sample_weight, epochs=epochs, batch_size=batch, shuffle=True,
                        verbose=0, callbacks=[_Score(x_score, y_score, score), stopper, timer])
    scores = [v if math.isfinite(v) else math.inf for v in history.history["score"]]
    steady = timer.seconds[1:] or timer.seconds  # the first epoch also traces the graph
    per_epoch = float(np.median(steady))
    return {
        "epochs_max": int(epochs), "epochs_run": len(scores), "best_epoch": int(np.argmin(scores)) + 1,
        "batch_size": batch, "early_stopping": f"{monitored_on} score", "rows_per_epoch": int(n),
        "seconds_total": float(sum(timer.seconds)), "first_epoch_seconds": float(timer.seconds[0]),
        "seconds_per_epoch": per_epoch, "samples_per_second": float(n / per_epoch) if per_epoch > 0 else None,
        "history": {key: [float(v) for v in values] for key, values in history.history.items()},
    }


def variance_score(outputs: np.ndarray, y: np.ndarray) -> float:
    """Mean over targets of the Gaussian NLL with each squared standardised residual capped at 25 (a few
    mislabelled stars cannot decide), NaN truths left out: early stopping of a variance branch."""
    n_targets = y.shape[1]
    mean, log_var = member_moments(outputs, n_targets)
    squares = np.minimum((y - mean) ** 2 * np.exp(-log_var), 25.0)
    terms = 0.5 * (log_var + squares)
    means = [float(np.nanmean(np.where(np.isfinite(y[:, t]), terms[:, t], np.nan)))
             for t in range(n_targets) if np.isfinite(y[:, t]).any()]
    return float(np.mean(means)) if means else math.inf


def _fit_variance(model: keras.Model, names: tuple[str, ...], recipe: Recipe, epochs: int,
                  x: dict[str, np.ndarray], y: np.ndarray,
                  held_out: tuple[dict[str, np.ndarray], np.ndarray] | None) -> dict[str, Any]:
    """Train only the layers `names` (a variance branch) with the Gaussian NLL, the rest frozen, stopping early on
    `variance_score`; return the epochs run and the best one."""
    for layer in model.layers:
        layer.trainable = layer.name in names
    model.compile(optimizer=keras.optimizers.Adam(recipe.learning_rate), loss=gaussian_nll)
    fit = _fit(model, recipe, epochs, x, y, held_out, variance_score)
    return {"variance_epochs_run": fit["epochs_run"], "variance_best_epoch": fit["best_epoch"],
            "variance_seconds_total": fit["seconds_total"]}


def _architecture(model: keras.Model) -> dict[str, Any]:
    layers = [{"name": layer.name, "type": type(layer).__name__, "output": list(layer.output.shape[1:]),
               "parameters": int(layer.count_params())} for layer in model.layers]
    return {"network": model.name, "parameters": int(model.count_params()), "layers": layers}


def _base_info(name: str, encoder: Encoder, model: keras.Model, spec: dict[str, Any], seed: int,
               fit: dict[str, Any], n_train: int, n_val: int, recipe: Recipe) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION, "name": name, "kind": KIND[name], "task": TASK[name],
        "modality": MODALITY[name], "inputs": encoder.fields, "encoder": encoder.config(),
        "feature_columns": encoder.fields["required"] + encoder.fields["optional"],
        "n_outputs": int(model.output.shape[-1]), "architecture": _architecture(model),
        "files": {"keras": KERAS_MODEL, "saved_model": SAVED_MODEL},
        "training": {"trainer": "keras", "seed": int(seed), "epochs": fit["epochs_max"],
                     "epochs_run": fit["epochs_run"], "best_epoch": fit["best_epoch"],
                     "batch_size": fit["batch_size"], "learning_rate": recipe.learning_rate,
                     "patience": recipe.patience, "early_stopping": fit["early_stopping"], "n_train": n_train,
                     "n_val": n_val, "tensorflow": tf.__version__, "keras": keras.__version__,
                     "spec_modality": spec.get("modality")},
    }


def _saver(model: keras.Model):
    def save(directory) -> None:
        """Write `model.keras` and the exported SavedModel into the pending model directory."""
        model.save(directory / KERAS_MODEL)
        model.export(str(directory / SAVED_MODEL), format="tf_saved_model", verbose=False)
    return save


def _graph(model: keras.Model):
    """The in-memory model as a predictor graph (training-time metrics; the saved model serves the same way)."""
    def run(arrays: dict[str, np.ndarray]) -> np.ndarray:
        return model(arrays, training=False).numpy()
    return run


# ------------------------------------------------------------------------------------------------ regression


def _band_dropout(x: dict[str, np.ndarray], y: np.ndarray, block: ScalarInput, bands: list[str], recipe: Recipe,
                  rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The rows plus `dropout_copies` copies in which bands are dropped (values 0, indicators 1) at random: each
    band alone, and every band of a survey but Gaia together, as a star missing from 2MASS or AllWISE has them."""
    if not recipe.dropout_copies or not bands:
        return x, y
    values, missing = x[block.key], x[block.missing_key]
    members = {b: [j for j, c in enumerate(block.columns) if b in band_of(c, bands)] for b in bands}
    surveys = [BANDS[b].survey if b in BANDS else b for b in bands]
    others = sorted(set(surveys) - {"gaia"})
    parts_v, parts_m = [values], [missing]
    for _ in range(recipe.dropout_copies):
        v, m = values.copy(), missing.copy()
        drop = rng.random((len(v), len(bands))) < recipe.band_dropout
        gone = rng.random((len(v), len(others))) < recipe.survey_dropout
        for k, survey in enumerate(surveys):
            if survey in others:
                drop[:, k] |= gone[:, others.index(survey)]
        for k, band in enumerate(bands):
            rows, cols = np.flatnonzero(drop[:, k]), members[band]
            if rows.size and cols:
                v[np.ix_(rows, cols)] = 0.0
                m[np.ix_(rows, cols)] = 1.0
        parts_v.append(v), parts_m.append(m)
    out = dict(x)
    out[block.key], out[block.missing_key] = np.vstack(parts_v), np.vstack(parts_m)
    return out, np.vstack([y] * (recipe.dropout_copies + 1))


def _dropped_band_residuals(model: keras.Model, x: dict[str, np.ndarray], z: np.ndarray, encoder: Encoder,
                            bands: list[str], recipe: Recipe, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(residuals, sigmas) of the validation rows' copies with bands dropped as in training, in the standardised
    space: they join the calibration so that the uncertainty also holds for the photometry users have, where
    2MASS or WISE is often missing."""
    copies, z_copies = _band_dropout(x, z, encoder.inputs[0], bands, recipe, np.random.default_rng(seed + 1))
    rows = slice(len(z), None)  # the copies, without the rows as they are
    mean, log_var = member_moments(np.asarray(model({k: v[rows] for k, v in copies.items()}, training=False)),
                                   z.shape[1])
    return mean - z_copies[rows], np.exp(0.5 * log_var)


def _labels_in(spec: dict[str, Any], train: pa.Table) -> list[str]:
    """The labels a regression learns: those the spec asks for (default `DEFAULT_LABELS`) that the table has."""
    return [label for label in (spec.get("labels") or DEFAULT_LABELS) if label in train.column_names]


def _train_regression(name: str, encoder: Encoder, build, train: pa.Table, val: pa.Table, spec: dict[str, Any],
                      seed: int, epochs: int | None, bands: list[str] | None = None,
                      spectrum_length: int | None = None) -> Trained:
    recipe = RECIPES[name]
    wanted = list(spec.get("labels") or DEFAULT_LABELS)
    labels = _labels_in(spec, train)
    if not labels:
        raise ValueError(f"{name}: the training table has none of the labels {wanted}")
    transforms = {t: TARGET_TRANSFORMS[t] for t in labels if t in TARGET_TRANSFORMS}

    def targets(cols: Columns) -> np.ndarray:
        return np.column_stack([forward_transform(transforms.get(t), cols.scalar(t)) for t in labels])

    ct, cv = Columns(train), Columns(val)
    y_all = targets(ct)
    labelled = np.isfinite(y_all).any(axis=1)
    if labelled.sum() < 3:
        raise ValueError(f"{name}: {int(labelled.sum())} training rows with a label; at least 3 are needed")
    ct = Columns(train.filter(pa.array(labelled)))
    encoder.fit(ct)
    y_train = y_all[labelled]
    y_mean = np.array([np.nanmean(y_train[:, t]) for t in range(len(labels))])
    y_std = np.array([np.nanstd(y_train[:, t]) for t in range(len(labels))])
    y_std = np.where(np.isfinite(y_std) & (y_std > 1e-12), y_std, 1.0)
    x_train, z_train = encoder.transform(ct), ((y_train - y_mean) / y_std).astype(np.float32)
    x_val = z_val = None
    if cv.n:
        x_val, z_val = encoder.transform(cv), ((targets(cv) - y_mean) / y_std).astype(np.float32)
    _seed(seed)
    if bands is not None:
        x_train, z_train = _band_dropout(x_train, z_train, encoder.inputs[0], bands, recipe,
                                         np.random.default_rng(seed))
    net = build(encoder.shapes, labels, x_train, z_train, (y_mean, y_std))
    # the domain: the training rows the network learns from (no label outliers), without the SED model's copies
    # with bands dropped (near-duplicates of their rows, they would shrink the leave-one-out distances)
    values, bad = encoder.flat(x_train)
    learnt = net.rows[net.rows < ct.n]
    domain = Domain.fit(values[learnt], bad[learnt], weights=net.input_weights, seed=seed)
    if spectrum_length:
        domain.residual = SpectrumResidual.fit(Columns(train.filter(pa.array(labelled)).take(pa.array(learnt))),
                                               spectrum_length, seed)
    net.training.compile(optimizer=keras.optimizers.Adam(recipe.learning_rate), loss=net.loss)
    held_out = (net.held_out_inputs(x_val), z_val) if x_val is not None else None
    # the means learn from the labels the network trusts; the uncertainty, trained after them, from every label
    fit = _fit(net.training, recipe, epochs or recipe.max_epochs, net.fit_inputs(x_train),
               net.mean_targets(z_train[net.rows]),
               (held_out[0], net.mean_targets(held_out[1])) if held_out else None, regression_score)
    if net.variance_layers:
        fit.update(_fit_variance(net.training, net.variance_layers, recipe, epochs or recipe.max_epochs,
                                 net.fit_inputs(x_train), z_train[net.rows], held_out))
    model = net.serving

    info = _base_info(name, encoder, model, spec, seed, fit, ct.n, cv.n, recipe)
    info.update({"targets": labels, "target_transforms": transforms,
                 "target_scaling": {"mean": y_mean.tolist(), "std": y_std.tolist()},
                 "calibration": {"sigma_scale": {t: 1.0 for t in labels}}, "domain": domain.record()})
    info["training"].update(net.record)
    info["training"].update({key: value for key, value in fit.items() if key.startswith("variance_")})
    predictor = KerasRegressionPredictor(None, info, spec, _graph(model))
    sets: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # calibration set -> (residuals, predicted sigmas)
    if cv.n:
        mean, sigma = predictor.fitted_space(cv)
        sets["val"] = (mean - targets(cv), sigma)
        if bands is not None:
            sets["val, bands dropped"] = _dropped_band_residuals(model, x_val, z_val, encoder, bands, recipe, seed)
    if net.out_of_sample_fit or not cv.n:
        out = np.asarray(net.training.predict(net.fit_inputs(x_train), batch_size=1024, verbose=0), np.float64)
        mean, log_var = member_moments(out, len(labels))
        sets["train" if net.out_of_sample_fit else "train (no validation rows)"] = (
            mean - z_train[net.rows], np.exp(0.5 * log_var))
    info["calibration"] = _sigma_scales(sets, labels)
    predictor = KerasRegressionPredictor(None, info, spec, _graph(model), domain=domain)
    metrics: dict[str, Any] = {"model": name, "kind": KIND[name], "training": {**fit, **net.record},
                               "calibration": info["calibration"]}
    for split, table in (("train", train), ("val", val)):
        if table.num_rows:
            pred = predictor.predict_table(table)
            metrics[split] = {t: regression_metrics(Columns(table).scalar(t), pred[t], pred[f"{t}_err"])
                              for t in labels}
    return Trained(info, domain.arrays(), metrics, save=_saver(model))


def _sigma_scales(sets: dict[str, tuple[np.ndarray, np.ndarray]], labels: list[str]) -> dict[str, Any]:
    """The calibration record: per target, the scale of the predicted sigma (`calibration.sigma_scale`) over the
    (residuals, sigmas) of every set pooled row by row, and each set's own scale and row count. Within a set the
    two are in one space; the scale depends only on their ratio, so sets in different spaces pool.

    Why the spectral model's training rows count: their inputs are the closed-form estimate's out-of-sample values,
    so their residuals are nearly out of sample (only the small correction and variance layers saw them). The 40-60
    validation stars of a MILES split alone are too few: over 8 split seeds, the scale that the FGK test stars
    asked for differed from the validation scale by 0.24 in log (RMS over labels and seeds), from the training
    rows' by 0.14.
    """
    record: dict[str, Any] = {"sigma_scale": {}, "rule": "median |res/sigma| = 0.6745 per target",
                              "split": " + ".join(sets), "rows": {name: len(r) for name, (r, _) in sets.items()},
                              "by_split": {name: {} for name in sets}}
    for i, target in enumerate(labels):
        for name, (residual, sigma) in sets.items():
            record["by_split"][name][target] = sigma_scale(residual[:, i], sigma[:, i])
        record["sigma_scale"][target] = sigma_scale(np.concatenate([r[:, i] for r, _ in sets.values()]),
                                                    np.concatenate([s[:, i] for _, s in sets.values()]))
    return record


def _every_label(z: np.ndarray) -> np.ndarray:
    """The targets as they are: a network's means learn from every label unless it says otherwise."""
    return z


@dataclass
class _Network:
    """A regression network to train: the model to serve, the model to fit (the same one unless the network
    takes training-only inputs), the training rows it is fitted on, and what to record about its set-up."""

    serving: keras.Model
    training: keras.Model
    rows: np.ndarray  # indices of the training rows fitted
    # True where the training model's inputs on its fitted rows are out-of-sample estimates (they did not see the
    # row's labels), so that its residuals there measure its error on new rows well enough to calibrate on
    out_of_sample_fit: bool = False
    extra: Callable[[dict[str, np.ndarray], bool], dict[str, np.ndarray]] = lambda x, fitted: {}
    record: dict[str, Any] = field(default_factory=dict)
    variance_layers: tuple[str, ...] = ()  # trained once more, alone, after the means (see `_fit_variance`)
    # per entry of `Encoder.flat`, the weight the network gives it, for the domain check (None: all alike)
    input_weights: np.ndarray | None = None
    # the standardised targets its means learn from, given them all (its uncertainty learns from them all)
    mean_targets: Callable[[np.ndarray], np.ndarray] = _every_label
    loss: Callable = heteroscedastic_nll

    def fit_inputs(self, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The training model's inputs for the fitted training rows."""
        rows = {key: value[self.rows] for key, value in x.items()}
        return {**rows, **self.extra(rows, True)}

    def held_out_inputs(self, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The training model's inputs for held-out rows."""
        return {**x, **self.extra(x, False)}


def _plain(build, loss: Callable = heteroscedastic_nll):
    """A builder of a network that is served as it is trained, on every training row (`make` is given the
    inputs, the standardised targets and their (mean, std), as every builder is)."""
    def make(shapes, labels, x, z, scaling) -> _Network:
        model = build(shapes, len(labels))
        return _Network(model, model, np.arange(len(z)), loss=loss)
    return make


def _standardised_teff(kelvin: float, mean: float, std: float) -> float:
    """A Teff in the standardised fitted space of the targets, to their float32 precision (a star of exactly a limit's
    Teff compares equal to it)."""
    return float(np.float32((forward_transform(TARGET_TRANSFORMS.get("teff"), np.array([kelvin]))[0] - mean) / std))


def _without_hot_metallicity(z: np.ndarray, teff_column: int, teff_max: float, column: int) -> np.ndarray:
    """Standardised targets with the [Fe/H] (`column`) of stars whose Teff is above `teff_max` unknown (a row without
    a Teff keeps its [Fe/H]: nothing says it is hot)."""
    out = z.copy()
    out[z[:, teff_column] > teff_max, column] = np.nan
    return out


def _teff_gate(teff: np.ndarray, to_z: Callable[[float], float],
               edge: float) -> tuple[np.ndarray, float, float, float] | None:
    """The `kernel_estimate.fit_spectral_estimate` gate for training rows of standardised Teff `teff`: (the rows in
    `SPECTRAL_TEFF_RANGE`, `TEFF_GATE` standardised, `edge`); None with fewer than TEFF_GATE_MIN_ROWS such rows or
    none outside them (the estimate of its own is then fitted on them already)."""
    narrow = (teff >= to_z(SPECTRAL_TEFF_RANGE[0])) & (teff <= to_z(SPECTRAL_TEFF_RANGE[1]))
    if not TEFF_GATE_MIN_ROWS <= narrow.sum() < np.isfinite(teff).sum():
        return None
    return narrow, to_z(TEFF_GATE[0]), to_z(TEFF_GATE[1]), edge


def _spectral_network(shapes, labels, x, z, scaling: tuple[np.ndarray, np.ndarray],
                      window: dict[str, np.ndarray] | None = None) -> _Network:
    """The kernel-started hybrid (see the module docstring): the closed-form estimate (`kernel_estimate`), then the
    network around it, its correction trained on the estimate's out-of-sample values, both learning [Fe/H] from
    stars of at most METALLICITY_TEFF_MAX; [Fe/H] from the entries in `window` (`kernel_estimate.metallicity_window`)
    where there is one, the only estimate that sees a `LOCAL_INPUT`; Teff gated (`TEFF_GATE`). `scaling`: the
    (mean, std) that standardised `z`."""
    window_labels = tuple(labels.index(label) for label in ("feh",) if label in labels)
    trusted, gate, set_aside = _every_label, None, None
    if "teff" in labels:
        column = labels.index("teff")
        to_z = functools.partial(_standardised_teff, mean=scaling[0][column], std=scaling[1][column])
        if "feh" in labels:
            teff_max = to_z(METALLICITY_TEFF_MAX)
            trusted = functools.partial(_without_hot_metallicity, teff_column=column, teff_max=teff_max,
                                        column=labels.index("feh"))
            set_aside = int((z[:, column] > teff_max).sum())
            z = trusted(z)
        if column == 0:  # the first label has an estimate of its own, which the gate can replace
            gate = _teff_gate(z[:, 0], to_z, TEFF_GATE_EDGE / scaling[1][0])
    estimate = fit_spectral_estimate({key: x[key] for key in shapes}, z, window_labels, window, gate,
                                     window_inputs=tuple(key for key in (LOCAL_INPUT,) if key in shapes))
    if any(part.estimate.record.get("entries_seen") for part in estimate.parts):
        estimate.record["metallicity_window_from_angstrom"] = METALLICITY_WINDOW_START
    if set_aside is not None:
        estimate.record["metallicity_labels"] = {"teff_max": METALLICITY_TEFF_MAX, "set_aside": set_aside}
    if estimate.gate:
        estimate.record["teff_gate"] = {"teff_k": list(TEFF_GATE), "edge_dex": TEFF_GATE_EDGE,
                                        "fitted_on_teff_k": list(SPECTRAL_TEFF_RANGE), **estimate.record["teff_gate"]}
    serving, training = spectral_hybrid(shapes, len(labels), estimate.network_parts(),
                                        gate=estimate.gate.network() if estimate.gate else None)

    def extra(inputs: dict[str, np.ndarray], fitted: bool) -> dict[str, np.ndarray]:
        values = estimate.out_of_sample if fitted else estimate.predict(inputs)
        return {"estimate": values.astype(np.float32)}

    return _Network(serving, training, estimate.rows, out_of_sample_fit=True, extra=extra, record=estimate.record,
                    variance_layers=VARIANCE_LAYERS, mean_targets=trusted,
                    input_weights=np.max([part.estimate.scale for part in estimate.parts]
                                         + ([estimate.gate.estimate.scale] if estimate.gate else []), axis=0))


def _train_spectral(train: pa.Table, val: pa.Table, spec: dict[str, Any], seed: int,
                    epochs: int | None) -> Trained:
    length = _vector_length(spec, ("grid.length", "length"), train, "flux")
    inputs = [VectorInput("flux", length, key="spectrum", mask_column="mask", ivar_column="ivar",
                          mask_channel=True, clip=(-1.0, 3.0))]
    if "continuum_shape" in train.column_names:
        blocks = _vector_length(spec, ("continuum_blocks",), train, "continuum_shape")
        inputs.append(VectorInput("continuum_shape", blocks, key="continuum", mask_channel=True, clip=(-3.0, 3.0),
                                  optional=True))
    pixels = local_continuum_pixels(spec.get("grid"))
    labels = _labels_in(spec, train)
    windowed = metallicity_window(spec.get("grid"), {**Encoder(inputs).shapes, LOCAL_INPUT: (length, 2)}) is not None
    if pixels and windowed and "feh" in labels and len(labels) > 1:
        # [Fe/H]'s estimate sees the flux against its local pseudo-continuum (`kernel_estimate.LOCAL_INPUT`)
        inputs.append(VectorInput("flux", length, key=LOCAL_INPUT, mask_column="mask", ivar_column="ivar",
                                  mask_channel=True, clip=(-1.0, 3.0), local_continuum=pixels))
    encoder = Encoder(inputs)
    network = functools.partial(_spectral_network, window=metallicity_window(spec.get("grid"), encoder.shapes))
    trained = _train_regression("spectral", encoder, network, in_teff_range(train, STELLAR_TEFF_RANGE),
                                in_teff_range(val, STELLAR_TEFF_RANGE), spec, seed, epochs, spectrum_length=length)
    trained.info["training"]["teff_range"] = list(STELLAR_TEFF_RANGE)
    return trained


def _train_sed(train: pa.Table, val: pa.Table, spec: dict[str, Any], seed: int, epochs: int | None) -> Trained:
    # Not the saturation flags that the ridge reads: with them, on the Gaia benchmark stars (4 splits), Teff 100.8 K
    # and log g 0.154 dex with every band, against 91.3 K and 0.115 without (bench/results/sed_quality.md).
    columns = [c for c in sed_feature_columns(spec, train, errors=True) if not c.startswith("saturated_")]
    bands = list(spec.get("bands") or [c[4:] for c in columns if c.startswith("mag_")])
    encoder = Encoder([ScalarInput(columns, "photometry", require_any=True, all_indicators=True,
                                   log_columns=[c for c in columns if measurement_error(c)])])
    return _train_regression("sed", encoder, _plain(sed_ensemble, ensemble_nll), train, val, spec, seed, epochs,
                             bands=bands)


# ------------------------------------------------------------------------------------------- classification


def _train_lightcurve(train: pa.Table, val: pa.Table, spec: dict[str, Any], seed: int,
                      epochs: int | None) -> Trained:
    recipe = RECIPES["lightcurve"]
    classes, train_kept, val_kept, y_train, y_val = classified_rows("lightcurve", train, val, spec)
    global_length = _vector_length(spec, ("global_length",), train, "global_view")
    local_length = _vector_length(spec, ("local_length",), train, "local_view")
    scalars = [c for c in _feature_columns(spec, train, lambda c: c not in ("global_view", "local_view"))
               if c not in ("global_view", "local_view")]
    encoder = Encoder([VectorInput("global_view", global_length), VectorInput("local_view", local_length),
                       ScalarInput(scalars, "scalars", log_columns=[c for c in scalars if c.endswith(SCALE_LIKE)])])
    ct, cv = Columns(train_kept), Columns(val_kept)
    encoder.fit(ct)
    w_train = balanced_weights(y_train, len(classes)).astype(np.float32)
    x_train = encoder.transform(ct)
    domain = Domain.fit(*encoder.flat(x_train), seed=seed)
    domain.period = PeriodRange.fit(ct.scalar("period"))
    x_val = encoder.transform(cv) if cv.n else None
    _seed(seed)
    model = views_cnn(encoder.shapes, len(classes))
    model.compile(optimizer=keras.optimizers.Adam(recipe.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    fit = _fit(model, recipe, epochs or recipe.max_epochs, x_train, y_train,
               (x_val, y_val) if x_val is not None else None, classification_score, sample_weight=w_train)

    info = _base_info("lightcurve", encoder, model, spec, seed, fit, ct.n, cv.n, recipe)
    info.update({"classes": classes, "label_column": "class", "period_column": "period",
                 "aperiodic_classes": [c for c in classes if c in APERIODIC_CLASSES],
                 "class_weights": "balanced", "calibration": {"temperature": 1.0}, "domain": domain.record()})
    if "period" not in info["inputs"]["optional"]:
        info["inputs"]["optional"].append("period")
    predictor = KerasClassifierPredictor(None, info, spec, _graph(model))
    calib_cols, calib_y = (cv, y_val) if cv.n else (ct, y_train)
    logits = predictor.outputs(calib_cols)
    temperature = fit_temperature(logits, calib_y)
    before, after = softmax(logits), softmax(logits, temperature)
    correct = before.argmax(axis=1) == calib_y
    info["calibration"] = {
        "temperature": temperature, "method": "temperature scaling (validation log loss)",
        "split": "val" if cv.n else "train (no validation rows)",
        "ece_before": expected_calibration_error(before, correct),
        "ece_after": expected_calibration_error(after, correct),
        "log_loss_before": log_loss(logits, calib_y), "log_loss_after": log_loss(logits, calib_y, temperature)}
    if correct.all():
        info["calibration"]["note"] = ("every calibration object is classified correctly: the log loss has no minimum, "
                                       "so the temperature stays 1")
    predictor = KerasClassifierPredictor(None, info, spec, _graph(model), domain=domain)
    metrics: dict[str, Any] = {"model": "lightcurve", "kind": KIND["lightcurve"], "training": fit,
                               "calibration": info["calibration"],
                               **classifier_fit_metrics(predictor.predict_proba, classes,
                                                        {"train": (train, train_kept), "val": (val, val_kept)})}
    return Trained(info, domain.arrays(), metrics, save=_saver(model))


TRAINERS = {"spectral": _train_spectral, "sed": _train_sed, "lightcurve": _train_lightcurve}


def train_keras(name: str, train: pa.Table, val: pa.Table, spec: dict[str, Any], seed: int = 0,
                epochs: int | None = None) -> Trained:
    """Fit the Keras model `name` on the training table, early-stopped and calibrated on the validation table.

    `epochs` caps the epochs (early stopping may end sooner); None uses the model's default cap.
    """
    if name not in TRAINERS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(TRAINERS)}")
    if train.num_rows < 3:
        raise ValueError(f"{name}: {train.num_rows} training rows; at least 3 are needed")
    return TRAINERS[name](train, val, spec, seed, epochs)
