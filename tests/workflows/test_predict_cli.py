"""`stellar predict`: raw or feature inputs, preprocessed as in training, predicted by a registered model.

The models here are the NumPy baselines (the command treats every kind alike), so no TensorFlow is imported.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steps.core.registry import PRODUCTION, ModelRegistry
from steps.ingest.__main__ import main as ingest
from steps.ingest.schemas import DATA_FILES
from steps.preprocess.__main__ import main as preprocess
from steps.split.__main__ import main as split_stage
from steps.train import train_from_split
from workflows.predict_cli import _read_folder, add_predict_command

MODALITY = {"spectral": "spectra", "lightcurve": "lightcurves", "sed": "photometry"}


def stellar_predict(*argv: str) -> int:
    """`stellar predict ...` through the command's own parser (as `workflows.cli` wires it)."""
    parser = argparse.ArgumentParser(prog="stellar")
    add_predict_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["predict", *argv])
    return args.handler(args)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Raw and feature artifacts of synthetic spectra and photometry, baselines trained on them, in a registry."""
    root = tmp_path_factory.mktemp("predict")
    registry = ModelRegistry.open(str(root / "home" / "registry"))
    out = {"root": root}
    for model, modality, extra in (("spectral", "spectra", ["--length", "256"]), ("sed", "photometry", [])):
        raw, features, split = root / f"raw-{modality}", root / f"features-{modality}", root / f"split-{modality}"
        assert ingest([modality, "--source", "synthetic", "--samples", "80", "--seed", "3", "--out", str(raw)]) == 0
        assert preprocess([modality, "--in", str(raw), "--out", str(features), *extra]) == 0
        assert split_stage([f"--{modality}", str(features), "--seed", "3", "--out", str(split)]) == 0
        model_dir = train_from_split(model, split, root / f"model-{model}", trainer="baseline")
        record = registry.register(model, model_dir)
        registry.set_alias(model, PRODUCTION, record.version)
        out[model] = {"raw": raw, "features": features, "model": model_dir}
    return out


REGRESSION_COLUMNS = ["id", "teff", "logg", "feh", "teff_err", "logg_err", "feh_err", "domain_distance", "in_domain",
                      "problem"]


def test_predicts_a_raw_artifact_preprocessed_with_the_models_spec(pipeline, tmp_path, capsys):
    home = pipeline["root"] / "home"
    csv = tmp_path / "spectra.csv"
    assert stellar_predict("spectral", "--input", str(pipeline["spectral"]["raw"]), "--output", str(csv),
                           "--home", str(home)) == 0
    assert "spectral version 1 (production): 80 objects" in capsys.readouterr().out
    frame = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    assert list(frame.columns) == REGRESSION_COLUMNS
    raw_ids = pq.read_table(pipeline["spectral"]["raw"] / "spectra.parquet").column("id").to_pylist()
    assert frame["id"].tolist() == raw_ids  # one row per object, in input order
    predicted = frame[frame["problem"].isna()]
    assert len(predicted) >= 70 and predicted[["teff", "teff_err"]].notna().all().all()
    assert predicted["teff"].between(2500, 50000).all()
    assert predicted["in_domain"].isin([True, False]).all() and predicted["domain_distance"].ge(0).all()


def test_objects_unlike_the_training_set_are_counted_in_the_summary(pipeline, tmp_path, capsys):
    features = pq.read_table(pipeline["spectral"]["features"] / "features.parquet").slice(0, 6).to_pandas()
    features["flux"] = [4.0 - 3.0 * np.asarray(flux) for flux in features["flux"]]  # strong emission lines
    alien = tmp_path / "alien.parquet"
    pq.write_table(pa.Table.from_pandas(features, preserve_index=False), alien)
    csv = tmp_path / "alien.csv"
    assert stellar_predict("spectral", "--input", str(alien), "--output", str(csv),
                           "--model", str(pipeline["spectral"]["model"])) == 0
    assert "6 unlike the training objects: see `in_domain`)" in capsys.readouterr().out
    frame = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    assert (~frame["in_domain"]).all() and (frame["domain_distance"] > 1).all()


def test_raw_file_and_feature_artifact_give_the_predictions_of_the_raw_artifact(pipeline, tmp_path):
    model = str(pipeline["sed"]["model"])
    outputs = {}
    for label, source in (("artifact", pipeline["sed"]["raw"]),
                          ("raw file", pipeline["sed"]["raw"] / "photometry.parquet"),
                          ("features", pipeline["sed"]["features"]),
                          ("feature file", pipeline["sed"]["features"] / "features.parquet")):
        csv = tmp_path / f"{label}.csv"
        assert stellar_predict("sed", "--input", str(source), "--output", str(csv), "--model", model) == 0
        outputs[label] = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    reference = outputs.pop("artifact")
    assert list(reference.columns) == REGRESSION_COLUMNS
    for label, frame in outputs.items():
        pd.testing.assert_frame_equal(frame[frame["problem"].isna()].reset_index(drop=True),
                                      reference[reference["problem"].isna()].reset_index(drop=True), obj=label)


def test_spectral_features_on_another_grid_are_refused_with_both_grids(pipeline, tmp_path, capsys):
    import json
    import shutil

    model, csv = str(pipeline["spectral"]["model"]), tmp_path / "p.csv"
    assert stellar_predict("spectral", "--input", str(pipeline["spectral"]["features"]), "--output", str(csv),
                           "--model", model) == 0
    moved = tmp_path / "features-3900"  # same length, the grid of an older release
    shutil.copytree(pipeline["spectral"]["features"], moved)
    spec = json.loads((moved / "spec.json").read_text())
    spec["grid"]["loglam_start"] = float(np.log10(3900.0)) + spec["grid"]["loglam_step"] / 2
    (moved / "spec.json").write_text(json.dumps(spec))
    capsys.readouterr()
    assert stellar_predict("spectral", "--input", str(moved), "--output", str(tmp_path / "q.csv"),
                           "--model", model) == 2
    error = capsys.readouterr().err
    assert f"--input {moved} has the grid 256 pixels, 3907.0-9732.6 A at 1075.0 km/s a pixel" in error
    assert "but the model was trained on 256 pixels, 3606.4-8983.9 A at 1075.0 km/s a pixel" in error
    assert not (tmp_path / "q.csv").exists()


def _split_fixtures():
    """tests/steps/split_fixtures.py (on the path only when tests/steps is collected)."""
    path = Path(__file__).resolve().parents[1] / "steps" / "split_fixtures.py"
    spec = importlib.util.spec_from_file_location("split_fixtures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_classifier_output_has_a_class_probabilities_and_the_period(tmp_path):
    split = _split_fixtures().write_split(tmp_path / "split", n=60, seed=4)
    model_dir = train_from_split("lightcurve", split, tmp_path / "lc", trainer="baseline")
    csv = tmp_path / "lc.csv"
    assert stellar_predict("lightcurve", "--input", str(split / "lightcurves" / "test.parquet"), "--output",
                           str(csv), "--model", str(model_dir)) == 0
    frame = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    classes = ["transit", "eclipsing_binary", "pulsator", "rotator", "quiet"]
    assert list(frame.columns) == ["id", "class", *(f"p_{c}" for c in classes), "period", "domain_distance",
                                   "in_domain", "problem"]
    assert len(frame) == 12 and frame["class"].isin(classes).all()
    assert ((frame[[f"p_{c}" for c in classes]].sum(axis=1) - 1).abs() < 1e-4).all()


def test_no_production_model_exits_2_naming_the_versions(pipeline, tmp_path, capsys, monkeypatch):
    empty_home = tmp_path / "empty"
    (empty_home / "registry").mkdir(parents=True)
    assert stellar_predict("sed", "--input", str(pipeline["sed"]["raw"]), "--output", str(tmp_path / "x.csv"),
                           "--home", str(empty_home)) == 2
    assert f"--model production: no model 'sed' in {empty_home / 'registry'} (models: none); train" \
        in capsys.readouterr().err
    for flag, given, registry in (("--home", tmp_path / "no-home", tmp_path / "no-home" / "registry"),
                                  ("--registry", tmp_path / "no-registry", tmp_path / "no-registry")):
        assert stellar_predict("sed", "--input", str(pipeline["sed"]["raw"]), "--output", str(tmp_path / "x.csv"),
                               flag, str(given)) == 2  # a mistyped flag, not a model that is missing
        assert capsys.readouterr().err.startswith(f"stellar predict: {flag} {given}: no registry at {registry} (no "
                                                  "such folder): give the --home or --registry of a `stellar run`")
    monkeypatch.setenv("STELLAR_HOME", str(tmp_path / "env-home"))  # the home no flag gave
    assert stellar_predict("sed", "--input", str(pipeline["sed"]["raw"]), "--output", str(tmp_path / "x.csv")) == 2
    assert capsys.readouterr().err.startswith(f"stellar predict: STELLAR_HOME {tmp_path / 'env-home'}: no registry")
    assert stellar_predict("sed", "--input", str(pipeline["sed"]["raw"]), "--output", str(tmp_path / "x.csv"),
                           "--home", str(pipeline["root"] / "home"), "--model", "candidate") == 2
    error = capsys.readouterr().err
    assert "--model candidate: model 'sed' has no alias 'candidate' (aliases: production) (versions: 1)" in error
    assert error.count("versions") == 1
    assert stellar_predict("sed", "--input", str(pipeline["sed"]["raw"]), "--output", str(tmp_path / "x.csv"),
                           "--model", str(tmp_path / "no-model")) == 2
    assert f"--model {tmp_path / 'no-model'}: no such model directory" in capsys.readouterr().err
    (tmp_path / "trained" / "sed-v1").mkdir(parents=True)  # the folder above a model
    (tmp_path / "trained" / "sed-v1" / "model.json").write_text("{}")
    assert stellar_predict("sed", "--input", str(pipeline["sed"]["raw"]), "--output", str(tmp_path / "x.csv"),
                           "--model", str(tmp_path / "trained")) == 2
    assert (f"--model {tmp_path / 'trained'}: not a model directory (no model.json in it); the model is in "
            f"{tmp_path / 'trained' / 'sed-v1'}") in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_the_folder_stellar_train_names_is_taken_as_stellar_models_register_takes_it(pipeline, tmp_path, capsys):
    """`stellar train-sed` prints DIR/sed (its model in DIR/sed/model), which `models register` took and `predict
    --model` refused."""
    import shutil

    shutil.copytree(pipeline["sed"]["model"], tmp_path / "sed" / "model")
    assert stellar_predict("sed", "--input", str(pipeline["sed"]["raw"]), "--output", str(tmp_path / "x.csv"),
                           "--model", str(tmp_path / "sed")) == 0
    assert f"model {tmp_path / 'sed' / 'model'}: 80 objects" in capsys.readouterr().out


def test_a_registry_record_that_does_not_parse_is_one_line_naming_it(pipeline, tmp_path, capsys):
    """A registry record cut short showed a traceback from `predict`, and pydantic's text from `models`."""
    import shutil

    from workflows.cli import main

    home = tmp_path / "home"
    shutil.copytree(pipeline["root"] / "home" / "registry", home / "registry")
    for record in ("aliases.json", "versions/1.json"):
        (home / "registry" / "sed" / record).write_text('{"x":')
        assert stellar_predict("sed", "--input", str(pipeline["sed"]["raw"]), "--output", str(tmp_path / "x.csv"),
                               "--home", str(home)) == 2
        error = capsys.readouterr().err
        assert f"--model production: {home / 'registry' / 'sed' / record}: not a readable " in error
        assert "Traceback" not in error and "train and promote" not in error and len(error.splitlines()) == 1
        for command in (["list"], ["show", "sed"]):
            assert main(["models", *command, "--home", str(home)]) == 2
            error = capsys.readouterr().err
            assert error.startswith(f"stellar models: {home / 'registry' / 'sed' / record}: not a readable ")
            assert "pydantic" not in error and len(error.splitlines()) == 1
        shutil.copy2(pipeline["root"] / "home" / "registry" / "sed" / record, home / "registry" / "sed" / record)
    assert not (tmp_path / "x.csv").exists()


