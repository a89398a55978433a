"""The Keras models: trainer dispatch, training on the fixture split, saving and loading, calibration, determinism.

Models are tiny and trained for a few dozen epochs on a 300-object fixture split, with TensorFlow limited to two
threads, so each model trains in seconds. The SED ensemble gets more epochs (0.1 s each): at 40 its members are
still improving, and its validation errors have the tails of an unsettled fit (95% coverage of log g 0.68).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from split_fixtures import with_foreign_line, write_split
from steps.evaluate import evaluate_model
from steps.models import load_model
from steps.models.domain import ARRAY_NAMES as DOMAIN_ARRAYS
from steps.models.domain import LINES_ARRAY, PERIOD_ARRAY, RESIDUAL_ARRAYS
from steps.models.inputs import Columns
from steps.models.io import load_npz
from steps.models.metrics import classification_metrics, regression_metrics

REPO = Path(__file__).resolve().parents[2]
MODALITY = {"spectral": "spectra", "lightcurve": "lightcurves", "sed": "photometry"}
KINDS = {"spectral": "keras-spectral-kernel", "lightcurve": "keras-softmax-views", "sed": "keras-sed-ensemble"}
EPOCHS = 40
SED_EPOCHS = 150  # early stopping ends it sooner
tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    """Keep TensorFlow to two threads: the machine is shared."""
    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.threading.set_intra_op_parallelism_threads(2)
    except RuntimeError:  # already initialised by an earlier module: its setting stands
        pass


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    return write_split(tmp_path_factory.mktemp("split") / "split", n=300, seed=5)


@pytest.fixture(scope="module")
def trained(split, tmp_path_factory):
    """name -> model directory, each Keras model trained once, when a test first asks for it."""
    from steps.train import train_from_split

    root = tmp_path_factory.mktemp("keras")
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = train_from_split(name, split, root / name, trainer="keras", epochs=_epochs(name), seed=1)
        return cache[name]
    return get


def _epochs(name: str) -> int:
    return SED_EPOCHS if name == "sed" else EPOCHS


def _table(split: Path, name: str, part: str):
    return pq.read_table(split / MODALITY[name] / f"{part}.parquet")


# ------------------------------------------------------------------------------------------- dispatch


def test_importing_the_pipeline_does_not_import_tensorflow():
    code = ("import sys, steps.train, steps.train.__main__, steps.models, steps.models.predictor, steps.evaluate, "
            "steps.evaluate.__main__, steps.evaluate.report, workflows.predict_cli; "
            "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]; "
            "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_auto_picks_keras_when_tensorflow_is_installed_and_the_baseline_otherwise(monkeypatch):
    import steps.train as train

    assert train.resolve_trainer("auto") == "keras"
    assert train.resolve_trainer("keras") == "keras"
    assert train.resolve_trainer("baseline") == "baseline"
    warnings = []
    monkeypatch.setattr(train, "tensorflow_available", lambda: False)
    monkeypatch.setattr(train.log, "warning", lambda message, *args: warnings.append(message % args))
    assert train.resolve_trainer("auto") == "baseline"
    assert warnings and "TensorFlow is not installed" in warnings[0]
    with pytest.raises(train.TrainerUnavailable, match="needs TensorFlow"):
        train.resolve_trainer("keras")


def test_keras_trainer_without_tensorflow_exits_2(split, tmp_path, monkeypatch):
    import steps.train as train
    from steps.train.__main__ import main

    monkeypatch.setattr(train, "tensorflow_available", lambda: False)
    assert main(["sed", "--split", str(split), "--out", str(tmp_path / "sed"), "--trainer", "keras"]) == 2
    assert not (tmp_path / "sed").exists()


# ------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("name", ["spectral", "lightcurve", "sed"])
def test_model_directory_holds_the_keras_model_its_export_and_its_training_record(trained, name):
    model_dir = trained(name)
    assert (model_dir / "model.keras").is_file()
    assert (model_dir / "saved_model" / "saved_model.pb").is_file()
    # the domain check alone, with spectra's residual and line checks and light curves' period range
    extra = {"spectral": (*RESIDUAL_ARRAYS, LINES_ARRAY), "lightcurve": (PERIOD_ARRAY,)}.get(name, ())
    assert sorted(load_npz(model_dir / "weights.npz")) == sorted(DOMAIN_ARRAYS + extra)
    info = json.loads((model_dir / "model.json").read_text())
    assert info["kind"] == KINDS[name] and info["training"]["trainer"] == "keras"
    training = info["training"]
    epochs = _epochs(name)
    assert training["epochs"] == epochs and 1 <= training["best_epoch"] <= training["epochs_run"] <= epochs
    assert info["architecture"]["parameters"] > 1000
    training = json.loads((model_dir / "train_metrics.json").read_text())["training"]
    assert training["seconds_per_epoch"] > 0 and training["samples_per_second"] > 0
    assert len(training["history"]["loss"]) == training["epochs_run"]


@pytest.mark.parametrize("name", ["spectral", "lightcurve", "sed"])
def test_model_beats_the_null_predictor_on_the_test_split(trained, split, name):
    ev = evaluate_model(name, trained(name), split)
    if ev.task == "regression":
        for target in ("teff", "logg"):
            assert ev.model["targets"][target]["rmse"] < 0.6 * ev.null["targets"][target]["rmse"], target
    else:
        assert ev.model["balanced_accuracy"] > 0.6 > 2 * ev.null["balanced_accuracy"]


@pytest.mark.parametrize("name", ["spectral", "lightcurve", "sed"])
def test_reloading_gives_the_predictions_it_was_measured_with(trained, split, name):
    """The SavedModel the predictor serves, the `.keras` file and the in-memory model agree."""
    import keras

    from steps.models.keras.predictor import PREDICTORS

    model_dir = trained(name)
    val = _table(split, name, "val")
    loaded = load_model(model_dir)
    # measured as training measured them: every answer kept (evaluation's way, `steps.models.label_range`)
    first = loaded.predict_table(val, blank_beyond_labels=False)
    assert first.equals(load_model(model_dir).predict_table(val, blank_beyond_labels=False))
    recorded = json.loads((model_dir / "train_metrics.json").read_text())["val"]
    if loaded.task == "regression":
        remeasured = {t: regression_metrics(Columns(val).scalar(t), first[t], first[f"{t}_err"])
                      for t in loaded.targets}
        for target in loaded.targets:
            assert remeasured[target]["rmse"] == pytest.approx(recorded[target]["rmse"], rel=1e-5)
    else:
        remeasured = classification_metrics(Columns(val).strings("class"), loaded.predict_proba(val),
                                            loaded.classes)
        assert remeasured["log_loss"] == pytest.approx(recorded["log_loss"], rel=1e-5)
    network = keras.models.load_model(model_dir / "model.keras", compile=False)
    from_keras = PREDICTORS[loaded.task](model_dir, loaded.info, loaded.spec,
                                         lambda arrays: network(arrays, training=False).numpy(),
                                         domain=loaded.domain)
    numbers = first.select_dtypes("number").columns
    # float32 sums in another order (the graph's fused kernels, eager Keras): the spectral model's kernels add
    # ~1,000 weighted similarities; measured up to 3e-5 of a value (1e-3 K of 51 K in a Teff error), not the last bit
    np.testing.assert_allclose(from_keras.predict_table(val, blank_beyond_labels=False)[numbers].to_numpy(),
                               first[numbers].to_numpy(),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["spectral", "lightcurve", "sed"])
def test_predict_records_equals_predict_table(trained, split, name):
    model = load_model(trained(name))
    test = _table(split, name, "test").slice(0, 12)
    table = model.predict_table(test)
    records = model.predict_records(test.to_pylist())
    assert list(records[0]) == list(table.columns)
    for column in table.columns:
        got = [r[column] for r in records]
        if table[column].dtype == object:
            assert got == table[column].tolist(), column
        else:
            np.testing.assert_allclose(np.array(got, float), table[column].to_numpy(float), rtol=1e-6,
                                       equal_nan=True)


@pytest.mark.parametrize("name", ["spectral", "sed"])
def test_uncertainties_are_calibrated_on_validation(trained, name):
    model_dir = trained(name)
    info = json.loads((model_dir / "model.json").read_text())
    scales = info["calibration"]["sigma_scale"]
    assert set(scales) == {"teff", "logg", "feh"} and all(0 < s < 100 for s in scales.values())
    val = json.loads((model_dir / "train_metrics.json").read_text())["val"]
    for target, m in val.items():
        assert 0.5 <= m["coverage_68"] <= 0.85, (target, m["coverage_68"])
        assert m["coverage_95"] >= 0.8, (target, m["coverage_95"])


def test_spectral_sigmas_are_calibrated_on_validation_and_out_of_sample_training_rows(trained, split):
    """The spectral network's inputs on its training rows are out-of-sample estimates, so those rows join the
    few validation stars in the calibration; the SED network saw its training rows: validation alone, as it is and
    in copies with bands dropped as in training (users' photometry often lacks 2MASS or WISE)."""
    spectral = json.loads((trained("spectral") / "model.json").read_text())["calibration"]
    assert spectral["split"] == "val + train"
    assert spectral["rows"]["val"] == _table(split, "spectral", "val").num_rows
    assert spectral["rows"]["train"] > 2 * spectral["rows"]["val"]
    for target, scale in spectral["sigma_scale"].items():
        apart = [spectral["by_split"][name][target] for name in ("val", "train")]
        assert min(apart) <= scale <= max(apart), (target, scale, apart)
    sed = json.loads((trained("sed") / "model.json").read_text())["calibration"]
    assert sed["split"] == "val + val, bands dropped"
    n_val = _table(split, "sed", "val").num_rows
    assert sed["rows"] == {"val": n_val, "val, bands dropped": 3 * n_val}


def test_calibration_pools_the_ratios_of_every_set_row_by_row():
    """Pooled by rows, not by averaging each set's scale: 30 training rows at scale 1 outvote 10 at scale 3."""
    from steps.models.keras.calibration import GAUSS_MEDIAN_ABS_Z
    from steps.models.keras.training import _sigma_scales

    unit = np.linspace(-1.0, 1.0, 30)[:, None] * GAUSS_MEDIAN_ABS_Z / np.median(np.abs(np.linspace(-1, 1, 30)))
    wide = 3.0 * unit[::3]
    record = _sigma_scales({"val": (wide, np.ones_like(wide)), "train": (2 * unit, np.full_like(unit, 2.0))},
                           ["teff"])
    assert record["by_split"]["val"]["teff"] == pytest.approx(3.0)
    assert record["by_split"]["train"]["teff"] == pytest.approx(1.0)
    pooled = np.concatenate([wide[:, 0], unit[:, 0]])
    assert record["sigma_scale"]["teff"] == pytest.approx(np.median(np.abs(pooled)) / GAUSS_MEDIAN_ABS_Z)
    assert record["sigma_scale"]["teff"] < 1.5 and record["rows"] == {"val": 10, "train": 30}


def test_without_validation_rows_the_spectral_uncertainty_is_calibrated_out_of_sample(split):
    """The kernel estimate nearly interpolates its training rows: calibrated on them in-sample, the sigmas would
    shrink to nothing. Without validation rows they are calibrated on the leave-one-out estimates instead."""
    import keras

    from steps.models.keras import train_keras
    from steps.models.keras.predictor import KerasRegressionPredictor
    from steps.models.keras.training import _graph

    train, test = (pq.read_table(split / "spectra" / f"{part}.parquet") for part in ("train", "test"))
    spec = json.loads((split / "spectra" / "spec.json").read_text())
    trained = train_keras("spectral", train, train.schema.empty_table(), spec, seed=1, epochs=EPOCHS)
    assert trained.info["calibration"]["split"] == "train"
    with TemporaryDirectory() as scratch:  # the network is reached through what the trainer saves
        trained.save(Path(scratch))
        model = keras.models.load_model(Path(scratch) / "model.keras", compile=False)
        predicted = KerasRegressionPredictor(None, trained.info, spec, _graph(model)).predict_table(test)
    metrics = regression_metrics(test.column("teff").to_numpy(), predicted["teff"], predicted["teff_err"])
    assert metrics["coverage_68"] >= 0.5, metrics


def test_a_large_training_set_solves_the_kernel_on_a_subset_and_still_learns(split, monkeypatch):
    from steps.models.keras import kernel_estimate, train_keras

    monkeypatch.setattr(kernel_estimate, "KERNEL_CENTRES", 60)
    train, val = (pq.read_table(split / "spectra" / f"{part}.parquet") for part in ("train", "val"))
    spec = json.loads((split / "spectra" / "spec.json").read_text())
    trained = train_keras("spectral", train, val, spec, seed=1, epochs=5)
    assert trained.info["training"]["kernel_centres"] == 60 < trained.info["training"]["n_train"]
    teff = trained.metrics["val"]["teff"]
    assert teff["robust_sigma"] < 0.5 * np.std(val.column("teff").to_numpy()), teff


def test_spectral_model_starts_from_a_cleaned_kernel_ridge_and_records_its_label_rules(trained, split):
    from steps.models.keras.kernel_estimate import CONTINUUM_WEIGHTS
    from steps.models.keras.training import METALLICITY_TEFF_MAX, STELLAR_TEFF_RANGE

    training = json.loads((trained("spectral") / "model.json").read_text())["training"]
    assert training["teff_range"] == list(STELLAR_TEFF_RANGE)
    teff = pq.read_table(split / "spectra" / "train.parquet").column("teff").to_numpy()
    in_range = int(((teff >= STELLAR_TEFF_RANGE[0]) & (teff <= STELLAR_TEFF_RANGE[1])).sum())
    assert training["n_train"] == in_range
    assert training["metallicity_labels"] == {"teff_max": METALLICITY_TEFF_MAX,
                                              "set_aside": int((teff > METALLICITY_TEFF_MAX).sum())}
    assert "teff_gate" not in training  # every fixture star is in the range the gate's estimate would be fitted on
    assert 0 <= training["label_outliers_left_out"] < 0.2 * in_range
    assert training["inputs"] == ["spectrum", "continuum"] and training["continuum_weight"] in CONTINUUM_WEIGHTS
    assert training["kernel_gamma"] > 0 and len(training["kernel_alpha"]) == 3
    # the kernel estimate is honest: leave-one-out errors well below the targets' spread (1 when standardised)
    assert all(0.0 < rmse < 0.8 for rmse in training["kernel_loo_rmse"])
    assert training["variance_epochs_run"] >= 1


def test_the_means_learn_feh_from_stars_no_hotter_than_its_limit_and_the_uncertainty_from_every_star(monkeypatch):
    """A hot star's tabulated [Fe/H] reaches neither the closed-form estimate nor the correction of the means; its Teff
    and log g do, and the uncertainty learns from its [Fe/H] too; a broken Teff (23 K) keeps the row out."""
    import pyarrow as pa

    import split_fixtures
    from steps.models.keras import training

    def labels(rng, n):
        return {"teff": rng.uniform(3800, 11000, n), "logg": rng.uniform(1.0, 5.0, n), "feh": rng.uniform(-2, 0.5, n)}

    monkeypatch.setattr(split_fixtures, "_labels", labels)
    table, spec = split_fixtures.spectra(np.random.default_rng(4), 160, length=128, blocks=16)
    teff = table.column("teff").to_numpy().copy()
    teff[0] = 23.0
    table = table.set_column(table.column_names.index("teff"), "teff", pa.array(teff))
    seen = {}
    original_estimate, original_fit = training.fit_spectral_estimate, training._fit

    def estimate(x, z, *args, **kwargs):
        seen["estimate"] = z.copy()
        return original_estimate(x, z, *args, **kwargs)

    def fit(model, recipe, epochs, x, y, held_out, *args, **kwargs):
        seen.setdefault("network", []).append((y.copy(), held_out[1].copy()))
        return original_fit(model, recipe, epochs, x, y, held_out, *args, **kwargs)

    monkeypatch.setattr(training, "fit_spectral_estimate", estimate)
    monkeypatch.setattr(training, "_fit", fit)
    trained = training.train_keras("spectral", table.slice(0, 130), table.slice(130), spec, seed=0, epochs=2)
    record = trained.info["training"]  # no grid in the spec: no [Fe/H] window, no local input
    assert "metallicity_window_from_angstrom" not in record
    assert [block.get("key") for block in trained.info["encoder"]] == ["spectrum", "continuum"]
    assert [part["gives"] for part in record["separate_estimates"]] == [[1, 2]] * 3 + [[0]]
    kept = teff[1:130]                                  # the 23 K row is not learnt from
    hot = kept > training.METALLICITY_TEFF_MAX
    z = seen["estimate"]
    assert len(z) == trained.info["training"]["n_train"] == 129 and 30 < hot.sum() < 99
    assert np.isnan(z[hot, 2]).all() and np.isfinite(z[~hot, 2]).all() and np.isfinite(z[:, :2]).all()
    assert trained.info["training"]["metallicity_labels"] == {"teff_max": 8000.0, "set_aside": int(hot.sum())}
    # and Teff between 3700 and 7600 K comes from an estimate fitted on the stars of 3500-8000 K alone
    gate = trained.info["training"]["teff_gate"]
    assert gate["fitted_rows"] == int(((kept >= 3500) & (kept <= 8000)).sum())
    assert (gate["teff_k"], gate["fitted_on_teff_k"]) == ([3700.0, 7600.0], [3500.0, 8000.0])
    scaling = trained.info["target_scaling"]
    (means, means_val), (variance, variance_val) = seen["network"]   # the means' fit, then the uncertainty's
    for learnt, every in ((means, variance), (means_val, variance_val)):
        natural = every * np.asarray(scaling["std"]) + np.asarray(scaling["mean"])
        network_hot = natural[:, 0] > np.log10(training.METALLICITY_TEFF_MAX)
        assert network_hot.any() and np.isfinite(natural[network_hot, 2]).all()
        assert np.isnan(learnt[network_hot, 2]).all()
        assert np.array_equal(learnt[~network_hot], every[~network_hot], equal_nan=True)


def test_spectral_model_reads_the_continuum_shape_and_predicts_without_it(trained, split):
    model = load_model(trained("spectral"))
    assert "continuum_shape" in model.input_fields["optional"]
    test = pq.read_table(split / "spectra" / "test.parquet")
    with_shape = model.predict_table(test)
    without = model.predict_table(test.drop_columns(["continuum_shape"]))
    assert np.isfinite(without["teff"]).all()
    assert not np.allclose(with_shape["teff"], without["teff"])  # the shape is used
    truth = test.column("teff").to_numpy()
    error = [np.median(np.abs(pred["teff"] - truth)) for pred in (with_shape, without)]
    assert error[0] < error[1]  # and it helps: the fixture's continuum carries Teff


def test_spectral_trainer_takes_feh_from_the_redder_window_of_the_features_grid():
    from split_fixtures import spectra
    from steps.models.keras.kernel_estimate import local_continuum_pixels, metallicity_window
    from steps.models.keras.training import train_keras
    from steps.preprocess.spectra import grid_spec

    table, spec = spectra(np.random.default_rng(3), 240, length=256, blocks=64)
    spec["grid"] = grid_spec(256, (3800.0, 9000.0))
    trained = train_keras("spectral", table.slice(0, 180), table.slice(180), spec, seed=0, epochs=5)
    record = trained.info["training"]
    assert record["metallicity_window_from_angstrom"] == 3900.0
    # log g from the mean of 4 estimates of all labels (one per continuum weight), Teff from its own, [Fe/H] from the
    # mean of 4 estimates of all labels in the window
    parts = [{"labels": [0, 1, 2], "gives": [1], **record}] + record["separate_estimates"]
    assert [(part["labels"], part["gives"], part["share"]) for part in parts] == (
        [([0, 1, 2], [1], 0.25)] * 4 + [([0], [0], 1.0)] + [([0, 1, 2], [2], 0.25)] * 4)
    assert [part["continuum_weight"] for part in parts[5:]] == [1.0, 2.0, 4.0, 8.0]
    # [Fe/H]'s sees the flux against its local pseudo-continuum (3900-9000 A), the others the flux (all of it)
    assert all(part["entries_seen"] == {"spectrum": 0, "continuum": 62, "local": 248} for part in parts[5:])
    assert all(part["entries_seen"] == {"spectrum": 256, "continuum": 64, "local": 0} for part in parts[:5])
    assert [block["local_continuum"] for block in trained.info["encoder"] if block["key"] == "local"] == [13]
    spec["grid"] = grid_spec(256, (3900.0, 9000.0))                       # nothing bluer: the local input whole
    record = train_keras("spectral", table.slice(0, 180), table.slice(180), spec, seed=0, epochs=5).info["training"]
    assert [part["gives"] for part in record["separate_estimates"]] == [[1]] * 3 + [[0]] + [[2]] * 4
    assert record["separate_estimates"][-1]["entries_seen"] == {"spectrum": 0, "continuum": 64, "local": 256}
    assert local_continuum_pixels(None) == 0 and metallicity_window(None, {"spectrum": (256, 2)}) is None  # no grid


def test_local_continuum_is_a_running_upper_quantile_of_the_good_entries():
    from steps.models.keras.encoders import Encoder, VectorInput, local_continuum_of

    rng = np.random.default_rng(4)
    values, bad = rng.normal(1.0, 0.1, size=(300, 60)), rng.random((300, 60)) < 0.2
    values[bad] = 50.0                                                   # bad entries count for nothing
    padded = np.pad(np.where(bad, np.nan, values), ((0, 0), (3, 3)), constant_values=np.nan)
    quantile = np.nanpercentile(np.lib.stride_tricks.sliding_window_view(padded, 7, axis=1), 90.0, axis=2)
    padded = np.pad(quantile, ((0, 0), (3, 3)), constant_values=np.nan)
    expected = np.nanmean(np.lib.stride_tricks.sliding_window_view(padded, 7, axis=1), axis=2)
    np.testing.assert_allclose(local_continuum_of(values, bad, 7), expected, rtol=1e-12)
    # a sloped continuum with narrow lines: the lines keep their depth, the slope goes
    flux = np.linspace(0.8, 1.2, 200)[None].repeat(2, axis=0)
    flux[:, 50::20] *= 0.5
    local = VectorInput("flux", 200, key="local", mask_channel=True, local_continuum=15)
    encoder = Encoder.restore(Encoder([local]).config())                # the window survives model.json
    values, bad = encoder.inputs[0]._values(Columns(pa.table({"flux": list(flux)})))
    assert not bad.any() and encoder.inputs[0].local_continuum == 15
    assert np.allclose(values[:, 10:-10][:, ~np.isin(np.arange(10, 190), np.arange(50, 200, 20))], 1.0, atol=0.02)
    assert np.allclose(values[:, 50::20], 0.5, atol=0.02)
    assert "local_continuum" not in VectorInput("flux", 200).config()     # other inputs' configs as they were


def _square_wave(length: int) -> np.ndarray:
    """Three cycles between +1 and -1 (a dip is about -1 in a view)."""
    return np.sign(np.sin(np.linspace(0.1, 6 * np.pi - 0.1, length)))


ALIEN = {  # per model: objects unlike any the fixture makes
    "spectral": lambda t: t.assign(flux=[4.0 - 3.0 * np.asarray(f) for f in t["flux"]]),  # strong emission lines
    "lightcurve": lambda t: t.assign(**{view: [_square_wave(len(v)) for v in t[view]]  # no star's light curve
                                        for view in ("global_view", "local_view")}),
    "sed": lambda t: t.assign(**{c: -3.0 * t[c] for c in t if c.startswith("c_")}),  # colours of no star
}


@pytest.mark.parametrize("name", ["spectral", "lightcurve", "sed"])
def test_objects_unlike_the_training_set_are_flagged_outside_the_domain(trained, split, name):
    model_dir = trained(name)
    info = json.loads((model_dir / "model.json").read_text())
    training = info["training"]
    learnt_from = {"spectral": training["n_train"] - training.get("label_outliers_left_out", 0),  # its cleaned rows
                   "sed": training["n_train"], "lightcurve": training["n_train"]}
    assert info["domain"]["quantile"] == 0.95 and info["domain"]["reference_rows"] == learnt_from[name]
    model = load_model(model_dir)
    test = _table(split, name, "test").to_pandas()
    pred = model.predict_table(test)
    assert pred["in_domain"].isin([True, False]).all() and pred["in_domain"].mean() >= 0.8
    alien = model.predict_table(ALIEN[name](test.head(12)))
    assert (alien["in_domain"] == False).all(), alien["domain_distance"].tolist()  # noqa: E712


def test_a_spectrum_with_a_line_no_training_spectrum_has_is_flagged(trained, split):
    model = load_model(trained("spectral"))
    assert model.info["domain"]["residual"]["quantile"] == 0.99
    alien = model.predict_table(with_foreign_line(_table(split, "spectral", "test").to_pandas()))
    assert (alien["in_domain"] == False).all(), alien["domain_distance"].tolist()  # noqa: E712


def test_a_version_of_an_earlier_spectral_kind_still_loads_for_a_rollback(trained, split, tmp_path):
    import shutil

    earlier = tmp_path / "earlier"
    shutil.copytree(trained("spectral"), earlier)
    info = json.loads((earlier / "model.json").read_text())
    info["kind"] = "keras-spectral-cnn"
    (earlier / "model.json").write_text(json.dumps(info))
    test = pq.read_table(split / "spectra" / "test.parquet")
    assert np.allclose(load_model(earlier).predict_table(test)["teff"],
                       load_model(trained("spectral")).predict_table(test)["teff"])
    (earlier / "weights.npz").unlink()  # saved before the domain check: blank domain columns
    blank = load_model(earlier).predict_table(test)
    assert blank["domain_distance"].isna().all() and blank["in_domain"].isna().all()
    info["kind"] = "keras-spectral-unknown"
    (earlier / "model.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="keras-spectral-unknown"):
        load_model(earlier)


def test_an_earlier_single_mlp_sed_version_still_loads_and_predicts_its_own_head(split, tmp_path, monkeypatch):
    """A version saved before the SED ensemble has one head of 2T outputs: it is read as it is."""
    import functools

    from steps.models.keras import networks, training
    from steps.models.keras.calibration import LOG_VAR_RANGE
    from steps.train import train_from_split

    monkeypatch.setattr(training, "sed_ensemble", functools.partial(networks.sed_ensemble, members=1))
    earlier = train_from_split("sed", split, tmp_path / "earlier", trainer="keras", epochs=5, seed=1)
    info = json.loads((earlier / "model.json").read_text())
    assert info["n_outputs"] == 6
    info["kind"] = "keras-sed-mlp"
    (earlier / "model.json").write_text(json.dumps(info))
    model = load_model(earlier)
    test = _table(split, "sed", "test")
    head = model.outputs(Columns(test))
    scaling = info["target_scaling"]
    np.testing.assert_allclose(model.predict_table(test)["teff"],
                               10 ** (head[:, 0] * scaling["std"][0] + scaling["mean"][0]), rtol=1e-9)
    scale = info["calibration"]["sigma_scale"]["teff"]
    sigma = np.exp(0.5 * np.clip(head[:, 3], *LOG_VAR_RANGE)) * scaling["std"][0] * scale
    np.testing.assert_allclose(model.fitted_space(Columns(test))[1][:, 0], sigma, rtol=1e-9)


def test_the_sed_ensembles_outputs_are_its_members_side_by_side():
    """`member_moments` and `ensemble_nll` read member k's [mean, log-variance] from columns 2Tk to 2T(k+1)."""
    import keras

    from steps.models.keras.calibration import member_moments
    from steps.models.keras.networks import ensemble_nll, sed_ensemble

    model = sed_ensemble({"photometry": (4,), "photometry_missing": (4,)}, 2, members=3)
    for k in range(3):
        kernel, bias = model.get_layer(f"member{k}_mean_logvar").get_weights()
        model.get_layer(f"member{k}_mean_logvar").set_weights(
            [np.zeros_like(kernel), np.array([k, 10.0 * k, np.log(0.5), np.log(0.25)], np.float32)])
    x = {"photometry": np.ones((2, 4), np.float32), "photometry_missing": np.zeros((2, 4), np.float32)}
    mean, log_var = member_moments(np.asarray(model(x)), 2)
    np.testing.assert_allclose(mean, [[1.0, 10.0]] * 2, rtol=1e-6)
    np.testing.assert_allclose(np.exp(log_var), [[0.5 + 2.0 / 3.0, 0.25 + 200.0 / 3.0]] * 2, rtol=1e-5)
    # the loss: member k's NLL of the truth (1, 10), averaged over the members
    loss = float(keras.ops.convert_to_numpy(ensemble_nll(np.array([[1.0, 10.0]], np.float32), model(x)[:1]))[0])
    terms = [np.mean([(np.log(v) + (t - m) ** 2 / v) * 0.5 * v ** 0.5 for t, m, v in
                      ((1.0, k, 0.5), (10.0, 10.0 * k, 0.25))]) for k in range(3)]
    assert loss == pytest.approx(np.mean(terms), rel=1e-5)


def test_frozen_kernel_layers_equal_the_kernel_ridge_fit():
    import keras

    from steps.models.keras.networks import spectral_hybrid
    from steps.models.linear import kernel_ridge

    rng = np.random.default_rng(0)
    shapes = {"spectrum": (6, 2), "continuum": (3, 2)}
    projection = (rng.normal(size=(18, 4)), rng.normal(size=4))
    flat = rng.normal(size=(40, 18))
    components = flat @ projection[0] + projection[1]
    fit = kernel_ridge(components, np.column_stack([np.sin(components[:, 0]), components[:, 1] ** 2]))
    serving, _ = spectral_hybrid(shapes, 2, [(projection, fit, [], np.eye(2))])
    inputs = {"spectrum": flat[:, :12].reshape(40, 6, 2), "continuum": flat[:, 12:].reshape(40, 3, 2)}
    estimate = keras.Model(serving.inputs, serving.get_layer("kernel_estimate").output)(inputs)
    np.testing.assert_allclose(np.asarray(estimate), fit.predict(components), rtol=1e-3, atol=1e-3)


def _curved_spectra(n: int, seed: int):
    """Encoded spectra (values, mask channel) whose label is a saturating function of one direction of the pixels,
    the shape a single wide kernel on many components flattens at both ends."""
    direction = np.random.default_rng(99).normal(size=40)
    rng = np.random.default_rng(seed)
    signal = rng.uniform(-2.5, 2.5, size=n)
    pixels = np.outer(signal, direction) + rng.normal(size=(n, 40))
    spectrum = np.stack([pixels, np.zeros_like(pixels)], axis=-1).astype(np.float32)
    label = np.tanh(2.0 * signal) + 0.02 * rng.normal(size=n)
    return {"spectrum": spectrum}, label[:, None]


def _weight_scores(x: dict[str, np.ndarray], label: np.ndarray) -> dict[float, tuple[np.ndarray, float]]:
    """Per candidate continuum weight: the ridge's leave-one-out residuals and their RMSE over every row."""
    from steps.models.baseline import RIDGE_GRID
    from steps.models.keras.kernel_estimate import CONTINUUM_WEIGHTS
    from steps.models.linear import ridge

    scores = {}
    for weight in CONTINUUM_WEIGHTS:
        joined = np.hstack([x["spectrum"][:, :, 0], weight * x["continuum"][:, :, 0]]).astype(np.float64)
        residuals = ridge(joined, label[:, None], alphas=tuple(a * len(label) for a in RIDGE_GRID)).loo_residuals
        scores[weight] = (residuals, float(np.sqrt(np.mean(residuals ** 2))))
    return scores


def test_the_continuum_weight_is_not_chosen_by_a_few_wrong_labels():
    """The label is in the flux, and a tenth of the labels are wrong in a way the continuum explains: over every row
    the RMSE asks for the largest weight; over the rows no candidate's fit calls a label outlier it asks for the
    weight that suits the right labels, which is the one taken."""
    from steps.models.baseline import OUTLIER_SIGMA
    from steps.models.keras.kernel_estimate import CONTINUUM_WEIGHTS, fit_kernel_estimate
    from steps.models.linear import robust_outliers

    rng = np.random.default_rng(0)
    label = rng.normal(size=200)
    flux = np.outer(label, rng.normal(size=40)) * 0.5 + rng.normal(size=(200, 40))
    continuum = 0.3 * rng.normal(size=(200, 8))
    wrong = rng.choice(200, 20, replace=False)
    label[wrong] = continuum[wrong, 0] / 0.03
    x = {name: np.stack([values, np.zeros_like(values)], axis=-1).astype(np.float32)
         for name, values in (("spectrum", flux), ("continuum", continuum))}
    scores = _weight_scores(x, label)
    suspect = np.any([robust_outliers(residuals, OUTLIER_SIGMA) for residuals, _ in scores.values()], axis=0)
    assert suspect[wrong].sum() >= 15 and suspect.sum() <= 30  # most wrong labels (a small one is no outlier)
    over_clean_rows = min(scores, key=lambda w: float(np.sqrt(np.mean(scores[w][0][~suspect] ** 2))))
    assert min(scores, key=lambda weight: scores[weight][1]) == max(CONTINUUM_WEIGHTS) != over_clean_rows
    assert fit_kernel_estimate(x, label[:, None]).record["continuum_weight"] == over_clean_rows


def test_refinement_follows_a_curved_label_the_first_kernel_flattens():
    from steps.models.keras.kernel_estimate import fit_kernel_estimate, refined

    x, z = _curved_spectra(300, 0)
    x_new, z_new = _curved_spectra(300, 1)
    estimate = fit_kernel_estimate(x, z)
    [entry] = estimate.record["refinements"]
    assert entry["kept"] and entry["loo_robust_sigma_after"] < entry["loo_robust_sigma_before"]
    components = estimate.components(x_new)
    first = estimate.fit.predict(components)
    assert np.allclose(refined(first, components, []), first)
    error = [np.sqrt(np.mean((estimate_ - z_new) ** 2)) for estimate_ in (first, estimate.predict(x_new))]
    assert error[1] < 0.9 * error[0], error


def test_refined_training_estimates_are_out_of_sample(monkeypatch):
    """Rows the refinement was solved on get its leave-one-out estimates; the others its correction of their
    first-stage leave-one-out estimates (neither saw the row's label)."""
    from steps.models.keras import kernel_estimate

    monkeypatch.setattr(kernel_estimate, "REFINE_CENTRES", 120)
    x, z = _curved_spectra(300, 0)
    estimate = kernel_estimate.fit_kernel_estimate(x, z)
    [refinement] = estimate.refinements
    truth = z[estimate.rows, 0]
    first = (truth - estimate.fit.loo_residuals[:, 0])[:, None]  # every kept row is a first-stage centre here
    components = estimate.components({key: value[estimate.rows] for key, value in x.items()})
    inputs = np.hstack([first, components]) @ refinement.selection(1, components.shape[1])
    distance = np.abs(inputs[:, None, :] - refinement.fit.centres[None]).max(axis=2)
    solved = distance.min(axis=1) < 1e-9
    assert solved.sum() == 120
    expected = np.where(solved, truth - refinement.fit.loo_residuals[distance.argmin(axis=1), 0],
                        first[:, 0] + refinement.correction(first, components))
    np.testing.assert_allclose(estimate.out_of_sample[:, 0], expected, rtol=1e-8, atol=1e-8)


def test_frozen_refinements_equal_the_numpy_estimate():
    import keras

    from steps.models.keras.kernel_estimate import Refinement, fit_kernel_estimate, refined
    from steps.models.keras.networks import spectral_hybrid
    from steps.models.linear import kernel_ridge

    x, z = _curved_spectra(200, 2)
    z = np.column_stack([z[:, 0], z[:, 0] ** 2])
    estimate = fit_kernel_estimate(x, z)
    assert estimate.refinements
    # and one made by hand: the second label, four components, an intercept far from zero
    components = estimate.components(x)
    first = estimate.fit.predict(components)
    by_hand = Refinement(1, 4, kernel_ridge(np.column_stack([3.0 * first[:, 1], components[:, :4]]),
                                            np.sin(components[:, 0]) + 3.0))
    assert abs(by_hand.fit.intercept[0]) > 2.0
    for refinements in (estimate.refinements, [by_hand]):
        serving, _ = spectral_hybrid({"spectrum": (40, 2)}, 2,
                                     [(estimate.projection(), estimate.fit, refinements, np.eye(2))])
        output = keras.Model(serving.inputs, serving.get_layer("refined_estimate").output)(x)
        np.testing.assert_allclose(np.asarray(output), refined(first, components, refinements), rtol=1e-3,
                                   atol=2e-3)


def test_teff_gets_an_estimate_of_its_own_and_the_network_adds_the_parts_as_numpy_does():
    import keras

    from steps.models.keras.kernel_estimate import fit_kernel_estimate, fit_spectral_estimate
    from steps.models.keras.networks import spectral_hybrid

    x, z = _curved_spectra(200, 3)
    z = np.column_stack([z[:, 0], z[:, 0] ** 2, np.cos(2.0 * z[:, 0])])
    z[5, 0] = 9.0  # a wrong first label: the joint estimate leaves the star out
    estimate = fit_spectral_estimate(x, z)
    [joint, own] = estimate.parts
    assert (joint.fitted, joint.gives, own.fitted, own.gives) == ([0, 1, 2], [1, 2], [0], [0])
    assert 0 not in [refinement.target for refinement in joint.estimate.refinements]  # no refinement it never gives
    assert [entry["target"] for entry in joint.estimate.record["refinements"]] == [1, 2]
    alone = fit_kernel_estimate(x, z[:, [0]])
    assert np.allclose(estimate.predict(x)[:, 0], alone.predict(x)[:, 0])
    assert np.allclose(estimate.predict(x)[:, 1:], fit_kernel_estimate(x, z).predict(x)[:, 1:])
    assert 5 not in estimate.rows and estimate.record["separate_estimates"][0]["labels"] == [0]
    # the first label's training estimates are its own part's leave-one-out ones
    assert np.allclose(estimate.out_of_sample[:, 0], alone.out_of_sample[np.searchsorted(alone.rows, estimate.rows), 0])
    serving, _ = spectral_hybrid({"spectrum": (40, 2)}, 3, estimate.network_parts())
    output = keras.Model(serving.inputs, serving.get_layer("refined_estimate").output)(x)
    np.testing.assert_allclose(np.asarray(output), estimate.predict(x), rtol=1e-3, atol=2e-3)


def test_a_teff_gate_needs_enough_stars_in_its_range_and_some_outside():
    from steps.models.keras.training import TEFF_GATE_MIN_ROWS, _teff_gate

    def to_z(kelvin):
        return float(np.log10(kelvin))

    fgk, hot = np.log10(np.full(TEFF_GATE_MIN_ROWS, 5800.0)), np.log10([12000.0, 25000.0])
    assert _teff_gate(fgk, to_z, 0.01) is None                              # nothing outside its range
    assert _teff_gate(np.concatenate([fgk[1:], hot]), to_z, 0.01) is None   # too few in it
    rows, low, high, edge = _teff_gate(np.concatenate([fgk, hot, [np.nan]]), to_z, 0.01)
    assert rows.tolist() == [True] * TEFF_GATE_MIN_ROWS + [False] * 3
    assert (low, high, edge) == (np.log10(3700.0), np.log10(7600.0), 0.01)


def test_hot_stars_lose_their_feh_wherever_teff_sits_among_the_labels():
    from steps.models.keras.training import _without_hot_metallicity

    z = np.array([[4.0, 0.1, -0.5], [4.0, 0.9, 0.2], [4.0, np.nan, 0.3]])     # log g, Teff, [Fe/H]
    out = _without_hot_metallicity(z, teff_column=1, teff_max=0.5, column=2)
    assert out[:, 2].tolist()[0] == -0.5 and np.isnan(out[1, 2]) and out[2, 2] == 0.3
    assert np.array_equal(out[:, :2], z[:, :2], equal_nan=True) and z[1, 2] == 0.2   # the input is untouched


def test_the_teff_gate_takes_the_narrower_estimate_inside_its_box_and_the_network_gates_as_numpy_does():
    import keras

    from steps.models.keras.kernel_estimate import fit_kernel_estimate, fit_spectral_estimate
    from steps.models.keras.networks import spectral_hybrid

    x, z = _curved_spectra(240, 4)
    z = np.column_stack([z[:, 0], z[:, 0] ** 2, np.cos(2.0 * z[:, 0])])
    narrow_rows = np.abs(z[:, 0]) < 0.8
    ungated = fit_spectral_estimate(x, z)
    gated = fit_spectral_estimate(x, z, gate=(narrow_rows, -0.6, 0.6, 0.02))
    assert ungated.gate is None and gated.gate.record["fitted_rows"] == narrow_rows.sum()
    narrow_fit = fit_kernel_estimate({"spectrum": x["spectrum"][narrow_rows]}, z[narrow_rows][:, [0]])
    narrower = narrow_fit.predict(x)[:, 0]
    before, after = ungated.predict(x), gated.predict(x)
    inside, outside = np.abs(before[:, 0]) < 0.4, np.abs(before[:, 0]) > 0.8
    assert inside.sum() > 20 and outside.sum() > 20
    np.testing.assert_allclose(after[inside, 0], narrower[inside], atol=1e-3)
    np.testing.assert_allclose(after[outside, 0], before[outside, 0], atol=1e-3)
    assert np.array_equal(after[:, 1:], before[:, 1:])                 # the other labels are the parts' own
    # the training rows' estimates: gated as predictions are, from the narrower fit's leave-one-out estimates of the
    # rows it was fitted on (its rows, as rows of the whole set) and its predictions of the others
    assert np.array_equal(gated.rows, ungated.rows)
    own = np.flatnonzero(narrow_rows)[narrow_fit.rows]
    values = narrower[gated.rows]
    fitted = np.isin(gated.rows, own)
    values[fitted] = narrow_fit.out_of_sample[np.searchsorted(own, gated.rows[fitted]), 0]
    first = ungated.out_of_sample[:, 0]
    expected = first + gated.gate.weight(first) * (values - first)
    assert fitted.sum() >= 10 and np.abs(values - first)[fitted].max() > 0.01
    np.testing.assert_allclose(gated.out_of_sample[:, 0], expected, atol=1e-9)
    serving, _ = spectral_hybrid({"spectrum": (40, 2)}, 3, gated.network_parts(), gate=gated.gate.network())
    output = keras.Model(serving.inputs, serving.get_layer("refined_estimate").output)(x)
    np.testing.assert_allclose(np.asarray(output), after, rtol=1e-3, atol=2e-3)


def test_a_windowed_estimate_gives_its_label_from_the_entries_in_its_window_alone():
    import keras

    from steps.models.keras.kernel_estimate import fit_kernel_estimate, fit_spectral_estimate
    from steps.models.keras.networks import spectral_hybrid

    x, z = _curved_spectra(200, 3)
    z = np.column_stack([z[:, 0], z[:, 0] ** 2, np.cos(2.0 * z[:, 0])])
    window = {"spectrum": np.arange(40) >= 10}
    estimate = fit_spectral_estimate(x, z, (2,), window)
    [joint, own, windowed] = estimate.parts
    assert (joint.gives, own.gives, windowed.fitted, windowed.gives) == ([1], [0], [0, 1, 2], [2])
    assert estimate.record["separate_estimates"][1]["entries_seen"] == {"spectrum": 30}
    changed = {"spectrum": x["spectrum"].copy()}
    changed["spectrum"][:, :10, 0] = np.random.default_rng(5).normal(0.0, 3.0, size=(200, 10))
    before, after = estimate.predict(x), estimate.predict(changed)
    assert np.array_equal(before[:, 2], after[:, 2])        # blind to the entries outside its window
    assert not np.allclose(before[:, 1], after[:, 1], atol=0.05)   # the joint estimate is not
    # the same as an estimate of spectra whose entries outside the window are bad (mean-imputed, constant)
    masked = {"spectrum": x["spectrum"].copy()}
    masked["spectrum"][:, :10] = (0.0, 1.0)
    np.testing.assert_allclose(before[:, 2], fit_kernel_estimate(masked, z, [2]).predict(masked)[:, 2], atol=1e-6)
    serving, _ = spectral_hybrid({"spectrum": (40, 2)}, 3, estimate.network_parts())
    network = keras.Model(serving.inputs, serving.get_layer("refined_estimate").output)
    for inputs, expected in ((x, before), (changed, after)):
        np.testing.assert_allclose(np.asarray(network(inputs)), expected, rtol=1e-3, atol=2e-3)
    # Teff and [Fe/H] alone: the estimate of all labels would give nothing, so the windowed one takes its place
    pair = fit_spectral_estimate(x, z[:, [0, 2]], (1,), window)
    assert [(part.fitted, part.gives, part.estimate.record.get("entries_seen")) for part in pair.parts] == [
        ([0, 1], [1], {"spectrum": 30}), ([0], [0], None)]
    assert np.array_equal(pair.rows, pair.parts[0].estimate.rows)


def test_inputs_of_the_window_alone_are_seen_by_the_windowed_estimate_alone():
    from steps.models.keras.kernel_estimate import fit_spectral_estimate

    x, z = _curved_spectra(200, 3)
    z = np.column_stack([z[:, 0], z[:, 0] ** 2, np.cos(2.0 * z[:, 0])])
    x["local"] = x["spectrum"].copy()
    window = {"spectrum": np.zeros(40, bool), "local": np.arange(40) >= 10}
    estimate = fit_spectral_estimate(x, z, (2,), window, window_inputs=("local",))
    before = estimate.predict(x)
    rng = np.random.default_rng(5)
    for key, blind, seeing in (("spectrum", [2], [0, 1]), ("local", [0, 1], [2])):
        changed = {**x, key: x[key].copy()}
        changed[key][:, 10:, 0] += rng.normal(0.0, 3.0, size=(200, 30))
        after = estimate.predict(changed)
        assert np.array_equal(before[:, blind], after[:, blind])
        assert not np.allclose(before[:, seeing], after[:, seeing], atol=0.05)


def test_metallicity_window_takes_the_pixels_and_blocks_redder_than_its_start():
    from steps.models.keras.kernel_estimate import METALLICITY_WINDOW_START, metallicity_window
    from steps.preprocess.spectra import grid_spec, output_grid

    shapes = {"spectrum": (1024, 2), "continuum": (64, 2)}
    window = metallicity_window(grid_spec(1024, (3600.0, 9000.0)), shapes)
    start, step, _ = output_grid(1024, (3600.0, 9000.0))
    pixels = 10 ** (start + step * np.arange(1024))
    assert np.array_equal(window["spectrum"], pixels >= METALLICITY_WINDOW_START)
    assert window["spectrum"].sum() == 935 and window["continuum"].sum() == 58 and not window["continuum"][:6].any()
    assert metallicity_window(grid_spec(1024, (3900.0, 9000.0)), shapes) is None  # the whole grid is redder
    assert metallicity_window(None, shapes) is None
    assert metallicity_window(grid_spec(1024, (3600.0, 9000.0)), {"spectrum": (512, 2)}) is None
    local = metallicity_window(grid_spec(1024, (3600.0, 9000.0)), {**shapes, "local": (1024, 2)})
    assert np.array_equal(local["local"], window["spectrum"]) and not local["spectrum"].any()
    whole = metallicity_window(grid_spec(1024, (3900.0, 9000.0)), {**shapes, "local": (1024, 2)})
    assert whole["local"].all() and whole["continuum"].all() and not whole["spectrum"].any()


def test_weights_on_the_flattened_input_equal_those_on_mean_imputed_pixels():
    from steps.models.keras.kernel_estimate import imputed, on_flattened

    rng = np.random.default_rng(0)
    flux, bad = rng.normal(size=(5, 7)), rng.random((5, 7)) < 0.3
    spectrum = np.stack([np.where(bad, 0.0, flux), bad.astype(float)], axis=-1)  # as VectorInput encodes
    pixel_mean, weights = rng.normal(size=7), rng.normal(size=(7, 3))
    expected = np.where(bad, pixel_mean, flux) @ weights
    assert np.allclose(imputed(spectrum, pixel_mean) @ weights, expected)
    assert np.allclose(spectrum.reshape(5, -1) @ on_flattened(weights, pixel_mean), expected)


def test_teff_range_keeps_stars_in_it_and_stars_without_a_teff():
    import pyarrow as pa

    from steps.models.baseline import in_teff_range

    table = pa.table({"id": ["cool", "fgk", "hot", "unknown"], "teff": [2300.0, 5800.0, 21581.0, None]})
    assert in_teff_range(table, (3500.0, 8000.0)).column("id").to_pylist() == ["fgk", "unknown"]


def test_label_outliers_are_those_far_from_the_robust_centre_in_any_label():
    from steps.models.linear import robust_outliers

    residuals = np.random.default_rng(1).normal(size=(200, 2))
    residuals[7, 0], residuals[9, 1], residuals[11, 1] = 12.0, -12.0, np.nan
    flagged = np.flatnonzero(robust_outliers(residuals, 5.0))
    assert flagged.tolist() == [7, 9]


def test_classifier_is_temperature_scaled_and_passes_the_period_through_for_periodic_classes(trained, split):
    model_dir = trained("lightcurve")
    calibration = json.loads((model_dir / "model.json").read_text())["calibration"]
    assert 0.05 <= calibration["temperature"] <= 20
    assert calibration["log_loss_after"] <= calibration["log_loss_before"] + 1e-9
    assert calibration["ece_before"] is not None and calibration["ece_after"] is not None
    model = load_model(model_dir)
    test = _table(split, "lightcurve", "test")
    pred = model.predict_table(test)
    proba = pred[[f"p_{c}" for c in model.classes]].to_numpy()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    quiet = (pred["class"] == "quiet").to_numpy()
    assert quiet.any() and (~quiet).any()
    assert np.isnan(pred["period"][quiet]).all()
    np.testing.assert_array_equal(pred["period"][~quiet], test.column("period").to_numpy()[~quiet])


def test_sed_model_predicts_with_missing_bands(trained, split):
    model = load_model(trained("sed"))
    test = _table(split, "sed", "test").to_pandas()
    full = model.predict_table(test)
    for band in ("W1", "W2", "J"):
        for column in [c for c in test.columns if band in c.split("_")[1:] and test[c].dtype.kind == "f"]:
            test[column] = np.nan
    dropped = model.predict_table(test)
    assert np.isfinite(dropped[["teff", "teff_err"]].to_numpy()).all()
    truth = test["teff"].to_numpy()
    rmse = lambda p: float(np.sqrt(np.mean((p - truth) ** 2)))  # noqa: E731
    assert rmse(dropped["teff"].to_numpy()) < 0.5 * float(np.std(truth))
    # less information, more doubt: the ensemble's members disagree more without the bands (measured 1.29 times the
    # median Teff sigma, for answers 1.5 times further off; 1.68 times, for 2.1 times, before the training copies
    # dropped whole surveys; a single MLP's own variance head said 1.12)
    assert np.median(dropped["teff_err"]) >= 1.15 * np.median(full["teff_err"])
    with pytest.raises(ValueError, match="none of the input fields"):
        model.predict_records([{"parallax": None}])


def test_sed_training_copies_drop_whole_surveys_but_never_gaia():
    """A star missing from 2MASS or AllWISE lacks all of that survey's bands: the training copies drop them together
    (with one band at a time, Gaia's bands alone came up in 0.02% of copies and the ensemble missed such stars'
    Teff by 87 K against the ridge's 31 K; `bench/results/sed_quality.md`)."""
    from steps.models.keras.encoders import ScalarInput
    from steps.models.keras.training import RECIPES, _band_dropout

    columns = ["mag_G", "mag_BP", "c_BP_RP", "mag_J", "err_Ks", "c_J_Ks", "mag_W1", "c_W1_W2", "abs_G", "parallax"]
    block = ScalarInput(columns, "photometry")
    bands = ["G", "BP", "RP", "J", "H", "Ks", "W1", "W2"]
    x = {block.key: np.ones((4000, len(columns))), block.missing_key: np.zeros((4000, len(columns)))}
    recipe = dataclasses.replace(RECIPES["sed"], band_dropout=0.0, survey_dropout=0.5)
    out, y = _band_dropout(x, np.zeros((4000, 3)), block, bands, recipe, np.random.default_rng(0))
    missing = out[block.missing_key][4000:].astype(bool)
    assert len(y) == 4000 * (recipe.dropout_copies + 1) and not out[block.missing_key][:4000].any()
    by_survey = {survey: missing[:, [columns.index(c) for c in names]]
                 for survey, names in {"gaia": ["mag_G", "mag_BP", "c_BP_RP", "abs_G", "parallax"],
                                       "2mass": ["mag_J", "err_Ks", "c_J_Ks"], "wise": ["mag_W1", "c_W1_W2"]}.items()}
    assert not by_survey["gaia"].any()
    for survey in ("2mass", "wise"):
        assert (by_survey[survey].all(axis=1) | ~by_survey[survey].any(axis=1)).all()  # all of it or none
        assert 0.45 < by_survey[survey][:, 0].mean() < 0.55
    gaia_only = by_survey["2mass"][:, 0] & by_survey["wise"][:, 0]
    assert 0.2 < gaia_only.mean() < 0.3


def test_training_with_a_seed_is_deterministic(trained, split, tmp_path):
    from steps.train import train_from_split

    again = train_from_split("sed", split, tmp_path / "sed", trainer="keras", epochs=SED_EPOCHS, seed=1)
    test = _table(split, "sed", "test")
    first, second = load_model(trained("sed")).predict_table(test), load_model(again).predict_table(test)
    numbers = first.select_dtypes("number").columns
    # TensorFlow's deterministic ops make CPU training bit-for-bit repeatable; allow for round-off anyway.
    np.testing.assert_allclose(first[numbers].to_numpy(), second[numbers].to_numpy(), rtol=1e-5)
    assert (trained("sed") / "model.json").read_text() == (again / "model.json").read_text()


@pytest.mark.slow
def test_cli_trains_the_keras_model_by_default(split, tmp_path):
    result = subprocess.run([sys.executable, "-m", "steps.train", "sed", "--split", str(split), "--out",
                             str(tmp_path / "sed"), "--epochs", "3"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "sed" / "manifest.json").read_text())["parameters"]["trainer"] == "keras"
    assert "3 epochs" in result.stderr
