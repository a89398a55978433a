"""The preprocess stage: grids, masks and normalisation, period recovery, quarantine and atomic publishing."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from scipy.stats import spearmanr

from steps.core.artifacts import ArtifactWriter, read_manifest
from steps.core.quarantine import QUARANTINE_TABLE
from steps.ingest.bands import BANDS
from steps.ingest.schemas import DATA_FILES, DATA_SCHEMAS, LABELS_FILE, SDSS_PIXEL_BITS
from steps.ingest.synthetic import lightcurves, photometry, spectra
from steps.preprocess.__main__ import main
from steps.core.names import FEATURES_FILE, SPEC_FILE
from steps.preprocess.common import publish, read_raw
from steps.preprocess.lightcurves import detrend, fourier_ratios, preprocess_lightcurves, robust_sigma
from steps.preprocess.photometry import MASK_BITS, preprocess_photometry
from steps.preprocess.spectra import output_grid, preprocess_spectra, resample


def write_raw(path, modality: str, data: pa.Table | pd.DataFrame, labels: pa.Table) -> object:
    """A raw artifact as ingest would publish it, from a table or an edited DataFrame of one."""
    if isinstance(data, pd.DataFrame):
        data = pa.Table.from_pandas(data, schema=DATA_SCHEMAS[modality], preserve_index=False)
    with ArtifactWriter(path, stage=f"ingest.{modality}", synthetic=True) as writer:
        writer.write_table(DATA_FILES[modality], data)
        writer.write_table(LABELS_FILE, labels)
    return path


def run_cli(args: list[str]) -> int:
    return main([str(arg) for arg in args])


@pytest.fixture(scope="module")
def spectra_raw(tmp_path_factory):
    tables = spectra.generate(24, 11)
    return write_raw(tmp_path_factory.mktemp("raw") / "spectra", "spectra", tables["spectra"], tables["labels"])


@pytest.fixture(scope="module")
def curves(tmp_path_factory):
    """150 synthetic light curves, preprocessed once: (raw tables, features table)."""
    tables = lightcurves.generate(150, 21)
    path = write_raw(tmp_path_factory.mktemp("raw") / "lightcurves", "lightcurves", tables["lightcurves"],
                     tables["labels"])
    return tables, preprocess_lightcurves(read_raw(path, "lightcurves"), workers=2).table.to_pandas()


# Spectra

def test_spectra_are_on_the_common_grid_normalised_and_masked(spectra_raw):
    features = preprocess_spectra(read_raw(spectra_raw, "spectra"), length=512)
    table = features.table.to_pandas()
    assert len(table) == 24 and len(features.quarantine) == 0
    for flux, ivar, mask in zip(table["flux"], table["ivar"], table["mask"]):
        assert flux.size == ivar.size == mask.size == 512
        bad = mask.astype(bool)
        assert np.all(flux[bad] == 1.0) and np.all(ivar[bad] == 0) and np.all(ivar[~bad] > 0)
        assert 0.9 < np.median(flux[~bad]) < 1.1
    assert (table["snr"] > 3).all()
    labels = pq.read_table(spectra_raw / LABELS_FILE).to_pandas().set_index("id")
    assert np.allclose(table.set_index("id")[["teff", "logg", "feh"]], labels.loc[table["id"]])
    grid = features.spec["grid"]
    start, step, edges = output_grid(512)
    assert grid["length"] == 512 and grid["loglam_start"] == start and grid["loglam_step"] == step
    assert np.isclose(10 ** edges[0], 3600) and np.isclose(10 ** edges[-1], 9000)


def test_spectra_are_moved_to_the_rest_frame_by_their_redshift(tmp_path, spectra_raw):
    """Redshifting a spectrum further (wavelengths and z together) leaves its features nearly unchanged, while
    shifting wavelengths without z moves its lines."""
    data = pq.read_table(spectra_raw / DATA_FILES["spectra"]).slice(0, 4).to_pandas()
    labels = pq.read_table(spectra_raw / LABELS_FILE).slice(0, 4)
    extra = 0.001                                                        # 300 km/s, about a pixel
    consistent, inconsistent = data.copy(), data.copy()
    for frame in (consistent, inconsistent):
        frame["loglam"] = [loglam + np.log10(1 + extra) for loglam in data["loglam"]]
    consistent["z"] = (1 + data["z"]) * (1 + extra) - 1

    def processed(frame, name):
        raw = write_raw(tmp_path / name, "spectra", frame, labels)
        return np.stack(preprocess_spectra(read_raw(raw, "spectra"), length=1024).table.column("flux").to_pylist())

    original = processed(data, "original")
    error_consistent = np.abs(processed(consistent, "consistent") - original).mean()
    error_inconsistent = np.abs(processed(inconsistent, "inconsistent") - original).mean()
    assert error_consistent < 0.5 * error_inconsistent


def test_continuum_shape_keeps_the_spectral_energy_distribution_normalisation_removes(tmp_path, spectra_raw):
    """A power-law spectrum F ~ lambda^-2 gives log10 block means -2 log10(lambda) + const,
    zero on average over the reference window; blocks the spectrum does not reach are NaN."""
    from steps.preprocess.spectra import SHAPE_REFERENCE

    data = pq.read_table(spectra_raw / DATA_FILES["spectra"]).slice(0, 2).to_pandas()
    labels = pq.read_table(spectra_raw / LABELS_FILE).slice(0, 2)
    rest = [loglam - np.log10(1 + z) for loglam, z in zip(data["loglam"], data["z"])]
    data["flux"] = [np.full(loglam.size, 5.0) * 10 ** (-2 * (loglam - 3.7)) for loglam in rest]
    short = data.copy()
    short["flux"] = [np.where(loglam < np.log10(7400.0), flux, np.nan) for loglam, flux in zip(rest, data["flux"])]
    features = preprocess_spectra(read_raw(write_raw(tmp_path / "pl", "spectra", data, labels), "spectra"), 1024)
    cut = preprocess_spectra(read_raw(write_raw(tmp_path / "cut", "spectra", short, labels), "spectra"), 1024)
    shape = np.stack(features.table.column("continuum_shape").to_pylist())
    start, step, _ = output_grid(1024)
    centres = start + step * (np.arange(64) * 16 + 7.5)                 # 64 blocks of 16 pixels
    reached = centres > max(loglam[0] for loglam in rest)               # the spectra start at 3802 A, the grid 3600
    assert shape.shape == (2, features.spec["continuum_blocks"]) and 0 < (~reached).sum() < 5
    assert np.isfinite(shape[:, reached]).all() and np.isnan(shape[:, ~reached]).all()
    expected = -2 * centres
    reference = (10 ** centres >= SHAPE_REFERENCE[0]) & (10 ** centres <= SHAPE_REFERENCE[1])
    expected -= expected[reference].mean()
    np.testing.assert_allclose(shape[:, reached], np.broadcast_to(expected[reached], (2, reached.sum())), atol=2e-3)
    cut_shape = np.stack(cut.table.column("continuum_shape").to_pylist())
    covered = reached & (10 ** (centres + 8 * step) < 7400.0)
    assert np.isnan(cut_shape[:, ~covered]).all() and np.isfinite(cut_shape[:, covered]).all()
    np.testing.assert_allclose(cut_shape[:, covered], shape[:, covered], atol=2e-3)  # same zero point
    inside = data.copy()  # a spectrum that stops inside the reference window gets no shape (its zero point would move)
    inside["flux"] = [np.where(loglam < np.log10(6500.0), flux, np.nan) for loglam, flux in zip(rest, data["flux"])]
    inside_features = preprocess_spectra(read_raw(write_raw(tmp_path / "in", "spectra", inside, labels), "spectra"),
                                         1024)
    assert np.isnan(np.stack(inside_features.table.column("continuum_shape").to_pylist())).all()


def test_resampling_conserves_flux_and_averages_variance():
    rng = np.random.default_rng(0)
    in_edges = np.linspace(4000.0, 5000.0, 1001)                         # 1 A input pixels
    flux = rng.uniform(1.0, 2.0, 1000)
    out_edges = np.linspace(4100.0, 4900.0, 201)                         # 4 A output pixels
    good = np.ones(1000, dtype=bool)
    out_flux, out_variance, coverage = resample(in_edges, flux, np.full(1000, 0.04), good, out_edges)
    assert np.allclose(coverage, 1.0)
    assert np.isclose(np.sum(out_flux * np.diff(out_edges)), np.sum(flux[100:900]))
    assert np.allclose(out_variance, 0.04 / 4)
    good[500:520] = False                                                # 20 bad input pixels
    _, _, coverage = resample(in_edges, flux, np.full(1000, 0.04), good, out_edges)
    assert np.count_nonzero(coverage == 0) == 5 and np.allclose(coverage[coverage > 0], 1.0)


def test_the_sparse_products_are_the_same_without_scipys_private_kernel(monkeypatch):
    import scipy.sparse as sparse

    from steps.preprocess import spectra

    rng = np.random.default_rng(1)
    matrix = sparse.random(40, 300, density=0.05, format="csr", dtype=np.float32, random_state=2)
    values = rng.normal(size=(300, 7)).astype(np.float32)
    fast = spectra._products(matrix, values, np.full((40, 7), np.nan, np.float32)).copy()
    monkeypatch.setattr(spectra, "csr_matvecs", None)
    plain = spectra._products(matrix, values, np.full((40, 7), np.nan, np.float32))
    np.testing.assert_allclose(fast, matrix @ values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(plain, fast, rtol=1e-5, atol=1e-6)


def _reference_preprocessing(loglam, z, flux, ivar, and_mask, length):
    """One spectrum preprocessed the plain way, in float64, as the module docstring describes it: the pixel-by-pixel
    `resample`, block means, and a Chebyshev fit with numpy's chebfit, clipped. (flux, ivar, mask, snr)."""
    from numpy.polynomial import chebyshev

    from steps.preprocess.spectra import (BAD_PIXEL_BITS, CLIP_HIGH, CLIP_ITERATIONS, CLIP_LOW, CONTINUUM_BLOCKS,
                                          CONTINUUM_DEGREE, MIN_COVERAGE, pixel_extents)
    flux, ivar = flux.astype(np.float64), ivar.astype(np.float64)
    good = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0) & ((and_mask & BAD_PIXEL_BITS) == 0)
    lower, upper = pixel_extents(loglam - np.log10(1 + z))
    start, step, out_edges = output_grid(length)
    with np.errstate(divide="ignore", invalid="ignore"):
        out_flux, out_variance, coverage = resample(10 ** np.append(lower, upper[-1]), np.where(good, flux, 0),
                                                    np.where(good, 1 / ivar, 0), good, 10 ** out_edges)
    usable = coverage >= MIN_COVERAGE
    out_flux, out_ivar = np.where(usable, out_flux, 0), np.where(usable, 1 / out_variance, 0)
    loglam_out = start + step * np.arange(length)
    x = np.interp(loglam_out, [loglam_out[0], loglam_out[-1]], [-1.0, 1.0])
    edges = np.linspace(0, length, CONTINUUM_BLOCKS + 1).round().astype(int)
    blocks = [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]
    counts = np.array([usable[block].sum() for block in blocks], dtype=float)
    means = np.array([out_flux[block].sum() for block in blocks]) / np.maximum(counts, 1)
    block_x = np.array([x[block].mean() for block in blocks])
    weights = counts
    for _ in range(CLIP_ITERATIONS):
        coefficients = chebyshev.chebfit(block_x, means, CONTINUUM_DEGREE, w=np.sqrt(weights))
        residual = means - chebyshev.chebval(block_x, coefficients)
        sigma = np.sqrt(np.sum(weights * residual**2) / max(weights.sum(), 1))
        weights = counts * ((residual > -CLIP_LOW * sigma) & (residual < CLIP_HIGH * sigma))
    continuum = chebyshev.chebval(x, coefficients)
    valid = usable & (continuum > 0)
    snr = np.array([(out_flux * np.sqrt(out_ivar))[block].sum() for block in blocks]) / np.maximum(counts, 1)
    return (np.where(valid, out_flux / continuum, 1), np.where(valid, out_ivar * continuum**2, 0), ~valid,
            np.median(snr[counts > 0]))