def test_a_registered_model_whose_stored_files_changed_is_refused_without_a_retrain_hint(pipeline, tmp_path, capsys):
    import shutil

    home = tmp_path / "home"
    shutil.copytree(pipeline["root"] / "home" / "registry", home / "registry")
    stored = next(path for path in (home / "registry" / "sed" / "blobs").rglob("*") if path.is_file()
                  and path.name != "manifest.json")
    stored.write_bytes(stored.read_bytes() + b" ")
    assert stellar_predict("sed", "--input", str(pipeline["sed"]["raw"]), "--output", str(tmp_path / "x.csv"),
                           "--home", str(home)) == 2
    error = capsys.readouterr().err
    assert "--model production: sed version 1: the files stored in" in error and "are not those registered" in error
    assert "train and promote" not in error and not (tmp_path / "x.csv").exists()


def test_inputs_of_another_modality_are_refused(pipeline, tmp_path, capsys):
    assert stellar_predict("sed", "--input", str(pipeline["spectral"]["raw"]), "--output", str(tmp_path / "x.csv"),
                           "--model", str(pipeline["sed"]["model"])) == 2
    assert "not of ingest.photometry" in capsys.readouterr().err
    assert stellar_predict("spectral", "--input", str(pipeline["sed"]["raw"] / "photometry.parquet"), "--output",
                           str(tmp_path / "x.csv"), "--model", str(pipeline["spectral"]["model"])) == 2
    assert "neither a spectra feature table nor a raw spectra table" in capsys.readouterr().err


