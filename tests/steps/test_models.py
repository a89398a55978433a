"""The model package: estimators, metrics, the baselines against the null predictor, the Predictor API."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from steps.ingest.bands import GAIA_BANDS, band_of, gaia_bands_only
from steps.models import ClassifierPredictor, RegressionPredictor, load_model, null_for, train_baseline
from steps.models.io import load_npz, save_npz
from steps.models.linear import (KernelRidgeFit, RidgeMoments, balanced_weights, fit_softmax, kernel_ridge, ridge,
                                 softmax)
from steps.models.metrics import classification_metrics, regression_metrics, roc_auc
from split_fixtures import with_foreign_line, write_split
from steps.train import train_from_split

MODALITY = {"spectral": "spectra", "lightcurve": "lightcurves", "sed": "photometry"}


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    return write_split(tmp_path_factory.mktemp("split") / "split", n=300, seed=7)


@pytest.fixture(scope="module")
def models(split, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {name: train_from_split(name, split, root / name, trainer="baseline") for name in MODALITY}


def _tables(split: Path, name: str):
    folder = split / MODALITY[name]
    return ({part: pq.read_table(folder / f"{part}.parquet") for part in ("train", "val", "test")},
            json.loads((folder / "spec.json").read_text()))


# ------------------------------------------------------------------------------------------- estimators


def test_ridge_recovers_a_known_linear_relation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5))
    w_true, b_true = np.array([1.5, -2.0, 0.0, 0.7, 3.0]), 4.0
    y = x @ w_true + b_true + rng.normal(scale=0.01, size=400)
    fit = ridge(x[:300], y[:300], x[300:], y[300:][:, None], alphas=(1e-6, 1e-3, 1.0, 100.0))
    np.testing.assert_allclose(fit.coef[:, 0], w_true, atol=0.01)
    assert abs(fit.intercept[0] - b_true) < 0.01
    assert fit.alpha[0] <= 1.0  # the heavy penalty would bias the slopes: validation must reject it
    # leave-one-out residuals are honest: about the noise level, not zero
    assert 0.005 < np.std(fit.loo_residuals) < 0.02


def test_ridge_prefers_a_strong_penalty_when_the_target_is_noise():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(200, 30)), rng.normal(size=(200, 1))
    fit = ridge(x[:150], y[:150], x[150:], y[150:], alphas=(1e-4, 1.0, 1e4))
    assert fit.alpha[0] == 1e4


def test_ridge_moments_refit_any_subset_of_features_as_ridge_would():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 6))
    y = np.column_stack([x @ rng.normal(size=6) + rng.normal(scale=0.1, size=300), rng.normal(size=300)])
    y[::7, 1] = np.nan  # a target unknown for some rows is fitted on the others
    alphas = (3.0, 30.0)
    moments = RidgeMoments.of(x, y, np.array(alphas))
    keep = np.array([True, False, True, True, False, True])
    for chosen in (np.ones(6, bool), keep):
        coef, intercept, ratio = moments.subset(chosen)
        for t, alpha in enumerate(alphas):
            direct = ridge(x[:, chosen], y[:, t], alphas=(alpha,))
            np.testing.assert_allclose(coef[:, t], direct.coef[:, 0], atol=1e-10)
            np.testing.assert_allclose(intercept[t], direct.intercept[0], atol=1e-10)
    assert ratio[0] > 1.5  # two informative features gone: the first target's training residuals grow
    restored = RidgeMoments.restore(moments.arrays())
    np.testing.assert_array_equal(restored.subset(keep)[0], moments.subset(keep)[0])


def test_kernel_ridge_leave_one_out_residuals_equal_refits_without_the_row():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 3))
    y = np.column_stack([np.sin(2 * x[:, 0]) + 0.05 * rng.normal(size=30), x[:, 1] * x[:, 2]])
    y[4, 1] = np.nan
    fit = kernel_ridge(x, y, gammas=(1.0,), alphas=(0.1,))
    for row in (0, 7, 29):
        keep = np.arange(30) != row
        refit = KernelRidgeFit(x[keep], np.zeros((29, 2)), np.zeros(2), fit.scale, fit.width, 1.0, fit.alpha,
                               np.zeros((29, 2)))
        for t in range(2):
            rows = keep & np.isfinite(y[:, t])
            gram = refit.kernel(x[rows])[:, np.flatnonzero(rows[keep])]
            mean = fit.intercept[t]  # the closed form holds the intercept (the mean of every known row)
            dual = np.linalg.solve(gram + 0.1 * np.eye(rows.sum()), y[rows, t] - mean)
            loo = y[row, t] - (refit.kernel(x[[row]])[:, np.flatnonzero(rows[keep])] @ dual + mean)[0]
            assert fit.loo_residuals[row, t] == pytest.approx(loo, rel=1e-6, abs=1e-9)
    assert np.isnan(fit.loo_residuals[4, 1]) and fit.dual[4, 1] == 0.0


def test_kernel_ridge_fits_a_nonlinear_relation_that_ridge_cannot():
    rng = np.random.default_rng(3)
    x = rng.uniform(-2, 2, size=(300, 2))
    y = np.sin(2 * x[:, :1]) * np.cos(x[:, 1:]) + 0.02 * rng.normal(size=(300, 1))
    kernel = kernel_ridge(x[:200], y[:200])
    linear = ridge(x[:200], y[:200])
    kernel_error = np.sqrt(np.mean((kernel.predict(x[200:]) - y[200:]) ** 2))
    linear_error = np.sqrt(np.mean((x[200:] @ linear.coef + linear.intercept - y[200:]) ** 2))
    assert kernel_error < 0.3 * linear_error
    assert kernel.scores["gammas"] == [0.5, 1.0, 2.0, 4.0] and len(kernel.scores["loo_rmse"]) == 4


def test_kernel_ridge_can_choose_by_the_robust_sigma_of_its_leave_one_out_residuals():
    from steps.core.statistics import robust_sigma

    rng = np.random.default_rng(4)
    x = rng.uniform(-2, 2, size=(200, 2))
    y = np.sin(2 * x[:, 0]) + 0.02 * rng.normal(size=200)
    y[::10] += rng.choice([-8.0, 8.0], size=20)  # one row in ten with a wrong label
    by_rmse, by_core = kernel_ridge(x, y), kernel_ridge(x, y, criterion="robust_sigma")
    assert "loo_robust_sigma" in by_core.scores and "loo_rmse" not in by_core.scores
    assert robust_sigma(by_core.loo_residuals[:, 0]) < robust_sigma(by_rmse.loo_residuals[:, 0])
    with pytest.raises(ValueError, match="criterion 'mae'"):
        kernel_ridge(x, y, criterion="mae")


def test_softmax_separates_separable_classes():
    rng = np.random.default_rng(2)
    centres = np.array([[0.0, 5.0], [5.0, -5.0], [-5.0, -5.0]])
    y = np.repeat(np.arange(3), 50)
    x = centres[y] + rng.normal(scale=0.5, size=(150, 2))
    fit = fit_softmax(x, y, 3, lam=1e-3, sample_weight=balanced_weights(y, 3))
    assert fit.converged
    proba = softmax(x @ fit.coef + fit.intercept)
    assert (proba.argmax(axis=1) == y).all()
    assert proba[np.arange(150), y].min() > 0.9


def test_roc_auc_from_ranks_matches_the_pairwise_definition_with_ties():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    positive = rng.random(60) < 0.4
    pairs = [(s_p > s_n) + 0.5 * (s_p == s_n) for s_p in scores[positive] for s_n in scores[~positive]]
    assert roc_auc(scores, positive) == pytest.approx(np.mean(pairs))
    assert np.isnan(roc_auc(scores, np.ones(60, bool)))


def test_regression_metrics_on_known_residuals():
    truth = np.zeros(8)
    pred = np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, 100.0])
    m = regression_metrics(np.append(truth, [np.nan, 0.0]), np.append(pred, [5.0, np.nan]),
                           np.full(10, 1.0))
    assert m["n"] == 8 and m["n_missing"] == 1
    assert m["robust_sigma"] == pytest.approx(1.4826 * 1.0)  # median residual 1, MAD 1
    assert m["outlier_fraction"] == pytest.approx(1 / 8)
    assert m["coverage_68"] == pytest.approx(7 / 8)
    assert m["rmse"] == pytest.approx(np.sqrt((7 + 100 ** 2) / 8))


def test_classification_metrics_confusion_and_balance():
    classes = ["a", "b"]
    truth = np.array(["a"] * 8 + ["b"] * 2, dtype=object)
    proba = np.array([[0.9, 0.1]] * 8 + [[0.8, 0.2], [0.3, 0.7]])
    m = classification_metrics(truth, proba, classes)
    assert m["accuracy"] == pytest.approx(0.9)
    assert m["balanced_accuracy"] == pytest.approx((1.0 + 0.5) / 2)
    assert m["confusion"] == {"labels": ["a", "b"], "matrix": [[8, 0], [1, 1]]}
    assert m["log_loss"] == pytest.approx(-(8 * np.log(0.9) + np.log(0.2) + np.log(0.7)) / 10)


def test_evaluation_intervals_bracket_the_figure_as_wide_as_its_sampling_scatter():
    """A robust sigma of 70 residuals moves by about 8% between draws of 70 stars (the FGK test stars of a MILES
    split): the interval says so, reproducibly, and only where evaluation asks for it."""
    rng = np.random.default_rng(1)
    truth, pred = np.zeros(70), rng.normal(0.0, 100.0, 70)
    m = regression_metrics(truth, pred, intervals=True)
    low, high = m["robust_sigma_interval"]
    assert low < m["robust_sigma"] < high and 0.08 < (high - low) / 2 / m["robust_sigma"] < 0.2
    assert m["rmse_interval"][0] < m["rmse"] < m["rmse_interval"][1]
    assert regression_metrics(truth, pred, intervals=True) == m
    assert "robust_sigma_interval" not in regression_metrics(truth, pred)
    draws = [regression_metrics(truth, rng.normal(0.0, 100.0, 70))["robust_sigma"] for _ in range(400)]
    assert np.percentile(draws, 84) - np.percentile(draws, 16) == pytest.approx(high - low, rel=0.35)
    classes = ["a", "b"]
    truth = np.array(["a"] * 80 + ["b"] * 20, dtype=object)
    proba = np.array([[0.9, 0.1]] * 80 + [[0.8, 0.2]] * 4 + [[0.3, 0.7]] * 16)
    c = classification_metrics(truth, proba, classes, intervals=True)
    assert c["balanced_accuracy"] == pytest.approx(0.9)
    low, high = c["balanced_accuracy_interval"]
    assert low < 0.9 < high and 0.02 < high - low < 0.12


def test_weights_file_bytes_depend_only_on_the_arrays(tmp_path):
    arrays = {"b": np.arange(5.0), "a": np.eye(3, dtype=np.float32)}
    save_npz(tmp_path / "one.npz", arrays)
    time.sleep(1.1)  # a zip timestamp would differ now
    save_npz(tmp_path / "two.npz", dict(reversed(list(arrays.items()))))
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "two.npz").read_bytes()
    loaded = load_npz(tmp_path / "one.npz")
    np.testing.assert_array_equal(loaded["a"], arrays["a"])
    assert loaded["a"].dtype == np.float32


# --------------------------------------------------------------------------------------------- baselines


@pytest.mark.parametrize("name", ["spectral", "sed"])
def test_regression_baseline_beats_the_null_predictor(split, models, name):
    tables, _ = _tables(split, name)
    model = load_model(models[name])
    assert isinstance(model, RegressionPredictor) and model.targets == ["teff", "logg", "feh"]
    pred = model.predict_table(tables["test"])
    null = null_for(model, tables["train"]).predict_table(tables["test"])
    for target in model.targets:
        truth = tables["test"][target].to_numpy()
        ours = regression_metrics(truth, pred[target], pred[f"{target}_err"])
        base = regression_metrics(truth, null[target], null[f"{target}_err"])
        assert ours["robust_sigma"] < 0.5 * base["robust_sigma"], (target, ours, base)
        assert 0.45 <= ours["coverage_68"] <= 0.9, (target, ours)  # uncertainties roughly calibrated
        assert ours["coverage_95"] >= 0.8, (target, ours)
    assert (pred["teff_err"] > 0).all()


def test_spectral_uncertainty_grows_as_the_signal_to_noise_falls(models):
    model = load_model(models["spectral"])
    assert model.uncertainty["teff"]["kind"] == "snr"
    flux = [1.0] * model.featurizer.blocks[0].length
    low, high = model.predict_records([{"flux": flux, "snr": 5.0}, {"flux": flux, "snr": 200.0}])
    assert low["teff_err"] > high["teff_err"] > 0


def test_lightcurve_baseline_classifies_and_passes_the_period_through(split, models):
    tables, spec = _tables(split, "lightcurve")
    model = load_model(models["lightcurve"])
    assert isinstance(model, ClassifierPredictor) and model.classes == spec["classes"]
    pred = model.predict_table(tables["test"])
    assert list(pred.columns) == ["id", "class"] + [f"p_{c}" for c in model.classes] + ["period", "domain_distance",
                                                                                     "in_domain"]
    np.testing.assert_allclose(pred[[f"p_{c}" for c in model.classes]].sum(axis=1), 1.0)
    np.testing.assert_array_equal(pred["period"], tables["test"]["period"].to_numpy())
    truth = tables["test"]["class"].to_numpy(zero_copy_only=False)
    m = classification_metrics(truth, pred[[f"p_{c}" for c in model.classes]].to_numpy(), model.classes)
    prior = null_for(model, tables["train"]).predict_table(tables["test"])
    m_null = classification_metrics(truth, prior[[f"p_{c}" for c in model.classes]].to_numpy(), model.classes)
    assert m["balanced_accuracy"] > 0.8 > m_null["balanced_accuracy"]
    assert m["roc_auc_macro"] > 0.9 and m_null["roc_auc_macro"] == pytest.approx(0.5)


def test_baseline_on_pure_noise_is_no_better_than_null(tmp_path):
    noise = write_split(tmp_path / "noise", n=300, seed=8, noise=True)
    tables, spec = _tables(noise, "sed")
    trained = train_baseline("sed", tables["train"], tables["val"], spec)
    model = RegressionPredictor(None, trained.info, spec, trained.arrays)
    pred = model.predict_table(tables["test"])
    null = null_for(model, tables["train"]).predict_table(tables["test"])
    truth = tables["test"]["teff"].to_numpy()
    assert regression_metrics(truth, pred["teff"])["robust_sigma"] > 0.8 * regression_metrics(
        truth, null["teff"])["robust_sigma"]



def test_sed_baseline_estimate_does_not_move_with_the_photometric_errors(split):
    """The errors say how well a star was measured, not what it is: the ridge must not read them (spec.json lists
    them among the features, as preprocessing writes it)."""
    tables, spec = _tables(split, "sed")
    errors = [c for c in tables["train"].column_names if c.startswith("err_")] + ["parallax_error"]
    spec = {**spec, "features": spec["features"] + errors}
    trained = train_baseline("sed", tables["train"], tables["val"], spec)
    assert not set(errors) & set(trained.info["feature_names"])
    model = RegressionPredictor(None, trained.info, spec, trained.arrays)
    test = tables["test"]
    worse = test
    for column in errors:
        worse = worse.set_column(worse.column_names.index(column), column, pc.multiply(test[column], 10.0))
    np.testing.assert_array_equal(model.predict_table(worse)["teff"], model.predict_table(test)["teff"])


def _without_band(table: pa.Table, band: str, bands: list[str], codes: list[int]) -> pa.Table:
    """`table` with `band` unusable in every row, as preprocessing leaves it: NaN in every column of the band, and
    the reason, `codes[i]` for row i, in `mask_<band>`."""
    for column in [c for c in table.column_names if band in band_of(c, bands)]:
        table = table.set_column(table.column_names.index(column), column,
                                 pa.array(np.full(len(table), np.nan), table[column].type))
    return table.set_column(table.column_names.index(f"mask_{band}"), f"mask_{band}", pa.array(codes, pa.uint8()))


def test_sed_baseline_answers_a_missing_band_alike_whatever_made_it_unusable(split):
    """Preprocessing says why a band is unusable in `mask_<band>` (missing 1, bad error 2, saturated 4, placeholder
    8) and leaves the magnitude NaN. What the catalogue did (no measurement, a bad error, a placeholder) must not
    change the answer (a ridge that read the codes put one star at 3,716 K with J absent and at 4,662 K with J a
    placeholder); a saturated band says the star is bright, and is a feature of its own (`saturated_<band>`)."""
    tables, spec = _tables(split, "sed")
    bands = spec["bands"]
    masks = [f"mask_{band}" for band in bands]
    train = tables["train"]
    some = train.slice(0, 60)  # a fifth of the training stars without J, for one reason or another
    train = pa.concat_tables([_without_band(some, "J", bands, [1, 8, 2] * 20), train.slice(60)])
    spec = {**spec, "features": [c for c in spec["features"] if c not in masks] + masks}
    trained = train_baseline("sed", train, tables["val"], spec)
    assert not any(name.startswith("mask_") for name in trained.info["feature_names"])
    model = RegressionPredictor(None, trained.info, spec, trained.arrays)
    test = tables["test"].slice(0, 8)
    answers = [model.predict_table(_without_band(test, "J", bands, [code] * len(test))) for code in (1, 2, 8)]
    for other in answers[1:]:
        np.testing.assert_array_equal(other["teff"], answers[0]["teff"])
        np.testing.assert_array_equal(other["teff_err"], answers[0]["teff_err"])


def _complete_sed_rows(split: Path):
    """The fixture's photometry train, val and test rows that have every feature, and the spec."""
    tables, spec = _tables(split, "sed")
    return [t.filter(np.isfinite(t.select(spec["features"]).to_pandas().to_numpy(float)).all(axis=1))
            for t in (tables["train"], tables["val"], tables["test"])], spec