def test_batched_preprocessing_agrees_with_a_plain_per_spectrum_reference(tmp_path):
    """The vectorised path (float32, sparse operators, buffers, chunked fits, arithmetic masks) gives the
    float64 per-spectrum result within float32 precision, bad pixels of every kind included."""
    tables = spectra.generate(40, 5)
    data = tables["spectra"].to_pandas()
    rng = np.random.default_rng(3)
    for row in range(0, 40, 3):                                          # bad pixels of each kind, here and there
        flux, ivar, and_mask = (data.at[row, name].copy() for name in ("flux", "ivar", "and_mask"))
        picks = rng.choice(flux.size, 40, replace=False)
        flux[picks[:8]] = np.nan
        flux[picks[8:12]] = np.inf
        ivar[picks[12:20]] = 0
        ivar[picks[20:24]] = -1
        ivar[picks[24:28]] = np.inf
        ivar[picks[28:32]] = np.nan
        and_mask[picks[32:]] |= 1 << SDSS_PIXEL_BITS["NODATA"]               # a bad-pixel bit
        data.at[row, "flux"], data.at[row, "ivar"], data.at[row, "and_mask"] = flux, ivar, and_mask
    length = 1500
    raw = write_raw(tmp_path / "raw", "spectra", data, tables["labels"])
    features = preprocess_spectra(read_raw(raw, "spectra"), length=length)
    assert features.table.num_rows == 40
    table = features.table.to_pandas().set_index("id")
    for _, spectrum in data.iterrows():
        flux, ivar, mask, snr = _reference_preprocessing(spectrum["loglam"], spectrum["z"], spectrum["flux"],
                                                         spectrum["ivar"], spectrum["and_mask"], length)
        ours = table.loc[spectrum["id"]]
        assert np.count_nonzero(ours["mask"].astype(bool) != mask) <= 2     # coverage right at the threshold
        both = ~mask & ~ours["mask"].astype(bool)
        np.testing.assert_allclose(ours["flux"][both], flux[both], rtol=2e-5)
        np.testing.assert_allclose(ours["ivar"][both], ivar[both], rtol=2e-5)
        assert np.all(ours["flux"][mask & ours["mask"].astype(bool)] == 1)
        assert ours["snr"] == pytest.approx(snr, rel=1e-4)