def _library_spectra(pipeline, folder: Path, count: int) -> list[str]:
    """The first `count` synthetic raw spectra written as 1-D library FITS files (linear wavelengths, in vacuum)."""
    from astropy.io import fits

    folder.mkdir(parents=True, exist_ok=True)
    raw = pq.read_table(pipeline["spectral"]["raw"] / "spectra.parquet").slice(0, count).to_pylist()
    wave = np.arange(3600.0, 9000.0, 2.0)
    names = []
    for row in raw:
        flux = np.interp(wave, 10 ** np.asarray(row["loglam"]), np.asarray(row["flux"]))
        hdu = fits.PrimaryHDU(flux)
        hdu.header.update({"CRVAL1": wave[0], "CDELT1": 2.0, "CRPIX1": 1.0, "AIRORVAC": "vac"})
        hdu.writeto(folder / f"{row['id']}.fits")
        names.append(row["id"])
    return names


def test_unreadable_files_keep_their_row_and_one_archive_file_is_read_alone(pipeline, tmp_path, capsys, caplog):
    names = _library_spectra(pipeline, tmp_path / "lib", 3)
    (tmp_path / "lib" / "notes.fits").write_text("not a FITS file")
    home, csv = str(pipeline["root"] / "home"), tmp_path / "lib.csv"
    assert stellar_predict("spectral", "--input", str(tmp_path / "lib"), "--output", str(csv), "--home", home) == 0
    assert "4 objects" in capsys.readouterr().out
    frame = pd.read_csv(csv, keep_default_na=False, na_values=[""]).set_index("id")
    assert sorted(frame.index) == sorted([*names, "notes"])
    assert frame.loc["notes", "problem"].startswith("quarantined: notes.fits: unreadable FITS")
    # read and answered (these noiseless resamplings are far outside a 57-star baseline's domain: labels it answers
    # beyond its training labels are left blank, and say so)
    answered = frame.loc[names]
    assert answered["domain_distance"].notna().all()
    assert (answered["teff"].notna() | answered["problem"].str.contains("teff left blank")).all()

    one = tmp_path / "one.csv"
    with caplog.at_level("INFO"):
        assert stellar_predict("spectral", "--input", str(tmp_path / "lib" / f"{names[1]}.fits"), "--output",
                               str(one), "--home", home) == 0
    assert f"{tmp_path / 'lib' / names[1]}.fits: 1 spectra" in caplog.text  # the file, not a temporary folder
    alone = pd.read_csv(one, keep_default_na=False, na_values=[""]).set_index("id")
    assert list(alone.index) == [names[1]]
    assert alone.loc[names[1], "teff"] == pytest.approx(frame.loc[names[1], "teff"], rel=1e-5)