def test_sed_baseline_answers_for_missing_bands_from_the_bands_it_has(split):
    """Trained on stars with every band, asked about stars with Gaia's alone (most Gaia stars): the ridge refitted
    on the bands a star has stays close to its every-band accuracy, with a wider uncertainty; the full ridge with
    the other bands imputed extrapolates (before the refit, `make run`'s ridge put half its test stars hundreds of
    kelvin off when they had Gaia's bands alone)."""
    (train, val, test), spec = _complete_sed_rows(split)
    trained = train_baseline("sed", train, val, spec)
    assert not any(name.endswith("_missing") for name in trained.info["feature_names"])
    gaia_only = gaia_bands_only(test, spec["bands"])
    model = RegressionPredictor(None, trained.info, spec, trained.arrays)
    imputed = RegressionPredictor(None, trained.info, spec,
                                  {k: v for k, v in trained.arrays.items() if not k.startswith("moments.")})
    gaia_spec = {**spec, "features": [c for c in spec["features"] if set(band_of(c, spec["bands"])) <= set(GAIA_BANDS)]}
    on_gaia = train_baseline("sed", train, val, gaia_spec)
    trained_on_gaia = RegressionPredictor(None, on_gaia.info, gaia_spec, on_gaia.arrays)
    truth = test["teff"].to_numpy()
    alone, best, old = (regression_metrics(truth, m.predict_table(gaia_only)["teff"])["robust_sigma"]
                        for m in (model, trained_on_gaia, imputed))
    assert alone < 1.25 * best and old > 3.0 * alone, (alone, best, old)
    assert (model.predict_table(gaia_only)["teff_err"] > model.predict_table(test)["teff_err"]).all()
    np.testing.assert_array_equal(model.predict_table(test)["teff"], imputed.predict_table(test)["teff"])