def _spectra_with_two_bad(tmp_path):
    tables = spectra.generate(10, 4)
    data = tables["spectra"].to_pandas()
    data.at[2, "flux"] = np.full(data.at[2, "flux"].size, np.nan, dtype=np.float32)
    data.at[5, "ivar"] = np.zeros(data.at[5, "ivar"].size, dtype=np.float32)
    return write_raw(tmp_path / "raw", "spectra", data, tables["labels"]), data["id"]


def test_bad_spectra_are_quarantined_with_their_reason(tmp_path):
    raw, ids = _spectra_with_two_bad(tmp_path)
    assert run_cli(["spectra", "--in", raw, "--out", tmp_path / "features", "--length", 256,
                    "--max-bad-fraction", 0.5]) == 0
    quarantine = pq.read_table(tmp_path / "features" / QUARANTINE_TABLE).to_pandas()
    assert quarantine["id"].tolist() == [ids[2], ids[5]]
    assert quarantine["reason"].tolist() == ["no finite flux", "no pixel with positive ivar"]
    features = pq.read_table(tmp_path / "features" / FEATURES_FILE)
    assert features.num_rows == 8 and ids[2] not in features.column("id").to_pylist()
    manifest = read_manifest(tmp_path / "features")
    assert manifest.counts == {"objects_in": 10, "objects_out": 8, "quarantined": 2} and manifest.synthetic