def test_the_reasons_listed_are_bounded():
    from workflows.predict_cli import _reasons

    frame = pd.DataFrame({"id": [f"s{i}" for i in range(2000)],
                          "problem": [f"the spectrum spans {i}-{i + 9} A" for i in range(2000)]})
    lines = _reasons(frame).splitlines()
    assert len(lines) == 11 and lines[-1] == "  and 1990 more reasons, for 1990 objects"


def test_an_input_with_nothing_to_predict_exits_2(pipeline, tmp_path, capsys):
    home = str(pipeline["root"] / "home")
    (tmp_path / "empty").mkdir()
    assert stellar_predict("spectral", "--input", str(tmp_path / "empty"), "--output", str(tmp_path / "e.csv"),
                           "--home", home) == 2
    assert f"--input {tmp_path / 'empty'}: no spectrum files (FITS: .fits, .fit, .fts, gzipped or not) in it; it is " \
        "empty" in capsys.readouterr().err
    assert not (tmp_path / "e.csv").exists()
    (tmp_path / "e.csv").write_text("id,teff\nold,5000\n")  # an earlier run's answer is kept, and said to be
    assert stellar_predict("spectral", "--input", str(tmp_path / "empty"), "--output", str(tmp_path / "e.csv"),
                           "--home", home) == 2
    assert f"({tmp_path / 'e.csv'}, from before, was left as it was)" in capsys.readouterr().err
    assert (tmp_path / "e.csv").read_text() == "id,teff\nold,5000\n"

    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.fits").write_bytes(b"SIMPLE  =                    T")
    assert stellar_predict("spectral", "--input", str(tmp_path / "junk"), "--output", str(tmp_path / "j.csv"),
                           "--home", home) == 2
    error = capsys.readouterr().err
    assert "none of its 1 object could be predicted\n  1 x quarantined: a.fits: " in error
    assert error.rstrip().endswith("(a)") and not (tmp_path / "j.csv").exists()

    good = tmp_path / "good.csv"  # a good answer is not replaced by a table of failures
    _library_spectra(pipeline, tmp_path / "lib", 2)
    assert stellar_predict("spectral", "--input", str(tmp_path / "lib"), "--output", str(good), "--home", home) == 0
    answer = good.read_bytes()
    capsys.readouterr()
    assert stellar_predict("spectral", "--input", str(tmp_path / "junk" / "a.fits"), "--output", str(good),
                           "--home", home) == 2
    assert f"could be predicted ({good}, from before, was left as it was)\n  1 x " in capsys.readouterr().err
    assert good.read_bytes() == answer

    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "stars.csv").write_text("")
    assert stellar_predict("sed", "--input", str(tmp_path / "blank"), "--output", str(tmp_path / "b.csv"),
                           "--home", home) == 2
    assert "none of its 1 object could be predicted\n  1 x quarantined: an empty file (0 bytes) (stars.csv)" \
        in capsys.readouterr().err