def test_sed_baseline_uncertainty_counts_validation_stars_as_it_answers_them(split):
    """Validation stars with bands missing do not inflate the uncertainty of stars with every band: the penalty is
    chosen on their refit answers, not on the imputed full fit's, and their residuals go to `refit_scale`."""
    (train, val, _), spec = _complete_sed_rows(split)
    sigma = {name: train_baseline("sed", train, rows, spec).info["uncertainty"]["teff"]["sigma"]
             for name, rows in (("every band", val), ("Gaia only", gaia_bands_only(val, spec["bands"])))}
    assert 0.8 < sigma["Gaia only"] / sigma["every band"] < 1.25, sigma


def test_sed_baseline_chooses_the_penalty_of_a_label_without_validation_values_as_ridge_does(split):
    """By its leave-one-out RMSE, as when there are no validation rows at all, not the grid's smallest penalty."""
    (train, val, _), spec = _complete_sed_rows(split)
    no_feh = val.set_column(val.column_names.index("feh"), "feh", pa.nulls(val.num_rows, pa.float64()))
    trained = train_baseline("sed", train, no_feh, spec)
    alone = train_baseline("sed", train, val.slice(0, 0), spec)
    assert trained.info["hyperparameters"]["alpha"]["feh"] == alone.info["hyperparameters"]["alpha"]["feh"]
    assert np.isfinite(trained.metrics["selection_scores"]["feh"]).all()


