"""The ingest stage on the synthetic source: determinism, stable ids, the raw schemas, and physics that can fail."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from steps.core.artifacts import read_manifest
from steps.ingest.__main__ import ingest, main
from steps.core.names import MODALITIES
from steps.ingest.schemas import DATA_FILES, DATA_SCHEMAS, LABEL_SCHEMAS, LABELS_FILE, LIGHTCURVE_CLASSES
from steps.ingest.synthetic import lightcurves, photometry, spectra
from steps.ingest.synthetic.objects import Star
from steps.ingest.synthetic.photometry import absolute_magnitudes
from steps.ingest.synthetic.stellar_spectrum import LINE_WAVES, LINES, planck_lambda, rest_frame_spectrum

BAND_INDEX = {band: index for index, band in enumerate(("G", "BP", "RP", "J", "H", "Ks", "W1", "W2"))}


def assert_same_rows(first: pa.Table, second: pa.Table) -> None:
    """Equal schemas and values, NaN equal to NaN (Arrow's `equals` holds NaN unequal to itself)."""
    assert first.schema.equals(second.schema) and first.num_rows == second.num_rows
    for name in first.column_names:
        one, other = first.column(name).combine_chunks(), second.column(name).combine_chunks()
        if pa.types.is_list(one.type):
            np.testing.assert_array_equal(pc.list_value_length(one), pc.list_value_length(other))
            one, other = one.flatten(), other.flatten()
        np.testing.assert_array_equal(one.to_numpy(zero_copy_only=False), other.to_numpy(zero_copy_only=False))


def _line_depth(line_name: str, star: Star) -> float:
    """1 - flux / continuum at the centre of a line in the noise-free rest-frame model."""
    wave = LINE_WAVES[[line.name for line in LINES].index(line_name)]
    return float(1 - rest_frame_spectrum(np.array([wave]), star)[0] / planck_lambda(np.array([wave]), star.teff)[0])


@pytest.mark.parametrize("modality", MODALITIES)
def test_same_seed_gives_identical_files_and_other_seeds_differ(tmp_path, modality):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        ingest(modality, "synthetic", 12, seed, tmp_path / name)
    files = {name: {entry.path: entry.sha256 for entry in read_manifest(tmp_path / name).files} for name in "abc"}
    assert files["a"] == files["b"]
    assert (tmp_path / "a" / DATA_FILES[modality]).read_bytes() == (tmp_path / "b" / DATA_FILES[modality]).read_bytes()
    assert files["a"][DATA_FILES[modality]] != files["c"][DATA_FILES[modality]]


@pytest.mark.parametrize("modality", MODALITIES)
def test_a_smaller_sample_is_a_prefix_of_a_larger_one(modality):
    generate = {"spectra": spectra.generate, "photometry": photometry.generate,
                "lightcurves": lightcurves.generate}[modality]
    small, large = generate(5, 3), generate(11, 3)
    for name in (modality, "labels"):
        assert_same_rows(large[name].slice(0, 5), small[name])
    ids = large[modality].column("id").to_pylist()
    assert len(set(ids)) == 11 and ids[0].startswith("synth-") and ids[0].endswith("-000001")


@pytest.mark.parametrize("modality", MODALITIES)
def test_raw_artifact_has_the_raw_schemas_and_says_synthetic(tmp_path, modality):
    ingest(modality, "synthetic", 6, 1, tmp_path / "raw")
    data = pq.read_table(tmp_path / "raw" / DATA_FILES[modality])
    labels = pq.read_table(tmp_path / "raw" / LABELS_FILE)
    assert data.schema.equals(DATA_SCHEMAS[modality]) and labels.schema.equals(LABEL_SCHEMAS[modality])
    assert data.column("id").to_pylist() == labels.column("id").to_pylist()
    assert set(data.column("source").to_pylist()) == {"synthetic"}
    manifest = read_manifest(tmp_path / "raw")
    assert manifest.synthetic and manifest.stage == f"ingest.{modality}" and manifest.counts["objects"] == 6
    assert manifest.parameters == {"modality": modality, "source": "synthetic", "samples": 6, "seed": 1}


def test_unknown_source_is_a_usage_error_naming_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["spectra", "--source", "sdss-typo", "--samples", "3", "--out", str(tmp_path / "raw")])
    assert exit_info.value.code == 2
    assert "'sdss-typo'" in capsys.readouterr().err
    assert not (tmp_path / "raw").exists()