def test_a_parquet_input_cut_short_exits_2_naming_the_file(pipeline, tmp_path, capsys):
    import shutil

    home = str(pipeline["root"] / "home")
    for folder, name, what in (("raw-photometry", DATA_FILES["photometry"], "a raw table"),
                               ("features-photometry", "features.parquet", "the features")):
        copy = tmp_path / folder
        shutil.copytree(pipeline["root"] / folder, copy)
        (copy / name).write_bytes((copy / name).read_bytes()[:250])
        for given, expected in ((copy, f"--input {copy / name}: not a readable Parquet file ({what})"),
                                (copy / name, f"--input {copy / name}: not a readable Parquet file (a table)")):
            assert stellar_predict("sed", "--input", str(given), "--output", str(tmp_path / "p.csv"),
                                   "--home", home) == 2
            assert f"stellar predict: {expected}: " in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()


def test_an_output_that_cannot_be_written_is_refused_before_any_work(pipeline, tmp_path, capsys, monkeypatch):
    import workflows.predict_cli as predict_cli

    monkeypatch.setattr(predict_cli, "predict", lambda *args: pytest.fail("predicted before checking --output"))
    assert stellar_predict("sed", "--input", str(pipeline["sed"]["raw"]), "--output", str(tmp_path),
                           "--model", str(pipeline["sed"]["model"])) == 2
    assert f"--output {tmp_path}: is a folder" in capsys.readouterr().err
    if Path("/proc").is_dir():  # a folder whose permission bits allow writing, where no file can be made
        assert stellar_predict("sed", "--input", str(pipeline["sed"]["raw"]), "--output", "/proc/p.csv",
                               "--model", str(pipeline["sed"]["model"])) == 2
        assert ("--output /proc/p.csv: cannot write in its folder /proc: it takes no new files"
                in capsys.readouterr().err)
    table = tmp_path / "photometry.csv"  # the input itself: it would be replaced by its predictions
    table.write_text("id,mag_G,err_G\na,12.0,0.01\n")
    assert stellar_predict("sed", "--input", str(table), "--output", str(tmp_path / "." / table.name),
                           "--model", str(pipeline["sed"]["model"])) == 2
    assert "is the --input file; the predictions would replace it" in capsys.readouterr().err
    assert table.read_text() == "id,mag_G,err_G\na,12.0,0.01\n"
    assert stellar_predict("sed", "--input", str(table), "--output", str(table / "p.csv"),
                           "--model", str(pipeline["sed"]["model"])) == 2
    assert f"--output {table / 'p.csv'}: {table} is a file, not a folder" in capsys.readouterr().err