def test_too_many_bad_records_fail_the_stage_and_publish_nothing(tmp_path, caplog):
    raw, _ = _spectra_with_two_bad(tmp_path)
    assert run_cli(["spectra", "--in", raw, "--out", tmp_path / "features", "--length", 256,
                    "--max-bad-fraction", 0.1]) == 2
    assert "preprocess.spectra: 2 of 10 records (20%) quarantined" in caplog.text
    assert not (tmp_path / "features").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["raw"]          # no temporary left behind


def test_preprocessing_is_deterministic(tmp_path, spectra_raw):
    for name in ("a", "b"):
        assert run_cli(["spectra", "--in", spectra_raw, "--out", tmp_path / name, "--length", 300]) == 0
    assert read_manifest(tmp_path / "a").files == read_manifest(tmp_path / "b").files


def test_input_that_is_not_a_raw_artifact_is_refused(tmp_path, caplog):
    assert run_cli(["photometry", "--in", tmp_path, "--out", tmp_path / "features"]) == 2
    assert "not a finished artifact" in caplog.text


def test_a_raw_table_cut_short_is_bad_input_that_names_it(tmp_path, caplog):
    tables = photometry.generate(12, 6)
    raw = write_raw(tmp_path / "raw", "photometry", tables["photometry"], tables["labels"])
    data = raw / DATA_FILES["photometry"]
    data.write_bytes(data.read_bytes()[:300])
    assert run_cli(["photometry", "--in", raw, "--out", tmp_path / "features"]) == 2
    assert f"{data}: not a readable Parquet file (a raw table)" in caplog.text
    assert not (tmp_path / "features").exists()


