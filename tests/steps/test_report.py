"""The evaluation's HTML report and its plots, and the calibration measures they draw (no TensorFlow needed)."""

from __future__ import annotations

import json
import struct
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steps.evaluate.__main__ import main as evaluate
from steps.evaluate.report import residual_axes
from steps.models.keras.calibration import (
    expected_calibration_error,
    fit_temperature,
    member_moments,
    reliability,
    sigma_scale,
    softmax,
)

VOID = {"meta", "img", "br", "hr", "link", "input"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXPECTED_PLOTS = {
    "spectral": ["pred_vs_true", "residuals_snr", "residuals_teff", "coverage"],
    "sed": ["pred_vs_true", "residuals_snr", "residuals_bands", "residuals_teff", "coverage"],
    "lightcurve": ["confusion", "reliability"],
}


class _Page(HTMLParser):
    """Collects images, links and text, and checks that every non-void element is closed in order."""

    def __init__(self):
        super().__init__()
        self.open: list[str] = []
        self.images: list[dict[str, str]] = []
        self.ids: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "img":
            self.images.append(attributes)
        if "id" in attributes:
            self.ids.append(attributes["id"])
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()

    def handle_data(self, data):
        self.text.append(data)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name}: not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _run(split: Path, models: dict[str, Path], out: Path) -> Path:
    args = ["--split", str(split), "--out", str(out)]
    for name, path in models.items():
        args += [f"--{name}", str(path)]
    assert evaluate(args) == 0
    return out


@pytest.fixture(scope="module")
def evaluation(learnable, tmp_path_factory) -> Path:
    split, models = learnable
    return _run(split, models, tmp_path_factory.mktemp("report") / "evaluation")


def test_report_html_parses_and_shows_every_plot_it_references(evaluation):
    page = _Page()
    page.feed((evaluation / "report.html").read_text())
    page.close()
    assert page.open == [], f"unclosed elements: {page.open}"
    assert set(page.ids) >= {"spectral", "lightcurve", "sed"}
    sources = [image["src"] for image in page.images]
    assert all(image.get("alt") for image in page.images)
    for name, kinds in EXPECTED_PLOTS.items():
        for kind in kinds:
            assert f"plots/{name}_{kind}.png" in sources
    listed = {entry["path"] for entry in json.loads((evaluation / "manifest.json").read_text())["files"]}
    for src in sources:
        width, height = _png_size(evaluation / src)
        assert 100 < width < 2000 and 100 < height < 2000, src
        assert src in listed, f"{src} is not in the manifest"
    text = " ".join(page.text)
    assert "SYNTHETIC" in text
    assert "PASS spectral teff robust_sigma" in text  # the gate reasons are on the page
    assert "robust_sigma" in text and "balanced_accuracy" in text
    assert text.count("Domain check:") == 3
    assert (evaluation / "report.md").is_file()


def test_report_marks_refused_models_with_their_failed_gates(noise, tmp_path):
    split, models = noise
    out = _run(split, {"lightcurve": models["lightcurve"]}, tmp_path / "evaluation")
    html = (out / "report.html").read_text()
    assert "REFUSED" in html and '<li class="fail">FAIL lightcurve' in html


def test_the_same_evaluation_gives_the_same_report_bytes(learnable, evaluation, tmp_path):
    split, models = learnable
    again = _run(split, models, tmp_path / "again")
    for path in sorted((evaluation / "plots").iterdir()) + [evaluation / "report.html"]:
        assert (again / path.relative_to(evaluation)).read_bytes() == path.read_bytes(), path.name


def test_photometry_residuals_are_plotted_against_its_snr_and_the_bands_measured(tmp_path):
    folder = tmp_path / "split" / "photometry"
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text("{}")
    nan = float("nan")
    table = pa.table({"id": ["a", "b", "c"], "mag_G": [10.0, nan, 12.0], "err_G": [0.01, nan, nan],
                      "mag_BP": [10.5, nan, 12.3], "err_BP": [0.1, nan, 0.02], "mag_J": [nan, nan, 11.0],
                      "err_J": [0.05, nan, 0.2], "mag_H": [9.0, nan, nan], "err_H": [0.05, nan, nan],
                      "teff": [5000.0, 6000.0, 4000.0]})
    pq.write_table(table, folder / "train.parquet")
    pq.write_table(table, folder / "test.parquet")
    (key, _, snr), (bands_key, _, bands) = residual_axes({"sed": tmp_path / "split"})["sed"]
    assert (key, bands_key) == ("snr", "bands")
    # a: G, BP and H (J's error without a magnitude does not count): the median, H's; b: nothing measured;
    # c: BP and J (G has no error)
    assert snr[0] == pytest.approx(1.0857362 / 0.05, rel=1e-6)
    assert np.isnan(snr[1])
    assert snr[2] == pytest.approx((1.0857362 / 0.02 + 1.0857362 / 0.2) / 2, rel=1e-6)
    assert bands.tolist() == [3.0, 0.0, 3.0]


# ------------------------------------------------------------------------------------------- calibration