def test_a_record_set_aside_as_a_repeat_does_not_hide_its_kept_objects_prediction(pipeline, tmp_path, capsys):
    import shutil

    raw = tmp_path / "raw"
    shutil.copytree(pipeline["sed"]["raw"], raw)
    first = pq.read_table(raw / "photometry.parquet").column("id")[0].as_py()
    pq.write_table(pa.Table.from_pylist([{"id": first, "source": "x", "reason": "repeated record, kept once"},
                                         {"id": "ghost", "source": "x", "reason": "unreadable row"}]),
                   raw / "quarantine.parquet")
    csv = tmp_path / "p.csv"
    assert stellar_predict("sed", "--input", str(raw), "--output", str(csv), "--model",
                           str(pipeline["sed"]["model"])) == 0
    frame = pd.read_csv(csv, keep_default_na=False, na_values=[""]).set_index("id")
    assert np.isfinite(frame.loc[first, "teff"]) and pd.isna(frame.loc[first, "problem"])
    assert frame.loc["ghost", "problem"] == "quarantined: unreadable row"
    assert oct(csv.stat().st_mode & 0o777) != oct(0o600)  # as open() makes it, not owner-only
    assert (f"note: {first}: a record of it was set aside (repeated record, kept once); its row is from the record "
            "kept") in capsys.readouterr().err


def test_part_of_a_library_gets_a_row_per_spectrum_and_a_bad_file_keeps_its_stars_id(pipeline, shared_dir, tmp_path):
    """A folder with MILES's labels.csv and three of its spectra, one truncated: three rows, each under the star's
    id; the 512 label rows without a spectrum are not objects to predict."""
    import shutil

    miles = shared_dir / "data" / "miles"
    folder = tmp_path / "some-miles"
    (folder / "spectra").mkdir(parents=True)
    shutil.copy(miles / "labels.csv", folder)
    # the first file (cut short below), and two stars that this small synthetic-trained baseline answers within its
    # training labels (it leaves most MILES stars' labels blank)
    names = [sorted(path.name for path in (miles / "spectra").iterdir())[0],
             "MILES_res2.50_star_m0016V.fits.gz", "MILES_res2.50_star_m0017V.fits.gz"]
    for name in names:
        shutil.copy(miles / "spectra" / name, folder / "spectra")
    (folder / "spectra" / names[0]).write_bytes((miles / "spectra" / names[0]).read_bytes()[:5000])
    csv = tmp_path / "some.csv"
    assert stellar_predict("spectral", "--input", str(folder), "--output", str(csv), "--home",
                           str(pipeline["root"] / "home")) == 0
    frame = pd.read_csv(csv, keep_default_na=False, na_values=[""]).set_index("id")
    ids = [name.split("_star_")[1][:5] for name in names]  # MILES_res2.50_star_m0002V.fits.gz -> m0002
    assert sorted(frame.index) == sorted(ids)
    assert frame.loc[ids[0], "problem"].startswith(f"quarantined: spectra/{names[0]}: truncated or corrupt gzip")
    assert frame.loc[ids[1:], "problem"].isna().all()