# Photometry

def test_photometry_quality_cuts_dereddening_and_colours(tmp_path):
    tables = photometry.generate(12, 6)
    data = tables["photometry"].to_pandas()
    bands = list(BANDS)
    data.loc[0, [f"mag_{band}" for band in bands]] = np.nan                  # no usable band
    data.loc[1, ["mag_W1", "err_W1"]] = [5.0, 0.01]                          # saturated in WISE
    data.loc[2, ["mag_J", "err_J"]] = [16.0, 0.8]                            # error too large
    data.loc[3, ["mag_H", "err_H"]] = [12.0, np.nan]                         # 2MASS upper limit
    data.loc[4, ["mag_Ks", "err_Ks", "mag_W2", "err_W2"]] = [99.999, 0.02, -99.0, 0.02]  # catalogue placeholders
    data.loc[6, [f"mag_{band}" for band in bands[1:]]] = 99.0                # placeholders but G
    data.loc[6, [f"err_{band}" for band in bands[1:]]] = 0.02
    raw = read_raw(write_raw(tmp_path / "raw", "photometry", data, tables["labels"]), "photometry")

    features = preprocess_photometry(raw)
    assert [row["id"] for row in features.quarantine.rows] == [data.loc[0, "id"], data.loc[6, "id"]]
    assert features.quarantine.rows[0]["reason"] == "only 0 usable band(s), fewer than 2"
    assert features.quarantine.rows[1]["reason"].startswith(
        "only 1 usable band(s), fewer than 2 (BP: outside [-10, 27] mag: a placeholder, not a measurement; ")
    table = features.table.to_pandas().set_index("id")
    assert table.loc[data.loc[4, "id"], ["mask_Ks", "mask_W2"]].tolist() == [MASK_BITS["placeholder"]] * 2
    assert np.isnan(table.loc[data.loc[4, "id"], ["mag_Ks", "err_Ks", "c_H_Ks"]].astype(float)).all()
    assert table.loc[data.loc[1, "id"], "mask_W1"] == MASK_BITS["saturated"]
    assert table.loc[data.loc[2, "id"], "mask_J"] == MASK_BITS["bad_error"]
    assert table.loc[data.loc[3, "id"], "mask_H"] == MASK_BITS["bad_error"]
    assert np.isnan(table.loc[data.loc[1, "id"], ["mag_W1", "err_W1", "c_W1_W2", "c_Ks_W1"]].astype(float)).all()
    row = data.set_index("id").loc[data.loc[5, "id"]]
    processed = table.loc[data.loc[5, "id"]]
    assert np.isclose(processed["mag_G"], row["mag_G"] - 2.740 * row["ebv"])
    assert np.isclose(processed["c_BP_RP"], processed["mag_BP"] - processed["mag_RP"])
    precise = table["parallax"] / table["parallax_error"] > 5
    assert table.loc[~precise, "abs_G"].isna().all()
    assert np.allclose(table.loc[precise, "abs_G"],
                       table.loc[precise, "mag_G"] + 5 * np.log10(table.loc[precise, "parallax"] / 100))
    plain = preprocess_photometry(raw, deredden=False).table.to_pandas().set_index("id")
    assert np.isclose(plain.loc[data.loc[5, "id"], "mag_G"], row["mag_G"])
    assert set(features.spec["features"]) <= set(table.columns) and features.spec["bands"] == bands
    saturated = [f"saturated_{band}" for band in bands]  # the one reason that tells of the star: it is bright
    assert table.loc[data.loc[1, "id"], saturated].tolist() == [band == "W1" for band in bands]
    masks = table[[f"mask_{band}" for band in bands]].to_numpy()
    np.testing.assert_array_equal(table[saturated].to_numpy(), (masks & MASK_BITS["saturated"]) != 0)
    assert not any(c.startswith("mask_") for c in features.spec["features"])
    assert set(saturated) <= set(features.spec["features"])