def test_balmer_lines_peak_in_a_stars_and_metal_lines_in_cool_metal_rich_stars():
    hot, cool = Star(9000.0, 4.2, 0.0, 2.2), Star(4000.0, 4.6, 0.0, 0.6)
    for balmer in ("H-alpha", "H-beta", "H-delta"):
        assert _line_depth(balmer, hot) > _line_depth(balmer, cool) + 0.2
    assert _line_depth("H-beta", hot) > _line_depth("H-beta", Star(6000.0, 4.4, 0.0, 1.1))
    for metal in ("Mg b1", "Fe I 5269", "Na D2"):
        assert _line_depth(metal, cool) > _line_depth(metal, hot)
        assert _line_depth(metal, Star(5000.0, 4.5, 0.3, 0.8)) > _line_depth(metal, Star(5000.0, 4.5, -1.5, 0.8))


def test_spectra_look_like_sdss_coadds():
    tables = spectra.generate(40, 5)
    data, labels = tables["spectra"].to_pandas(), tables["labels"].to_pandas()
    loglam = data["loglam"][0]
    assert np.allclose(np.diff(loglam), 1e-4) and 10 ** loglam[0] >= 3800 and 10 ** loglam[-1] <= 9200
    assert np.all(np.abs(data["z"]) * 299792.458 <= 300)
    masks = np.concatenate(data["and_mask"].to_numpy())
    assert 0 < np.count_nonzero(masks) < 0.05 * masks.size
    assert np.all(np.concatenate(data["ivar"].to_numpy()) >= 0)
    snr = [np.nanmedian(f * np.sqrt(i)) for f, i in zip(data["flux"], data["ivar"])]
    assert 3 < min(snr) and max(snr) < 100
    assert labels["teff"].between(3500, 9500).all() and labels["feh"].between(-2.5, 0.5).all()
    giants = labels["logg"] < 3.8
    assert 0 < giants.sum() < len(labels) and (labels.loc[giants, "teff"] < 5300).all()


def test_photometry_colours_redden_as_stars_cool_and_vega_sets_the_zero_point():
    dwarfs = [Star(teff, 4.4 + 0.3 * (5800 - teff) / 2300, 0.0, (teff / 5772) ** (1 / 0.6))
              for teff in (9500, 8000, 6500, 5800, 5000, 4200, 3500)]
    mags = np.array([absolute_magnitudes(star) for star in dwarfs])
    bp_rp = mags[:, BAND_INDEX["BP"]] - mags[:, BAND_INDEX["RP"]]
    g_ks = mags[:, BAND_INDEX["G"]] - mags[:, BAND_INDEX["Ks"]]
    assert np.all(np.diff(bp_rp) > 0) and np.all(np.diff(g_ks) > 0)
    assert abs(bp_rp[0]) < 0.1 and abs(g_ks[0]) < 0.1                    # an A0 star is Vega-coloured
    assert 1.5 < g_ks[-1] < 4.0                                           # an M dwarf
    sun = absolute_magnitudes(Star(5772.0, 4.438, 0.0, 1.0))
    assert 4.3 < sun[BAND_INDEX["G"]] < 5.0                               # the Sun: M_G = 4.67
    # and BP-RP = 0.82 (Casagrande & VandenBerg 2018); box passbands alone give 0.62, bluer than any G2 V star
    assert abs(sun[BAND_INDEX["BP"]] - sun[BAND_INDEX["RP"]] - 0.82) < 0.05