def test_spectral_baseline_flags_spectra_with_a_line_no_training_spectrum_has(split, models):
    """The nearest-neighbour check measures the leading components only; the residual check sees the rest."""
    model = load_model(models["spectral"])
    assert model.info["domain"]["residual"]["quantile"] == 0.99
    test = _tables(split, "spectral")[0]["test"].to_pandas()
    assert model.predict_table(test)["in_domain"].mean() >= 0.9
    alien = with_foreign_line(test)
    assert (model.predict_table(alien)["in_domain"] == False).all()  # noqa: E712
    model.domain.residual = None
    assert (model.predict_table(alien)["in_domain"] == False).mean() <= 0.1  # noqa: E712


# ------------------------------------------------------------------------------------------ Predictor API


def test_a_baseline_saved_before_the_domain_check_predicts_with_blank_domain_columns(split, models, tmp_path):
    import shutil

    from steps.models.domain import ARRAY_NAMES

    earlier = tmp_path / "sed"
    shutil.copytree(models["sed"], earlier)
    arrays = load_npz(earlier / "weights.npz")
    assert set(ARRAY_NAMES) <= set(arrays)
    save_npz(earlier / "weights.npz", {k: v for k, v in arrays.items() if k not in ARRAY_NAMES})
    test = _tables(split, "sed")[0]["test"]
    now, before = load_model(models["sed"]).predict_table(test), load_model(earlier).predict_table(test)
    assert now["in_domain"].isin([True, False]).all()
    assert before["domain_distance"].isna().all() and before["in_domain"].isna().all()
    np.testing.assert_array_equal(before["teff"], now["teff"])