def test_dereddened_colour_tracks_temperature(tmp_path):
    tables = photometry.generate(80, 9)
    raw = read_raw(write_raw(tmp_path / "raw", "photometry", tables["photometry"], tables["labels"]), "photometry")
    table = preprocess_photometry(raw).table.to_pandas().dropna(subset=["c_BP_RP"])
    assert spearmanr(table["c_BP_RP"], table["teff"]).statistic < -0.9


# Light curves

def test_views_have_their_lengths_and_the_dip_at_minus_one(curves):
    _, table = curves
    assert len(table) == 150
    assert all(view.size == 201 for view in table["global_view"])
    assert all(view.size == 61 for view in table["local_view"])
    assert np.allclose([view.min() for view in table["global_view"]], -1.0)
    assert np.allclose([np.median(view) for view in table["global_view"]], 0.0, atol=1e-6)
    assert table["period_true"].isna().equals(table["class"] == "quiet")
    assert (table["n_cadences"] > 1000).all() and table["bls_power"].gt(0).all()


def _fold_snr(time: np.ndarray, flux: np.ndarray, period: float, bins: int = 50) -> float:
    """S/N of the signal folded at its true period: range of the bin means over their noise."""
    index = np.minimum((np.mod(time / period, 1.0) * bins).astype(int), bins - 1)
    counts = np.bincount(index, minlength=bins)
    means = np.bincount(index, flux, minlength=bins) / np.maximum(counts, 1)
    noise = robust_sigma(flux - means[index]) / np.sqrt(counts.mean())
    return float((means.max() - means.min()) / noise)


