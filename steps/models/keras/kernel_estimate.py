"""The closed-form part of the spectral model, in NumPy (no TensorFlow): `fit_kernel_estimate`.

From the encoded training inputs ((n, length, 2) arrays: values and mask, as `VectorInput` with `mask_channel`
makes them) and the standardised targets:
1. bad entries count as the training mean of the entry (`imputed`), the inputs are joined, and a `continuum`
   input is multiplied by the weight from `CONTINUUM_WEIGHTS` whose ridge regression has the lowest leave-one-out
   RMSE, averaged over the labels, over the rows that no candidate weight's fit calls a label outlier (one penalty
   then suits both inputs). Over every row, a few wrong labels decide it (on MILES, restoring 44 hot stars' Teff
   moved the Teff estimate's weight from 8 to 1 and its error on the seed-42 FGK test stars from 93 K to 121 K); the
   robust sigma instead is a noisier statistic (on the synthetic spectra it picked 4 for Teff: 26 K against 13 K);
2. rows whose leave-one-out ridge residual is beyond `OUTLIER_SIGMA` robust sigmas in any label are left out
   (a wrong label, a wrong star);
3. the rest are projected on their `SPECTRAL_COMPONENTS` leading principal components, and a kernel ridge
   regression (`steps.models.linear.kernel_ridge`) is solved on at most `KERNEL_CENTRES` of them;
4. the estimate of each label it gives is refined (`Refinement`): a second kernel ridge regression, in the
   low-dimensional space of that estimate and a few leading components, learns the first one's leave-one-out
   residuals. In 64 dimensions one Gaussian width cannot follow a label's curved dependence on the spectrum (the
   estimates shrink towards the mean at the ends of each label's range, and giants and dwarfs of one temperature
   mix); in 2-9 dimensions it can. The refinement's penalty and number of components are chosen by the robust sigma
   of its own leave-one-out residuals, and it is kept only where that beats the first stage's.
`fit_spectral_estimate` makes one such estimate per group of labels (`SpectralEstimate`): the model's first label,
Teff, which the continuum shape carries, gets an estimate of its own (its own continuum weight, cleaning and
width), while the other labels, which the lines carry, come from the estimate of all labels together (its cleaning
and width see every label). Labels may instead come from an estimate of all labels that sees only a window of the
entries (`window`: the entries outside it weigh 0), as [Fe/H] does (`metallicity_window`), and inputs that only
that estimate sees (`window_inputs`): [Fe/H]'s sees the spectrum divided by its local pseudo-continuum
(`encoders.local_continuum_of`, `LOCAL_INPUT`) instead of the spectrum. Those estimates of all
labels are each the mean of one estimate per continuum weight, not the one weight step 1 would choose: that choice
is a noisy one, and over 28 MILES splits (FGK test stars, closed-form estimate) the mean took log g from 0.222 to
0.216 dex in the median, better on 20 splits, and [Fe/H] from 0.121 to 0.117; Teff, from its own estimate, still
takes the chosen weight (averaged, it was worse on those splits). With a `gate`, one more
estimate of Teff, fitted on a narrower range of stars, replaces it where the first lies in the gate's range
(`TeffGate`: a library from M dwarfs to O stars makes one Teff estimate's width and penalties follow the hot stars).
`training._spectral_network` holds the result in frozen Keras layers (`projection`, the kernel fits) and trains a
correction on the out-of-sample estimates; `bench/bench_training.py` times this part on any Keras backend.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from steps.models.baseline import OUTLIER_SIGMA, RIDGE_GRID
from steps.models.linear import KernelRidgeFit, kernel_ridge, loo_rmse, ridge, robust_outliers
from steps.core.statistics import robust_sigma
from steps.preprocess.spectra import block_edges, grid_wavelengths

SPECTRAL_COMPONENTS = 64  # principal components the kernel and the correction network see
CONTINUUM_WEIGHTS = (1.0, 2.0, 4.0, 8.0)  # candidate weights of the continuum shape against the flux
KERNEL_CENTRES = 4000  # most training rows the kernel ridge is solved on (an n x n eigendecomposition per width)
REFINE_COMPONENTS = (1, 2, 4, 8)  # candidate numbers of leading components a refinement sees with its estimate
REFINE_ESTIMATE_WEIGHT = 3.0  # of the (standardised) estimate against the components (the leading one has unit sd)
# A small grid: choosing among many widths and penalties by a robust sigma (a noisy statistic) fits the choice to
# the training stars (the closed-form estimate on MILES FGK test stars, median of 8 split seeds: Teff 99.7 K with
# 4 widths x 8 penalties, 93.6 K with this grid).
REFINE_GAMMAS = (1.0,)
REFINE_ALPHAS = (0.1, 1.0, 10.0)
REFINE_CENTRES = 1500  # most rows a refinement is solved on: one eigendecomposition per label and component count
REFINE_MIN_ROWS = 100  # fewer rows with a known label: no refinement of it (see `_refine`)

# Angstrom: [Fe/H] comes from an estimate of all labels that sees only the flux and continuum blocks redder than
# this. The blue end that helps log g (`spectra.WAVE_MIN`) costs [Fe/H] in that estimate: on MILES FGK stars,
# 0.131 dex with it and 0.143 without this window (closed-form estimates, 5-fold CV x 6).
METALLICITY_WINDOW_START = 3900.0
# The input that [Fe/H]'s estimate sees in place of the spectrum where the model has it: the continuum-normalised
# flux divided once more by a running upper quantile over LOCAL_CONTINUUM_DEX of log wavelength (51 pixels, about
# 230 A at 5000 A, on the 1024-pixel grid). Line depths against the local pseudo-continuum carry the metallicity with
# less of the broad shapes (band heads, wings, the residue of the global continuum fit) that Teff and log g move: on
# MILES FGK test stars (closed-form estimate), [Fe/H] 0.120 -> 0.115 dex in the median of 28 split seeds (better on
# 18, worse on 9), 0.117 -> 0.115 on 30 more (better on 17, worse on 13).
LOCAL_INPUT = "local"
LOCAL_CONTINUUM_DEX = 0.02


def imputed(vector: np.ndarray, entry_mean: np.ndarray) -> np.ndarray:
    """(n, length) values of an encoded (n, length, 2) input with bad entries (mask channel 1, value 0) set to the
    training mean of the entry."""
    return vector[:, :, 0] + entry_mean * vector[:, :, 1]


def on_flattened(weights: np.ndarray, entry_mean: np.ndarray) -> np.ndarray:
    """Weights on imputed entries (length, k) as the kernel of a Dense layer on the flattened (length, 2) input."""
    kernel = np.empty((2 * weights.shape[0], weights.shape[1]))
    kernel[0::2], kernel[1::2] = weights, entry_mean[:, None] * weights
    return kernel


@dataclass
class Refinement:
    """Step 4 for one label: `fit` maps (REFINE_ESTIMATE_WEIGHT * first estimate of `target`, the leading
    `components` components) to the correction added to that estimate."""

    target: int
    components: int
    fit: KernelRidgeFit

    def selection(self, n_targets: int, n_components: int) -> np.ndarray:
        """(n_targets + n_components, 1 + components) matrix taking the refinement's inputs from the first estimates
        and the components joined in that order."""
        return _selection(self.target, self.components, n_targets, n_components)

    def correction(self, first: np.ndarray, components: np.ndarray) -> np.ndarray:
        """(n,) correction of the `target` column of the first estimates (n, T)."""
        return self.fit.predict(np.hstack([first, components]) @ self.selection(first.shape[1],
                                                                                components.shape[1]))[:, 0]


@dataclass
class KernelEstimate:
    """The fitted closed-form stage: how inputs become components, the kernel fit on them and its refinements, the
    rows it kept."""

    means: dict[str, np.ndarray]  # training mean of every entry, per input (in input order)
    scale: np.ndarray  # per joined entry: the continuum weight or 1; 0 outside the window
    centre: np.ndarray  # mean of the joined, scaled entries over the kept rows
    basis: np.ndarray  # (entries, k) principal directions; the leading component has unit sd
    fit: KernelRidgeFit
    refinements: list[Refinement]
    rows: np.ndarray  # training rows kept (label outliers left out)
    out_of_sample: np.ndarray  # refined estimates of the kept rows that did not see their own label
    record: dict[str, Any]  # what model.json keeps of the fit

    def components(self, x: dict[str, np.ndarray]) -> np.ndarray:
        """(n, k) principal-component scores of encoded inputs."""
        joined = np.hstack([imputed(x[key], mean) for key, mean in self.means.items()]) * self.scale
        return (joined - self.centre) @ self.basis

    def predict(self, x: dict[str, np.ndarray]) -> np.ndarray:
        """(n, T) refined kernel estimates of encoded inputs (standardised targets)."""
        components = self.components(x)
        return refined(self.fit.predict(components), components, self.refinements)

    def projection(self) -> tuple[np.ndarray, np.ndarray]:
        """(kernel, bias) of a Dense layer computing `components` from the flattened, joined inputs."""
        entry_mean = np.concatenate(list(self.means.values()))
        return on_flattened(self.basis * self.scale[:, None], entry_mean), -self.centre @ self.basis


def fit_kernel_estimate(x: dict[str, np.ndarray], z: np.ndarray, refine: list[int] | None = None,
                        window: dict[str, np.ndarray] | None = None,
                        continuum_weights: tuple[float, ...] = CONTINUUM_WEIGHTS) -> KernelEstimate:
    """Steps 1-4 of the module docstring on encoded inputs `x` (a `spectrum` and optionally a `continuum`) and
    standardised targets `z` (n, T; NaN = unknown); step 4 for the labels (columns) in `refine`, every one by
    default. With a `window` (per input, a boolean per entry), only the entries in it are seen. The continuum
    weight is chosen among `continuum_weights` (one given: that one)."""
    means = {}
    for key, vector in x.items():
        good = 1.0 - vector[:, :, 1]
        means[key] = (vector[:, :, 0] * good).sum(axis=0) / np.maximum(good.sum(axis=0), 1.0)
    joined = np.hstack([imputed(vector, means[key]) for key, vector in x.items()])

    seen = np.concatenate([np.ones(vector.shape[1], bool) if window is None else np.asarray(window[key], bool)
                           for key, vector in x.items()])

    def scale_for(weight: float) -> np.ndarray:
        return seen * np.concatenate([np.full(vector.shape[1], weight if key == "continuum" else 1.0)
                                      for key, vector in x.items()])

    alphas = tuple(a * len(z) for a in RIDGE_GRID)
    weights = continuum_weights if "continuum" in x else (1.0,)
    trials = {weight: ridge(joined * scale_for(weight), z, alphas=alphas) for weight in weights}
    suspect = np.zeros(len(z), bool)  # rows some candidate's fit calls a label outlier
    for trial in trials.values():
        suspect |= robust_outliers(trial.loo_residuals, OUTLIER_SIGMA)
    weight = min(weights, key=lambda w: float(loo_rmse(trials[w].loo_residuals[~suspect]).mean()))
    rows = np.flatnonzero(~robust_outliers(trials[weight].loo_residuals, OUTLIER_SIGMA))
    scale = scale_for(weight)
    pixels = joined[rows] * scale
    centre = pixels.mean(axis=0)
    _, singular, vt = np.linalg.svd(pixels - centre, full_matrices=False)
    k = int(min(SPECTRAL_COMPONENTS, len(rows) - 1))
    basis = vt[:k].T * (np.sqrt(len(rows)) / singular[0])
    components = (pixels - centre) @ basis
    centres = np.arange(len(rows))
    if len(rows) > KERNEL_CENTRES:  # memory and time grow as n^2 and n^3: a seeded subset holds the kernel
        centres = np.sort(np.random.default_rng(0).choice(len(rows), KERNEL_CENTRES, replace=False))
    fit = kernel_ridge(components[centres], z[rows][centres])
    # For the centres, the truth minus the leave-one-out residual where the truth is known (the in-sample estimate
    # where it is not, which a loss ignores anyway); the other rows' estimates are out of sample already.
    first = fit.predict(components)
    known = np.isfinite(fit.loo_residuals)
    first[centres] = np.where(known, z[rows][centres] - fit.loo_residuals, first[centres])
    refinements, out_of_sample, refine_record = _refine(first, components, z[rows], centres,
                                                        range(z.shape[1]) if refine is None else refine)
    record = {"inputs": list(x), "label_outliers_left_out": int(len(z) - len(rows)),
              "outlier_rule": f"leave-one-out ridge residual > {OUTLIER_SIGMA:g} robust sigma in any label",
              "principal_components": k, "kernel_centres": len(centres), "kernel_gamma": fit.gamma,
              "kernel_alpha": fit.alpha.tolist(),
              "kernel_loo_rmse": np.round(loo_rmse(fit.loo_residuals), 5).tolist(),
              "ridge_loo_rmse": np.round(loo_rmse(trials[weight].loo_residuals), 5).tolist(),
              "refinements": refine_record}
    if "continuum" in x:
        record["continuum_weight"] = weight
    if window is not None:
        record["entries_seen"] = {key: int(np.count_nonzero(window[key])) for key in x}
    return KernelEstimate(means, scale, centre, basis, fit, refinements, rows, out_of_sample, record)


@dataclass
class EstimatePart:
    """A `KernelEstimate` fitted on the labels `fitted` (columns of the model's targets), of which it gives
    `gives`, as its `share` of their mean over the parts that give them."""

    fitted: list[int]
    gives: list[int]
    estimate: KernelEstimate
    share: float = 1.0

    def outputs(self, n_targets: int) -> np.ndarray:
        """(len(fitted), n_targets) matrix placing its share of the estimates it gives in the model's columns."""
        matrix = np.zeros((len(self.fitted), n_targets))
        for column in self.gives:
            matrix[self.fitted.index(column), column] = self.share
        return matrix


@dataclass
class TeffGate:
    """Where a Teff estimate fitted on a narrower range of stars (`estimate`, of the first label alone) replaces the
    first label of the parts' sum: a smooth box in that sum's (standardised) first label, from `low` to `high`, its
    edges logistic curves of scale `edge`. Its weight is 1 well inside, 0 well outside."""

    estimate: KernelEstimate
    low: float
    high: float
    edge: float
    record: dict[str, Any]

    def weight(self, teff: np.ndarray) -> np.ndarray:
        """(n,) weight of the narrower estimate at the other parts' first-label estimates `teff`."""
        return _sigmoid((teff - self.low) / self.edge) - _sigmoid((teff - self.high) / self.edge)

    def applied(self, others: np.ndarray, narrower: np.ndarray) -> np.ndarray:
        """The other parts' sum (n, T) with its first column moved towards the narrower estimate (n,) by the
        weight."""
        out = others.copy()
        out[:, 0] += self.weight(others[:, 0]) * (narrower - others[:, 0])
        return out

    def network(self) -> tuple:
        """What `networks.spectral_hybrid` builds the gate from: (projection, kernel fit, refinements, low, high,
        edge)."""
        return self.estimate.projection(), self.estimate.fit, self.estimate.refinements, self.low, self.high, self.edge


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@dataclass
class SpectralEstimate:
    """The closed-form stage of the spectral model: estimate parts that together give every label once, and where
    there is one, the gate that gives Teff from an estimate fitted on a narrower range of stars."""

    parts: list[EstimatePart]
    n_targets: int
    rows: np.ndarray  # training rows the network learns from: those the first part kept
    out_of_sample: np.ndarray  # (len(rows), T) estimates of those rows that did not see their own labels
    record: dict[str, Any]
    gate: TeffGate | None = None

    def predict(self, x: dict[str, np.ndarray]) -> np.ndarray:
        """(n, T) estimates of encoded inputs (standardised targets)."""
        total = sum(part.estimate.predict(x) @ part.outputs(self.n_targets) for part in self.parts)
        return total if self.gate is None else self.gate.applied(total, self.gate.estimate.predict(x)[:, 0])

    def network_parts(self) -> list[tuple]:
        """What `networks.spectral_hybrid` builds each part from: (projection, kernel fit, refinements, outputs)."""
        return [(part.estimate.projection(), part.estimate.fit, part.estimate.refinements,
                 part.outputs(self.n_targets)) for part in self.parts]


def fit_spectral_estimate(x: dict[str, np.ndarray], z: np.ndarray, window_labels: tuple[int, ...] = (),
                          window: dict[str, np.ndarray] | None = None,
                          gate: tuple[np.ndarray, float, float, float] | None = None,
                          window_inputs: tuple[str, ...] = ()) -> SpectralEstimate:
    """All labels fitted together give every label but the first, which an estimate of its own gives (see the
    module docstring), and but those in `window_labels`, which an estimate of all labels seeing only the entries in
    `window` gives; with one label, one estimate. The inputs in `window_inputs` only that last estimate sees (the
    others see every other input whole). The labels that the estimates of all labels give are the mean of
    one such estimate per weight of `CONTINUUM_WEIGHTS` (`EstimatePart.share`). With a `gate` (rows, low, high,
    edge), a second estimate of the first label alone is fitted on the training `rows` (bool) and replaces it where
    the first estimate lies between `low` and `high` (`TeffGate`; standardised units)."""
    n_targets = z.shape[1]
    everything = list(range(n_targets))
    windowed = [c for c in window_labels if c != 0] if window is not None and n_targets > 1 else []
    joint = [c for c in everything[1:] if c not in windowed]
    rest = ({key: np.full(value.shape[1], key not in window_inputs) for key, value in x.items()} if window_inputs
            else None)  # what the estimates other than the window's see
    # (labels fitted, labels given, window); a part that gives no label is not fitted, and the network learns from
    # the rows that every estimate of the first group kept
    own, windowed_part = ([0], [0], rest), (everything, windowed, window)
    if joint:
        groups = [(everything, joint, rest), own] + ([windowed_part] if windowed else [])
    else:
        groups = ([windowed_part] if windowed else []) + [own]
    # Every group but Teff's own estimate is the mean of one estimate per continuum weight: choosing one weight by
    # its leave-one-out RMSE is a noisy choice (see the module docstring)
    averaged = CONTINUUM_WEIGHTS if "continuum" in x else (1.0,)
    parts = []
    for fitted, gives, part_window in groups:
        members = [(weight,) for weight in averaged] if (fitted, gives) != own[:2] else [CONTINUUM_WEIGHTS]
        parts += [EstimatePart(fitted, gives, fit_kernel_estimate(x, z[:, fitted], [fitted.index(c) for c in gives],
                                                                  part_window, weights), 1.0 / len(members))
                  for weights in members]
    first_group = [part for part in parts if (part.fitted, part.gives) == (parts[0].fitted, parts[0].gives)]
    rows = functools.reduce(np.intersect1d, [part.estimate.rows for part in first_group])
    out_of_sample = np.zeros((len(rows), n_targets))
    for part in parts:
        out_of_sample += _out_of_sample(part.estimate, x, rows) @ part.outputs(n_targets)
    record = {**parts[0].estimate.record, "share": parts[0].share,
              "label_outliers_left_out": int(len(z) - len(rows))}  # by any estimate of the first group
    record["separate_estimates"] = [{"labels": part.fitted, "gives": part.gives, "share": part.share,
                                     **part.estimate.record} for part in parts[1:]]
    if gate is None:
        return SpectralEstimate(parts, n_targets, rows, out_of_sample, record)
    narrow_rows, low, high, edge = gate
    subset = np.flatnonzero(narrow_rows)
    narrow = fit_kernel_estimate({key: value[subset] for key, value in x.items()}, z[subset][:, [0]], window=rest)
    narrow.rows = subset[narrow.rows]  # as rows of the whole training set
    teff_gate = TeffGate(narrow, low, high, edge, {"fitted_rows": len(subset), **narrow.record})
    record["teff_gate"] = teff_gate.record
    return SpectralEstimate(parts, n_targets, rows,
                            teff_gate.applied(out_of_sample, _out_of_sample(narrow, x, rows)[:, 0]), record, teff_gate)


def _out_of_sample(estimate: KernelEstimate, x: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """(len(rows), its labels) estimates of training `rows` that did not see their labels: the leave-one-out ones of
    the rows in its fit, and its predictions of the others (label outliers it left out, rows it was not fitted on)."""
    values = estimate.predict({key: value[rows] for key, value in x.items()})
    where = np.minimum(np.searchsorted(estimate.rows, rows), len(estimate.rows) - 1)
    kept = estimate.rows[where] == rows
    values[kept] = estimate.out_of_sample[where[kept]]
    return values


def metallicity_window(grid: dict[str, Any] | None,
                       shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray] | None:
    """Per spectral input (`spectrum`, `continuum`), the entries redder than METALLICITY_WINDOW_START on a features
    spec's `grid`; None without a grid that matches the inputs' shapes, or where the grid starts redder and there is
    no `LOCAL_INPUT`. With one, the window sees its entries there and none of the spectrum's."""
    if not grid or grid.get("length") != shapes["spectrum"][0] or not {"loglam_start", "loglam_step"} <= set(grid):
        return None
    pixels = grid_wavelengths(grid)
    window = {"spectrum": pixels >= METALLICITY_WINDOW_START}
    if "continuum" in shapes:
        first_pixels = block_edges(grid["length"])[:-1]
        if first_pixels.size != shapes["continuum"][0]:
            return None
        window["continuum"] = window["spectrum"][first_pixels]  # every pixel of the block in the window
    if LOCAL_INPUT in shapes:
        window[LOCAL_INPUT], window["spectrum"] = window["spectrum"], np.zeros_like(window["spectrum"])
    return None if all(entries.all() for entries in window.values()) else window


def local_continuum_pixels(grid: dict[str, Any] | None) -> int:
    """Pixels of the `LOCAL_INPUT` running window on a features spec's `grid`: the odd number spanning at most
    LOCAL_CONTINUUM_DEX; 0 without a log-lambda grid."""
    if not grid or not grid.get("loglam_step"):
        return 0
    return 2 * int(LOCAL_CONTINUUM_DEX / grid["loglam_step"] / 2) + 1


def _selection(target: int, k: int, n_targets: int, n_components: int) -> np.ndarray:
    matrix = np.zeros((n_targets + n_components, 1 + k))
    matrix[target, 0] = REFINE_ESTIMATE_WEIGHT
    matrix[n_targets + np.arange(k), 1 + np.arange(k)] = 1.0
    return matrix


def refined(first: np.ndarray, components: np.ndarray, refinements: list[Refinement]) -> np.ndarray:
    """First estimates (n, T) plus each refinement's correction of its label."""
    out = first.copy()
    for refinement in refinements:
        out[:, refinement.target] += refinement.correction(first, components)
    return out


def _refine(first: np.ndarray, components: np.ndarray, z: np.ndarray, centres: np.ndarray, targets):
    """Step 4 on the first stage's out-of-sample estimates `first` of the kept rows: (refinements, refined
    out-of-sample estimates, record). A refinement is solved on at most REFINE_CENTRES of the first stage's centres
    (whose estimates are leave-one-out where the label is known); its own leave-one-out residuals give theirs, and
    the other rows' corrections are out of sample already. Those residuals are the best of a few candidates', so
    slightly optimistic, and a pure-noise label often gets a refinement; what it does to the error on new rows
    (10 draws each): 40 rows +6% on average (hence REFINE_MIN_ROWS), 100 rows +0.1% (at most +10%), 300 rows -4%.
    """
    if len(centres) > REFINE_CENTRES:
        centres = np.sort(np.random.default_rng(1).choice(centres, REFINE_CENTRES, replace=False))
    residuals = z[centres] - first[centres]
    joined = np.hstack([first[centres], components[centres]])
    refinements, record = [], []
    out_of_sample = first.copy()
    for target in targets:
        known = np.isfinite(residuals[:, target])
        if known.sum() < REFINE_MIN_ROWS:
            continue
        before = robust_sigma(residuals[known, target])
        best = None
        for k in sorted({min(k, components.shape[1]) for k in REFINE_COMPONENTS}):
            inputs = joined @ _selection(target, k, z.shape[1], components.shape[1])
            fit = kernel_ridge(inputs, residuals[:, target], gammas=REFINE_GAMMAS, alphas=REFINE_ALPHAS,
                               criterion="robust_sigma")
            after = robust_sigma(fit.loo_residuals[known, 0])
            if np.isfinite(after) and (best is None or after < best[0]):
                best = (after, Refinement(target, k, fit))
        if best is None:
            continue
        after, refinement = best
        entry = {"target": target, "loo_robust_sigma_before": round(before, 5),
                 "loo_robust_sigma_after": round(after, 5),
                 "components": refinement.components, "gamma": refinement.fit.gamma,
                 "alpha": float(refinement.fit.alpha[0]), "kept": bool(after < before)}
        record.append(entry)
        if not entry["kept"]:
            continue
        refinements.append(refinement)
        out_of_sample[:, target] += refinement.correction(first, components)
        loo = refinement.fit.loo_residuals[:, 0]
        out_of_sample[centres[known], target] = z[centres[known], target] - loo[known]
    return refinements, out_of_sample, record
