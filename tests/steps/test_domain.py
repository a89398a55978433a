"""The domain check (`steps.models.domain`): distances to the nearest training row, in units that put the 95th
percentile of the training rows' own leave-one-out distances at 1, and the spectral models' residual check."""

import numpy as np
import pytest

from steps.models import domain as domain_module
from steps.models.domain import (
    COLUMNS,
    LINES_ARRAY,
    LINES_RATIO_MAX,
    RESIDUAL_ARRAYS,
    THRESHOLD_QUANTILE,
    Domain,
    SpectrumResidual,
    blank,
    outside,
)
from steps.models.inputs import Columns
from steps.models.io import load_npz, save_npz


def _cloud(n: int, p: int = 12, seed: int = 0) -> np.ndarray:
    """Rows of a correlated Gaussian cloud: a few strong directions and weak noise."""
    mixing = np.random.default_rng(99).normal(size=(4, p)) * 3.0  # one distribution; `seed` draws from it
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)) @ mixing + 0.1 * rng.normal(size=(n, p)) + 5.0


def test_objects_like_the_training_rows_are_in_the_domain_and_far_ones_are_not():
    domain = Domain.fit(_cloud(600))
    alike, far = _cloud(400, seed=1), _cloud(50, seed=2) + 40.0
    share = np.mean(domain.distance(alike) <= 1.0)
    assert 0.85 <= share <= 1.0, share
    assert np.all(domain.distance(far) > 3.0)


def test_the_threshold_is_the_quantile_of_the_training_rows_leave_one_out_distances():
    values = _cloud(300)
    domain = Domain.fit(values)
    reference = (values - values.mean(axis=0)) @ domain.basis
    d2 = ((reference[:, None] - reference[None]) ** 2).sum(axis=2)
    np.fill_diagonal(d2, np.inf)
    assert domain.threshold == pytest.approx(np.quantile(np.sqrt(d2.min(axis=1)), THRESHOLD_QUANTILE))
    assert domain.distance(values).max() == pytest.approx(0.0, abs=1e-6)  # every training row is its own neighbour


def test_bad_entries_count_as_the_training_mean_of_the_entry():
    values = _cloud(300)
    domain = Domain.fit(values)
    one = values[:1].copy()
    bad = np.zeros_like(one, bool)
    bad[0, :6] = True
    patched = one.copy()
    patched[0, :6] = values[:, :6].mean(axis=0)
    wild = one.copy()
    wild[0, :6] = 1e6
    assert domain.distance(wild, bad)[0] == pytest.approx(domain.distance(patched)[0])
    wild[0, 6] = np.nan  # a non-finite entry is bad too
    patched[0, 6] = values[:, 6].mean()
    assert domain.distance(wild, bad)[0] == pytest.approx(domain.distance(patched)[0])


def test_entries_no_training_row_varies_in_do_not_count():
    """As for the red end of the grid, which every MILES spectrum lacks and SDSS spectra have."""
    values = _cloud(300)
    values[:, -3:] = 0.0
    domain = Domain.fit(values)
    test = _cloud(20, seed=3)
    test[:, -3:] = 0.0
    moved = test.copy()
    moved[:, -3:] = 7.0
    np.testing.assert_allclose(domain.distance(moved), domain.distance(test))


def test_outputs_round_trip_through_the_weights_file_and_blank_unusable_objects(tmp_path):
    values = _cloud(200)
    domain = Domain.fit(values)
    save_npz(tmp_path / "weights.npz", {"coef": np.ones(3), **domain.arrays()})
    restored = Domain.restore(load_npz(tmp_path / "weights.npz"))
    test = np.vstack([_cloud(3, seed=4), _cloud(1, seed=5) + 40.0])
    usable = np.array([True, False, True, True])
    out = restored.outputs(test, None, usable)
    assert list(out) == list(COLUMNS)
    np.testing.assert_allclose(out["domain_distance"][usable], domain.distance(test[usable]))
    assert np.isnan(out["domain_distance"][1]) and out["in_domain"][1] is None
    assert out["in_domain"][3] is False and out["in_domain"][0] is True
    assert Domain.restore({"coef": np.ones(3)}) is None
    overflowing = restored.outputs(np.full((1, test.shape[1]), 1e200), None, np.ones(1, bool))
    assert overflowing["in_domain"][0] is False                                # infinitely far is outside
    empty = blank(2)
    assert np.isnan(empty["domain_distance"]).all() and list(empty["in_domain"]) == [None, None]