def test_rows_of_a_labels_table_are_not_objects_but_a_catalogue_named_labels_csv_keeps_its_stars(shared_dir,
                                                                                                    tmp_path):
    """Two Stripe 82 stars extracted with table 2 (the classes of all 483): two objects, not 483. A photometry file
    that happens to be called labels.csv is a catalogue: its star without a band keeps its row."""
    import tarfile

    rrlyrae = shared_dir / "data" / "rrlyrae_s82"
    with tarfile.open(rrlyrae / "table1.tar.gz") as archive:
        members = [m for m in archive.getmembers() if m.name.endswith(("1013184.dat", "1019544.dat"))]
        archive.extractall(tmp_path / "s82", members=members, filter="data")
    (tmp_path / "s82" / "table2.dat.gz").write_bytes((rrlyrae / "table2.dat.gz").read_bytes())
    raw, reasons = _read_folder("lightcurves", tmp_path / "s82")
    assert raw.data.column("id").to_pylist() == ["S82-RRL-1013184", "S82-RRL-1019544"] and reasons == {}

    (tmp_path / "phot").mkdir()
    (tmp_path / "phot" / "labels.csv").write_text("id,mag_G,err_G,mag_BP,err_BP,teff\na,11.2,0.003,11.7,0.004,5800\n"
                                                  "b,,,,,5000\n")
    raw, reasons = _read_folder("photometry", tmp_path / "phot")
    assert raw.data.column("id").to_pylist() == ["a"] and list(reasons) == ["b"]


def test_an_answer_beyond_the_training_labels_is_left_blank_with_the_reason(pipeline, tmp_path, capsys):
    from steps.models import load_model
    from steps.models.label_range import allowed

    model_dir = pipeline["sed"]["model"]
    rows = pq.read_table(pipeline["sed"]["features"] / "features.parquet").slice(0, 3).to_pandas()
    rows.loc[0, ["mag_BP", "c_BP_RP"]] += 6.0  # a colour no star has: the quadratic ridge answers far off
    rows.loc[0, "c_G_BP"] -= 6.0
    path = tmp_path / "odd.parquet"
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), path)
    model = load_model(model_dir)
    raw = model.predict_table(pq.read_table(path), blank_beyond_labels=False)
    low, high = allowed(*model.label_ranges["teff"], "log10")
    assert not low <= raw["teff"][0] <= high and raw["in_domain"][0] is False  # evaluation sees the answer, flagged
    assert all(low <= t <= high for t in raw["teff"][1:])

    csv = tmp_path / "odd.csv"
    assert stellar_predict("sed", "--input", str(path), "--output", str(csv), "--model", str(model_dir)) == 0
    summary = capsys.readouterr().out  # answered, even with every label beyond: not "without a prediction"
    assert "(1 with a label left blank: see the `problem` column; 1 unlike the training objects" in summary
    frame = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    assert np.isnan(frame["teff"][0]) and np.isnan(frame["teff_err"][0]) and not frame["in_domain"][0]
    assert frame["problem"][0].startswith("teff left blank: the answer lies beyond the training labels (")
    assert frame["teff"][1:].notna().all() and frame["problem"][1:].isna().all()

    every = tmp_path / "every.parquet"  # every row answered beyond its labels: still a CSV of them, exit 0
    pq.write_table(pa.Table.from_pandas(rows.iloc[[0, 0]].assign(id=["x", "y"]), preserve_index=False), every)
    out = tmp_path / "every.csv"
    assert stellar_predict("sed", "--input", str(every), "--output", str(out), "--model", str(model_dir)) == 0
    assert "(2 with a label left blank" in capsys.readouterr().out
    assert pd.read_csv(out)["problem"].str.startswith("teff left blank").all()


def test_a_column_the_evaluation_found_no_better_than_the_training_mean_is_said_to_say_nothing(pipeline, tmp_path,
                                                                                               capsys):
    registry = ModelRegistry.open(str(tmp_path / "registry"))
    verdict = {"passed": True, "reasons": [], "checks": [],
               "uninformative": [{"target": "feh", "robust_sigma": 0.3049, "null_robust_sigma": 0.254}]}
    record = registry.register("sed", pipeline["sed"]["model"], verdict=verdict)
    registry.set_alias("sed", PRODUCTION, record.version)
    assert stellar_predict("sed", "--input", str(pipeline["sed"]["raw"]), "--output", str(tmp_path / "p.csv"),
                           "--registry", str(tmp_path / "registry"), "--home", str(tmp_path / "home")) == 0
    assert ("note: on its test objects this model's feh was no better than their training mean (robust sigma 0.3049 "
            "against 0.254): that column says nothing about these objects") in capsys.readouterr().err
    assert stellar_predict("sed", "--input", str(pipeline["sed"]["raw"]), "--output", str(tmp_path / "q.csv"),
                           "--home", str(pipeline["root"] / "home")) == 0
    assert "says nothing" not in capsys.readouterr().err