@pytest.mark.parametrize("name", ["spectral", "lightcurve", "sed"])
def test_predict_records_matches_predict_table(split, models, name):
    tables, _ = _tables(split, name)
    model = load_model(models[name])
    test = tables["test"]
    from_table = model.predict_table(test)
    records = model.predict_records(test.to_pylist())
    assert len(records) == test.num_rows
    from_records = pd.DataFrame(records)
    assert list(from_records.columns) == list(from_table.columns)
    for column in from_table.columns:
        if from_table[column].dtype == object:
            assert from_records[column].tolist() == from_table[column].tolist()
        else:
            np.testing.assert_allclose(from_records[column], from_table[column], rtol=1e-12)
    assert all(type(v) in (str, float, int, bool) for v in records[0].values())
    # a pandas DataFrame of the same rows predicts the same
    pd.testing.assert_frame_equal(model.predict_table(test.to_pandas()), from_table)


def test_predict_is_fast_and_deterministic(split, models):
    tables, _ = _tables(split, "spectral")
    rows = tables["train"].slice(0, 180).to_pylist() + tables["val"].slice(0, 20).to_pylist()
    model = load_model(models["spectral"])
    started = time.perf_counter()
    first = model.predict_records(rows)
    elapsed = time.perf_counter() - started
    assert len(first) == 200 and elapsed < 0.5, elapsed
    assert pd.DataFrame(model.predict_records(rows)).equals(pd.DataFrame(first))