def test_period_is_recovered_for_most_high_snr_periodic_stars(curves):
    tables, table = curves
    raw = tables["lightcurves"].to_pandas().set_index("id")
    high_snr = []
    for object_id, period in zip(table["id"], table["period_true"]):
        if np.isfinite(period):
            good = (raw.at[object_id, "quality"] == 0) & np.isfinite(raw.at[object_id, "flux"])
            time, flux = raw.at[object_id, "time"][good], raw.at[object_id, "flux"][good].astype(float)
            high_snr.append(_fold_snr(time, detrend(time, flux / np.median(flux)), period) > 20)
        else:
            high_snr.append(False)
    high_snr = np.array(high_snr)
    recovered = (np.abs(table["period"] / table["period_true"] - 1) < 0.02).to_numpy()
    for kind in ("pulsator", "transit", "eclipsing_binary"):
        chosen = high_snr & (table["class"] == kind).to_numpy()
        assert chosen.sum() >= 10, kind
        assert recovered[chosen].mean() >= 0.8, (kind, recovered[chosen].mean())


def test_fourier_ratios_tell_a_sawtooth_from_a_sinusoid_across_bands():
    """A sawtooth's harmonics fall as 1/k (R21 = 1/2, R31 = 1/3), a sinusoid has none; per-band offsets and
    irregular sampling do not matter."""
    rng = np.random.default_rng(4)
    time = np.sort(rng.uniform(0, 300, 240))
    band = rng.integers(0, 3, time.size)
    period = 0.57
    phase = np.mod(time / period, 1.0)
    offsets = np.array([15.0, 15.4, 15.9])[band]
    sawtooth = offsets + (phase - 0.5) + 0.002 * rng.normal(size=time.size)
    sinusoid = offsets + 0.3 * np.sin(2 * np.pi * phase) + 0.002 * rng.normal(size=time.size)
    weight = np.ones(time.size)
    r21, r31 = fourier_ratios(time, sawtooth, weight, band, period)
    assert r21 == pytest.approx(0.5, abs=0.02) and r31 == pytest.approx(1 / 3, abs=0.02)
    r21, r31 = fourier_ratios(time, sinusoid, weight, band, period)
    assert r21 < 0.02 and r31 < 0.02
    assert np.isnan(fourier_ratios(time[:5], sinusoid[:5], weight[:5], band[:5], period)).all()  # too few epochs


def test_curve_without_a_good_cadence_is_quarantined(tmp_path):
    tables = lightcurves.generate(6, 2)
    data = tables["lightcurves"].to_pandas()
    data.at[1, "quality"] = np.full(data.at[1, "quality"].size, 32, dtype=np.int32)
    raw = read_raw(write_raw(tmp_path / "raw", "lightcurves", data, tables["labels"]), "lightcurves")
    serial = preprocess_lightcurves(raw, workers=1)
    assert [(row["id"], row["reason"]) for row in serial.quarantine.rows] == [
        (data.at[1, "id"], "only 0 valid cadences, fewer than 100")]
    publish(tmp_path / "features", "lightcurves", raw, serial, max_bad_fraction=0.2)
    assert read_manifest(tmp_path / "features").counts["quarantined"] == 1
    assert preprocess_lightcurves(raw, workers=2).table.equals(serial.table)    # workers do not change results


def test_a_cadence_given_twice_counts_once_and_a_curve_of_one_time_is_quarantined(tmp_path):
    tables = lightcurves.generate(6, 2)
    data = tables["lightcurves"].to_pandas()
    doubled, stuck = data.copy(), data.at[2, "time"]
    for column in ("time", "flux", "flux_err", "quality", "band"):
        doubled.at[1, column] = np.concatenate([data.at[1, column], data.at[1, column]])  # one curve joined twice
    doubled.at[2, "time"] = np.full(stuck.size, stuck[0])                                # every cadence at one time
    clean = preprocess_lightcurves(read_raw(write_raw(tmp_path / "clean", "lightcurves", data, tables["labels"]),
                                            "lightcurves"), workers=1)
    features = preprocess_lightcurves(read_raw(write_raw(tmp_path / "doubled", "lightcurves", doubled,
                                                         tables["labels"]), "lightcurves"), workers=1)
    [(quarantined, reason)] = [(row["id"], row["reason"]) for row in features.quarantine.rows]
    assert quarantined == data.at[2, "id"]
    assert re.fullmatch(r"only 1 valid cadences, fewer than 100 \(1[34]\d\d more repeat a time already read\)", reason)
    kept = clean.table.filter(pc.invert(pc.equal(clean.table.column("id"), data.at[2, "id"])))
    assert features.table.equals(kept)                                   # the doubled curve as if given once