def test_an_ensembles_members_combine_into_one_gaussian_per_target():
    # two targets, three members: [mean_a, mean_b, log_var_a, log_var_b] each
    outputs = np.array([[1.0, 10.0, np.log(0.5), np.log(2.0),
                         2.0, 10.0, np.log(0.5), np.log(4.0),
                         3.0, 10.0, np.log(0.5), np.log(6.0)]])
    mean, log_var = member_moments(outputs, 2)
    np.testing.assert_allclose(mean, [[2.0, 10.0]])
    # the members' mean variance plus the variance of their means (1, 2, 3: 2/3)
    np.testing.assert_allclose(np.exp(log_var), [[0.5 + 2.0 / 3.0, 4.0]])
    single = np.array([[1.0, 2.0, -1.0, 100.0]])  # one head: as it is, its log-variance clipped
    mean, log_var = member_moments(single, 2)
    np.testing.assert_allclose(mean, [[1.0, 2.0]])
    np.testing.assert_allclose(log_var, [[-1.0, 6.0]])


def test_sigma_scale_makes_the_median_normalised_residual_gaussian():
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.5, 2.0, 4000)
    residuals = rng.normal(size=4000) * sigma * 3.0  # uncertainties 3x too small
    scale = sigma_scale(residuals, sigma)
    assert scale == pytest.approx(3.0, rel=0.05)
    assert np.median(np.abs(residuals / (scale * sigma))) == pytest.approx(0.674490, rel=1e-6)
    assert sigma_scale(np.array([np.nan]), np.array([1.0])) == 1.0


def test_temperature_scaling_recovers_a_known_temperature_and_lowers_the_ece():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(5000, 4)) * 2.0
    labels = np.array([rng.choice(4, p=p) for p in softmax(logits)])
    overconfident = logits * 3.0
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    correct = overconfident.argmax(axis=1) == labels
    before = expected_calibration_error(softmax(overconfident), correct)
    after = expected_calibration_error(softmax(overconfident, temperature), correct)
    assert after < 0.03 < before


def test_temperature_stays_1_when_every_validation_object_is_classified_correctly():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    assert fit_temperature(logits, np.array([0, 1, 0])) == 1.0
    assert fit_temperature(logits, np.array([0, 0, 0])) != 1.0  # one error: a minimum exists


def test_reliability_bins_count_every_row_once():
    proba = np.array([[0.95, 0.05], [0.55, 0.45], [0.5, 0.5], [np.nan, np.nan]])
    bins = reliability(proba, np.array([True, False, True, True]))
    assert sum(bins["count"]) == 3 and bins["count"][9] == 1 and bins["count"][5] == 2
    assert bins["accuracy"][5] == 0.5 and bins["confidence"][9] == pytest.approx(0.95)


def test_the_period_estimate_has_rows_in_the_classifier_tables():
    from steps.evaluate import classification_rows

    model = {"accuracy": 0.9, "period": {"within_1pct": 0.64, "within_1pct_harmonic": 0.7, "n": 29,
                                         "median_abs_log10_ratio": 1.2e-4}}
    rows = {row[0]: row[1:] for row in classification_rows([model, {"accuracy": 0.2}])}
    assert rows["accuracy"] == ["0.9", "0.2"]
    assert rows["period: share within 1%"] == ["0.64", "n/a"]
    assert rows["period: objects with a true period"] == ["29", "n/a"]
    assert not any(name.startswith("period") for name, *_ in classification_rows([{"accuracy": 0.5}]))


def test_early_stopping_scores_separable_logits_at_their_best_temperature_not_the_calibrations():
    pytest.importorskip("keras")
    from steps.models.keras.calibration import log_loss
    from steps.models.keras.training import classification_score

    logits, labels = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]]), np.array([0, 1, 0])
    assert fit_temperature(logits, labels) == 1.0
    assert classification_score(logits, labels) < 0.01 * log_loss(logits, labels, 1.0)  # sharper epochs rank better


def test_a_run_of_real_and_generated_data_says_which_model_learnt_from_which(learnable, tmp_path):
    """A run with real light curves and synthetic spectra called the whole report SYNTHETIC, the light-curve
    section included."""
    import shutil

    split, models = learnable
    observed = {"split": tmp_path / "split", "lightcurve": tmp_path / "lightcurve"}
    for name, source in (("split", split), ("lightcurve", models["lightcurve"])):
        shutil.copytree(source, observed[name])
        manifest = observed[name] / "manifest.json"
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "synthetic": False}))
    out = _run(observed["split"], {"lightcurve": observed["lightcurve"], "sed": models["sed"]},
               tmp_path / "evaluation")
    page = (out / "report.html").read_text()
    assert "Data: SYNTHETIC (generated, not observed) for sed; observed for lightcurve." in page
    lightcurve_heading = page[page.index('<section id="lightcurve">'):].split("</h2>")[0]
    assert "synthetic data" not in lightcurve_heading
    assert "synthetic data" in page[page.index('<section id="sed">'):].split("</h2>")[0]
    assert "Data: **synthetic** (generated, not observed) for sed; observed for lightcurve." in (
        out / "report.md").read_text()


def test_a_residual_plot_keeps_the_bulk_in_view_and_marks_what_lies_beyond():
    """One hot star's 6,000 K miss set the y axis of every residual plot, flattening the ~100 K bulk onto zero."""
    import numpy as np

    from steps.evaluate.report import _pyplot, _residuals_in_view

    plt = _pyplot()
    residuals = np.r_[np.random.default_rng(0).normal(0.0, 100.0, 80), 6437.0]
    fig, ax = plt.subplots()
    _residuals_in_view(ax, np.linspace(4000, 7000, residuals.size), residuals, np.zeros(residuals.size), "K")
    low, high = ax.get_ylim()
    assert 500 < high < 1500 and -1500 < low < -500
    assert ax.get_title().endswith("\n1 beyond the axis") and ax.get_title().startswith("robust sigma ")
    assert [line.get_marker() for line in ax.get_lines()].count("^") == 1
    plt.close(fig)