def test_many_training_rows_keep_a_seeded_subset_as_neighbours(monkeypatch):
    monkeypatch.setattr(domain_module, "DOMAIN_REFERENCE_ROWS", 100)
    values = _cloud(500)
    first, again = Domain.fit(values, seed=3), Domain.fit(values, seed=3)
    assert first.reference.shape[0] == 100
    np.testing.assert_array_equal(first.reference, again.reference)
    assert np.mean(first.distance(_cloud(200, seed=6)) <= 1.0) > 0.8


def test_a_handful_of_rows_still_gives_a_finite_positive_threshold():
    for values in (_cloud(3), np.ones((4, 5))):
        domain = Domain.fit(values)
        assert np.isfinite(domain.threshold) and domain.threshold > 0
        assert np.isfinite(domain.distance(values + 1.0)).all()


def test_weights_make_a_feature_count_as_the_model_weighs_it():
    """As the spectral model weighs its continuum-shape entries against the flux."""
    values = _cloud(300)
    values[:, 0] = 0.3 * np.random.default_rng(7).normal(size=300)  # a feature of its own, with a small spread
    plain, weighted = Domain.fit(values), Domain.fit(values, weights=np.r_[8.0, np.ones(values.shape[1] - 1)])
    shifted = values[:5].copy()
    shifted[:, 0] += 3.0 * values[:, 0].std()
    assert np.all(weighted.distance(shifted) > 5.0 * plain.distance(shifted))
    np.testing.assert_allclose(weighted.distance(values[:5]), 0.0, atol=1e-6)


def test_outside_counts_only_flagged_objects_not_those_without_a_prediction():
    np.testing.assert_array_equal(outside([True, False, None, False]), [False, True, False, True])


# ------------------------------------------------------------------------------------------ residual check

LENGTH = 200


def _spectra(n: int, seed: int = 0, snr: float = 50.0, foreign: float = 0.0) -> dict[str, np.ndarray]:
    """Normalised spectra made of three absorption lines of varying depth, with noise at `snr` (and its `ivar`);
    `foreign`: the depth of a line at a wavelength where no training spectrum has one."""
    wave = np.linspace(0.0, 1.0, LENGTH)
    rng = np.random.default_rng(seed)
    depths = rng.uniform(0.05, 0.4, size=(n, 3))
    lines = np.exp(-0.5 * ((wave[None] - np.array([0.2, 0.5, 0.8])[:, None]) / 0.01) ** 2)
    flux = 1.0 - depths @ lines - foreign * np.exp(-0.5 * ((wave - 0.35) / 0.01) ** 2)
    flux = flux + rng.normal(size=flux.shape) / snr
    return {"flux": flux, "mask": np.zeros(flux.shape, np.uint8), "ivar": np.full(flux.shape, snr ** 2)}


def test_spectra_like_the_training_ones_pass_the_residual_check_and_foreign_ones_do_not():
    check = SpectrumResidual.fit(Columns(_spectra(300)), LENGTH)
    alike = check.ratio(Columns(_spectra(400, seed=1)))
    foreign = check.ratio(Columns(_spectra(50, seed=2, foreign=0.3)))
    assert np.mean(alike > 1.0) <= 0.03, np.mean(alike > 1.0)
    assert np.all(foreign > 3.0), foreign.min()