def test_predict_records_validates_inputs(models):
    spectral, sed, lightcurve = (load_model(models[n]) for n in ("spectral", "sed", "lightcurve"))
    length = spectral.featurizer.blocks[0].length
    with pytest.raises(ValueError, match=rf"record 1: field 'flux': expected {length} values, got 3"):
        spectral.predict_records([{"flux": [1.0] * length}, {"flux": [1.0, 1.0, 1.0]}])
    with pytest.raises(KeyError, match="flux"):
        spectral.predict_records([{"snr": 10.0}])
    with pytest.raises(ValueError, match="record 0: field 'mag_G': expected a number"):
        sed.predict_records([{"mag_G": "bright"}])
    with pytest.raises(TypeError):
        sed.predict_records(["not a record"])
    with pytest.raises(KeyError, match="global_view"):
        lightcurve.predict_records([{"period": 1.0}])
    # missing photometry is imputed, not an error; NaN inside a spectrum is a bad pixel
    (out,) = sed.predict_records([{"mag_G": 12.0, "c_BP_RP": 0.8}])
    assert np.isfinite(out["teff"]) and np.isfinite(out["teff_err"])
    # ... but an object with no photometry at all has nothing to predict from
    with pytest.raises(ValueError, match="record 1: none of the input fields has a value"):
        sed.predict_records([{"mag_G": 12.0}, {"id": "empty", "mag_G": None}])
    table = sed.predict_table(pd.DataFrame({"id": ["a", "b"], "mag_G": [12.0, np.nan]}), blank_beyond_labels=False)
    assert np.isfinite(table.loc[0, "teff"]) and np.isnan(table.loc[1, "teff"])
    assert spectral.predict_records([]) == []
    flux = [1.0] * length
    flux[3] = None
    assert np.isfinite(spectral.predict_records([{"flux": flux, "id": "x"}])[0]["teff"])