def test_an_error_on_one_curve_quarantines_that_curve(tmp_path, monkeypatch):
    from steps.preprocess import lightcurves as stage

    tables = lightcurves.generate(4, 2)
    data = tables["lightcurves"].to_pandas()
    failing, process = data.at[1, "time"].size, stage.process_curve
    monkeypatch.setattr(stage, "process_curve", lambda time, *rest: (1 / 0) if time.size == failing
                        else process(time, *rest))
    features = preprocess_lightcurves(read_raw(write_raw(tmp_path / "raw", "lightcurves", data, tables["labels"]),
                                               "lightcurves"), workers=1)
    assert [(row["id"], row["reason"]) for row in features.quarantine.rows] == [
        (data.at[1, "id"], "preprocessing failed on this curve: ZeroDivisionError: division by zero")]
    assert features.table.num_rows == 3


def test_lightcurve_spec_names_what_a_model_needs(curves, tmp_path):
    tables, _ = curves
    raw = read_raw(write_raw(tmp_path / "raw", "lightcurves", tables["lightcurves"].slice(0, 5),
                             tables["labels"].slice(0, 5)), "lightcurves")
    assert run_cli(["lightcurves", "--in", raw.path, "--out", tmp_path / "features", "--length", 101,
                    "--local-length", 31, "--workers", 1]) == 0
    spec = pd.read_json(tmp_path / "features" / SPEC_FILE, typ="series")
    assert spec["global_length"] == 101 and spec["local_length"] == 31
    assert spec["classes"] == sorted(spec["classes"]) and "bls_period" in spec["features"]


def test_a_poor_row_names_only_the_bands_it_cannot_use():
    from steps.preprocess.photometry import photometry_columns

    nan = float("nan")
    catalogue = {"mag_G": [12.0], "err_G": [0.01], "mag_BP": [12.5], "err_BP": [nan], "mag_RP": [nan]}
    poor = photometry_columns({k: np.array(v) for k, v in catalogue.items()}, ("G", "BP", "RP"), False).too_poor
    assert poor == {0: "only 1 usable band(s), fewer than 2 (BP: no error in (0, 0.5] mag)"}


def test_a_negative_parallax_is_read_as_far_or_as_bad_astrometry():
    """A true parallax cannot be negative. Within 3 errors of 0 a negative one says "far": the feature is 0 (and
    absolute G unknown), so a model is not asked about a parallax no training star had (`make run`'s ridge put such a
    star at log g -3.3). Further below 0, or negative with no error, it is bad astrometry: unknown, with its error
    (read as 0 it made that star a confident giant)."""
    from steps.preprocess.photometry import photometry_columns

    nan = float("nan")
    catalogue = {"mag_G": [6.1] * 6, "err_G": [0.003] * 6, "mag_BP": [6.5] * 6, "err_BP": [0.005] * 6,
                 "parallax": [40.0, -0.1, 0.0, -3.2, -0.1, nan], "parallax_error": [0.05, 0.05, 0.05, 0.05, nan, 0.05]}
    numeric = photometry_columns({k: np.array(v) for k, v in catalogue.items()}, ("G", "BP"), False).numeric
    np.testing.assert_array_equal(numeric["parallax"], [40.0, 0.0, 0.0, nan, nan, nan])
    np.testing.assert_array_equal(numeric["parallax_error"], [0.05, 0.05, 0.05, nan, nan, 0.05])
    assert np.isfinite(numeric["abs_G"][0]) and np.isnan(numeric["abs_G"][1:]).all()