def test_the_residual_check_allows_for_each_spectrum_s_own_noise():
    """Noisier spectra of the same stars are not foreign: the check subtracts the noise their `ivar` states, and
    without `ivar` it cannot."""
    check = SpectrumResidual.fit(Columns(_spectra(300)), LENGTH)
    noisy = _spectra(200, seed=3, snr=10.0)
    assert np.mean(check.ratio(Columns(noisy)) > 1.0) <= 0.1
    assert np.mean(check.ratio(Columns({"flux": noisy["flux"]})) > 1.0) > 0.9


def test_an_unknown_inverse_variance_leaves_the_residual_check_on():
    """NaN (or null) `ivar`, as the API's micro-batching fills a field that one request lacks, means no noise to
    subtract, not bad pixels: the check still sees a foreign line."""
    check = SpectrumResidual.fit(Columns(_spectra(300)), LENGTH)
    foreign = _spectra(20, seed=7, foreign=0.3)
    without = check.ratio(Columns({"flux": foreign["flux"]}))
    unknown = check.ratio(Columns({**foreign, "ivar": np.full(foreign["flux"].shape, np.nan)}))
    np.testing.assert_allclose(unknown, without)
    assert np.all(unknown > 3.0)


def test_masked_pixels_do_not_count_in_the_residual():
    check = SpectrumResidual.fit(Columns(_spectra(300)), LENGTH)
    foreign = _spectra(20, seed=4, foreign=0.3)
    wave = np.linspace(0.0, 1.0, LENGTH)
    foreign["mask"][:, np.abs(wave - 0.35) < 0.05] = 1
    assert np.all(check.ratio(Columns(foreign)) <= 1.0)


def test_the_domain_distance_is_the_larger_ratio_and_the_check_round_trips(tmp_path):
    train = _spectra(300)
    domain = Domain.fit(train["flux"])
    domain.residual = SpectrumResidual.fit(Columns(train), LENGTH)
    save_npz(tmp_path / "weights.npz", domain.arrays())
    restored = Domain.restore(load_npz(tmp_path / "weights.npz"))
    batch = {key: np.vstack([a, b]) for (key, a), b in
             zip(_spectra(5, seed=5).items(), _spectra(5, seed=6, foreign=0.3).values())}
    usable = np.ones(10, bool)
    out = restored.outputs(batch["flux"], None, usable, Columns(batch))
    np.testing.assert_allclose(out["domain_distance"], np.fmax(domain.distance(batch["flux"]),
                                                               domain.residual.ratio(Columns(batch))))
    assert list(out["in_domain"][5:]) == [False] * 5
    assert "residual" in restored.record()
    earlier = Domain.restore({k: v for k, v in domain.arrays().items() if k not in RESIDUAL_ARRAYS})
    assert earlier.residual is None  # a model saved before the residual check measures as it did
    np.testing.assert_allclose(earlier.outputs(batch["flux"], None, usable, Columns(batch))["domain_distance"],
                               domain.distance(batch["flux"]))


def test_a_featureless_spectrum_fails_the_line_check():
    """A flat spectrum lies close to the training spectra's leading components (its difference from their mean is
    the mean's own lines), so the residual alone passes it; it has no line at all, which no star has. A spectrum
    with weak lines but noise its `ivar` states is not featureless."""
    train = _spectra(300)
    check = SpectrumResidual.fit(Columns(train), LENGTH)
    flat = {"flux": np.ones((3, LENGTH)), "mask": np.zeros((3, LENGTH), np.uint8)}
    assert np.all(check.ratio(Columns(flat)) == LINES_RATIO_MAX)
    assert np.mean(check.ratio(Columns(_spectra(400, seed=1))) > 1.0) <= 0.03
    without_lines = SpectrumResidual(check.mean, check.basis, check.threshold)  # as a model saved before it
    assert np.all(without_lines.ratio(Columns(flat)) < 1.0)
    restored = Domain.restore({**Domain.fit(train["flux"]).arrays(), **check.arrays()}).residual
    assert restored.line_floor == check.line_floor and "lines" in restored.record()
    assert Domain.restore({**Domain.fit(train["flux"]).arrays(),
                           **{k: v for k, v in check.arrays().items() if k != LINES_ARRAY}}).residual.line_floor is None