def test_load_model_names_what_is_wrong(models, tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nothing")
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in ("model.json", "weights.npz", "spec.json"):
        (broken / file).write_bytes((models["sed"] / file).read_bytes())
    info = json.loads((broken / "model.json").read_text())
    (broken / "model.json").write_text(json.dumps({**info, "kind": "keras-cnn"}))
    with pytest.raises(ValueError, match="'keras-cnn' is not supported"):
        load_model(broken)
    (broken / "model.json").write_text(json.dumps({**info, "format_version": 99}))
    with pytest.raises(ValueError, match="format version 99"):
        load_model(broken)


def test_model_code_never_imports_tensorflow(models):
    code = ("import sys, steps.models, steps.train, steps.evaluate, steps.evaluate.gates\n"
            f"m = steps.models.load_model({str(models['sed'])!r})\n"
            "assert not any(n.split('.')[0] in ('tensorflow', 'keras') for n in sys.modules), 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_period_withheld_counts_as_a_miss():
    """Giving no period must not score better than giving a wrong one: the shares are over every object with a true
    period."""
    from steps.models.metrics import period_metrics

    truth = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    out = period_metrics(truth, np.array([1.001, np.nan, 6.0, np.nan, 5.0]))
    assert (out["n"], out["n_predicted"]) == (4, 2)
    assert out["within_1pct"] == 0.25 and out["within_1pct_harmonic"] == 0.5
    assert out["median_abs_log10_ratio"] == pytest.approx(np.median(np.abs(np.log10([1.001, 2.0]))))
    assert period_metrics(truth, np.full(5, np.nan))["within_1pct"] == 0.0


def test_answers_beyond_the_training_labels_are_flagged_and_blanked_only_where_asked():
    import pyarrow as pa

    from steps.models.label_range import allowed, beyond_labels, label_ranges

    train = pa.table({"teff": [2500.0, 4000.0, 8000.0, np.nan, 30000.0], "logg": [1.0, 2.0, 5.0, 3.0, 4.0]})
    ranges = label_ranges(train, ["teff", "logg", "feh"], teff_range=(3500, 8000))
    # the rows of 3500-8000 K only (a model that learns from those alone), and no feh column: no range
    assert ranges == {"teff": [4000.0, 8000.0], "logg": [2.0, 5.0]}
    low, high = allowed(4000.0, 8000.0, "log10")  # 10% of the span in log10 Teff on each side
    assert low == pytest.approx(4000 / 2 ** 0.1) and high == pytest.approx(8000 * 2 ** 0.1)
    assert allowed(1.0, 5.0, None) == pytest.approx((0.6, 5.4))

    def outputs():
        return {"teff": np.array([5000.0, 3800.0, 3000.0, np.nan]), "teff_err": np.array([50.0, 40.0, 4.0, np.nan]),
                "logg": np.array([4.0, -1.7, 4.5, np.nan]), "logg_err": np.array([0.1, 0.05, 0.1, np.nan]),
                "in_domain": np.array([True, True, True, None], dtype=object)}

    kept = outputs()
    found = beyond_labels(kept, ranges, {"teff": "log10"}, blank=False)
    assert found["teff"].tolist() == [False, False, True, False]
    assert found["logg"].tolist() == [False, True, False, False]
    assert kept["teff"][2] == 3000.0 and kept["in_domain"].tolist() == [True, False, False, None]
    blanked = outputs()
    beyond_labels(blanked, ranges, {"teff": "log10"}, blank=True)
    assert np.isnan(blanked["teff"][2]) and np.isnan(blanked["teff_err"][2]) and blanked["teff"][1] == 3800.0
    assert np.isnan(blanked["logg"][1]) and np.isnan(blanked["logg_err"][1]) and blanked["logg"][2] == 4.5


def test_an_object_is_told_apart_by_its_id_and_its_labels():
    """A synthetic draw with another seed gives other stars the same ids: production, trained on one draw, must
    not be taken to have learnt the stars of another."""
    import pyarrow as pa

    from steps.models.io import object_keys

    table = pa.table({"id": ["a", "a", "b"], "teff": [5000.0, 5123.456789, 5000.0], "logg": [4.5, 4.5, None]})
    assert object_keys(table) == ["a|5000|4.5", "a|5123.46|4.5", "b|5000|None"]
    assert object_keys(pa.table({"id": ["x"], "class": ["RRab"]})) == ["x|RRab"]


def test_gaia_bands_only_leaves_no_sign_of_the_other_bands():
    """A star with Gaia's bands alone has no 2MASS or WISE measurement: its other masks say "missing" and its
    saturation flags 0 (left as measured, they told the ridge that a benchmark star was bright in 2MASS)."""
    bands = ["G", "BP", "J"]
    table = pa.table({"mag_G": [10.0], "mag_J": [3.0], "c_G_J": [7.0], "mask_G": pa.array([0], pa.uint8()),
                      "mask_J": pa.array([4], pa.uint8()), "saturated_G": pa.array([0], pa.uint8()),
                      "saturated_J": pa.array([1], pa.uint8()), "parallax": [5.0]})
    assert gaia_bands_only(table, bands).to_pylist() == [{
        "mag_G": 10.0, "mag_J": None, "c_G_J": None, "mask_G": 0, "mask_J": 1, "saturated_G": 0, "saturated_J": 0,
        "parallax": 5.0}]