def test_photometry_catalogue_is_magnitude_limited_with_realistic_defects():
    table = photometry.generate(150, 2)["photometry"].to_pandas()
    assert table["mag_G"].max() <= 19.5 + 0.1 and table["parallax_error"].gt(0).all()
    assert table["ebv"].ge(0).all() and table["parallax"].median() > 0
    missing = table[[f"mag_{band}" for band in BAND_INDEX]].isna().mean()
    assert missing["mag_G"] == 0 and 0 < missing["mag_W2"] < 0.5
    faint = table["mag_G"] > 17
    assert (table.loc[faint, "err_G"].median() > table.loc[~faint, "err_G"].median())


def test_lightcurves_are_kepler_like_and_classes_balanced():
    tables = lightcurves.generate(100, 4)
    data, labels = tables["lightcurves"].to_pandas(), tables["labels"].to_pandas()
    time = data["time"][0]
    steps = np.diff(time)
    assert np.isclose(np.median(steps), 29.4244 / 1440) and steps.max() > 0.4      # cadence and a gap
    assert 28 < time[-1] - time[0] < 31
    quality = np.concatenate(data["quality"].to_numpy())
    flux = np.concatenate(data["flux"].to_numpy())
    assert 0 < np.count_nonzero(quality) < 0.05 * quality.size
    assert 0 < np.isnan(flux).mean() < 0.05 and abs(np.nanmedian(flux) - 1) < 0.01
    counts = labels["class"].value_counts()
    assert set(counts.index) == set(LIGHTCURVE_CLASSES) and counts.min() >= 10
    assert labels["period"].isna().equals(labels["class"] == "quiet")
    assert labels.loc[labels["class"] == "transit", "period"].between(0.7, 10).all()


def test_synthetic_catalogue_errors_are_estimated_from_the_measured_magnitude():
    """As a catalogue's: the error of the measured magnitude, scattered, so that it does not give away the true one."""
    from steps.ingest.synthetic.photometry import ERROR_ESTIMATE_SCATTER, _noise

    rows = photometry.generate(300, 3)["photometry"].to_pandas()
    kept = rows["err_G"].notna()
    log_ratio = np.log(rows.loc[kept, "err_G"] / [_noise("G", m) for m in rows.loc[kept, "mag_G"]])
    assert abs(np.std(log_ratio) - ERROR_ESTIMATE_SCATTER) < 0.05
    assert abs(np.median(log_ratio)) < 0.05
    assert rows["parallax_error"].gt(0).all()


def test_labels_outside_what_a_star_can_have_are_left_blank_and_named(caplog):
    """A labels table's teff of 0 or -500, log g of 99 and [Fe/H] of 50 went to training unremarked."""
    from steps.ingest.__main__ import plausible_labels

    labels = pa.table({"id": ["a", "b", "c", "d"], "teff": [0.0, -500.0, 6205.0, 5348.0],
                       "logg": [4.5, 2.4, 99.0, None], "feh": [0.1, -0.3, -0.3, 50.0]})
    labels = pa.concat_tables([labels, pa.table({"id": ["e"], "teff": [5800.0], "logg": [4.4], "feh": [0.0]})])
    kept = plausible_labels(labels, "spectra from folder:lib")
    assert kept.to_pydict() == {"id": ["a", "b", "c", "d", "e"], "teff": [None] * 4 + [5800.0],
                                "logg": [None] * 4 + [4.4], "feh": [None] * 4 + [0.0]}  # a broken row's others too
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "spectra from folder:lib: 2 teff labels outside [1000, 100000] K (a: 0, b: -500): every label of these rows "
        "left blank",
        "spectra from folder:lib: 1 logg label outside [-1, 10] dex (c: 99): every label of the row left blank",
        "spectra from folder:lib: 1 feh label outside [-6, 2] dex (d: 50): every label of the row left blank"]
    lightcurve_labels = pa.table({"id": ["x"], "class": ["RRab"], "period": [0.5]})
    assert plausible_labels(lightcurve_labels, "lightcurves").equals(lightcurve_labels)