def test_too_few_training_spectra_give_no_residual_check():
    assert SpectrumResidual.fit(Columns(_spectra(9)), LENGTH) is None
    assert SpectrumResidual.fit(Columns(_spectra(10)), LENGTH) is not None


def test_a_period_outside_the_training_curves_periods_is_out_of_the_domain(tmp_path):
    """All 11 Kepler curves (1.6-16 d) were called RR Lyrae with p = 1 by a model trained on Stripe 82 (0.2-0.9 d),
    and a one-day alias of an RR Lyrae kept its class with nothing to say the period was like no training star's."""
    from steps.models.domain import PERIOD_MARGIN, PeriodRange

    features = _cloud(200)
    periods = np.random.default_rng(1).uniform(0.25, 0.85, 200)
    periods[:3] = np.nan  # curves without a period do not count
    periods[3] = 1.33  # a training curve's own alias does not widen the range
    domain = Domain.fit(features)
    domain.period = PeriodRange.fit(periods)
    known = np.sort(periods[np.isfinite(periods)])
    assert (domain.period.low, domain.period.high) == (known[1], known[-2])
    for n in (30, 60, 100):  # however few the curves, one alias does not widen it
        assert PeriodRange.fit(np.append(np.random.default_rng(n).uniform(0.25, 0.85, n - 1), 1.33)).high < 0.86
    save_npz(tmp_path / "weights.npz", domain.arrays())
    restored = Domain.restore(load_npz(tmp_path / "weights.npz"))
    asked = np.array([0.5, domain.period.high * (1 + PERIOD_MARGIN / 2), 0.998, 16.4, 0.128, np.nan])
    out = restored.outputs(np.repeat(features[:1], len(asked), axis=0), None, np.ones(len(asked), bool),
                           Columns({"period": asked}))
    assert list(out["in_domain"]) == [True, True, False, False, False, True]
    assert out["domain_distance"][3] > out["domain_distance"][2] > 1  # farther off, larger
    assert restored.record()["period"]["high_days"] == pytest.approx(domain.period.high)
    assert PeriodRange.fit(np.full(4, np.nan)) is None


def test_a_curve_without_a_period_is_outside_where_every_training_curve_had_one(tmp_path):
    """An RR Lyrae model asked about flat or noisy views sent without a period said in_domain true (p = 0.57 and
    0.83 for RRab): folded views look alike whatever the period, so a missing one must not pass for a good one."""
    from steps.models.domain import PeriodRange

    features = _cloud(200)
    periods = np.random.default_rng(2).uniform(0.25, 0.85, 200)
    domain = Domain.fit(features)
    domain.period = PeriodRange.fit(periods)
    assert domain.period.required and "without a period is outside" in domain.record()["period"]["method"]
    save_npz(tmp_path / "weights.npz", domain.arrays())
    restored = Domain.restore(load_npz(tmp_path / "weights.npz"))
    asked = np.array([0.5, np.nan, 0.0])
    out = restored.outputs(np.repeat(features[:1], 3, axis=0), None, np.ones(3, bool), Columns({"period": asked}))
    assert list(out["in_domain"]) == [True, False, False] and np.isinf(out["domain_distance"][1:]).all()
    periods[:5] = np.nan  # training curves without a period (quiet stars): a curve without one is like them
    assert not PeriodRange.fit(periods).required
    older = Domain.restore({**load_npz(tmp_path / "weights.npz"), "period_range": np.array([0.3, 0.8])})
    assert not older.period.required  # a model saved before the flag keeps its answers
