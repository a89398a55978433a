"""The closed-form part of the spectral model, in NumPy (no TensorFlow): `fit_kernel_estimate`.

From the encoded training inputs ((n, length, 2) arrays: values and mask, as `VectorInput` with `mask_channel`
makes them) and the standardised targets:
1. bad entries count as the training mean of the entry (`imputed`), the inputs are joined, and a `continuum`
   input is multiplied by the weight from `CONTINUUM_WEIGHTS` whose ridge regression has the lowest leave-one-out
   error (one penalty then suits both inputs);
2. rows whose leave-one-out ridge residual is beyond `OUTLIER_SIGMA` robust sigmas in any label are left out
   (a wrong label, a wrong star);
3. the rest are projected on their `SPECTRAL_COMPONENTS` leading principal components, and a kernel ridge
   regression (`steps.models.linear.kernel_ridge`) is solved on at most `KERNEL_CENTRES` of them.
`training._spectral_network` holds the result in frozen Keras layers (`projection`, the kernel fit) and trains a
correction on the out-of-sample estimates; `bench/bench_training.py` times this part on any Keras backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from steps.models.baseline import OUTLIER_SIGMA, RIDGE_GRID
from steps.models.linear import KernelRidgeFit, kernel_ridge, loo_rmse, ridge, robust_outliers

SPECTRAL_COMPONENTS = 64  # principal components the kernel and the correction network see
CONTINUUM_WEIGHTS = (1.0, 2.0, 4.0, 8.0)  # candidate weights of the continuum shape against the flux
KERNEL_CENTRES = 4000  # most training rows the kernel ridge is solved on (an n x n eigendecomposition per width)


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
class KernelEstimate:
    """The fitted closed-form stage: how inputs become components, the kernel fit on them, the rows it kept."""

    means: dict[str, np.ndarray]  # training mean of every entry, per input (in input order)
    scale: np.ndarray  # per joined entry: the continuum weight or 1
    centre: np.ndarray  # mean of the joined, scaled entries over the kept rows
    basis: np.ndarray  # (entries, k) principal directions; the leading component has unit sd
    fit: KernelRidgeFit
    rows: np.ndarray  # training rows kept (label outliers left out)
    out_of_sample: np.ndarray  # estimates of the kept rows that did not see their own label
    record: dict[str, Any]  # what model.json keeps of the fit

    def components(self, x: dict[str, np.ndarray]) -> np.ndarray:
        """(n, k) principal-component scores of encoded inputs."""
        joined = np.hstack([imputed(x[key], mean) for key, mean in self.means.items()]) * self.scale
        return (joined - self.centre) @ self.basis

    def predict(self, x: dict[str, np.ndarray]) -> np.ndarray:
        """(n, T) kernel estimates of encoded inputs (standardised targets)."""
        return self.fit.predict(self.components(x))

    def projection(self) -> tuple[np.ndarray, np.ndarray]:
        """(kernel, bias) of a Dense layer computing `components` from the flattened, joined inputs."""
        entry_mean = np.concatenate(list(self.means.values()))
        return on_flattened(self.basis * self.scale[:, None], entry_mean), -self.centre @ self.basis


def fit_kernel_estimate(x: dict[str, np.ndarray], z: np.ndarray) -> KernelEstimate:
    """Steps 1-3 of the module docstring on encoded inputs `x` (a `spectrum` and optionally a `continuum`) and
    standardised targets `z` (n, T; NaN = unknown)."""
    means = {}
    for key, vector in x.items():
        good = 1.0 - vector[:, :, 1]
        means[key] = (vector[:, :, 0] * good).sum(axis=0) / np.maximum(good.sum(axis=0), 1.0)
    joined = np.hstack([imputed(vector, means[key]) for key, vector in x.items()])

    def scale_for(weight: float) -> np.ndarray:
        return np.concatenate([np.full(vector.shape[1], weight if key == "continuum" else 1.0)
                               for key, vector in x.items()])

    alphas = tuple(a * len(z) for a in RIDGE_GRID)
    weights = CONTINUUM_WEIGHTS if "continuum" in x else (1.0,)
    trials = {weight: ridge(joined * scale_for(weight), z, alphas=alphas) for weight in weights}
    weight = min(weights, key=lambda w: float(loo_rmse(trials[w].loo_residuals).mean()))
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
    out_of_sample = fit.predict(components)
    known = np.isfinite(fit.loo_residuals)
    out_of_sample[centres] = np.where(known, z[rows][centres] - fit.loo_residuals, out_of_sample[centres])
    record = {"inputs": list(x), "label_outliers_left_out": int(len(z) - len(rows)),
              "outlier_rule": f"leave-one-out ridge residual > {OUTLIER_SIGMA:g} robust sigma in any label",
              "principal_components": k, "kernel_centres": len(centres), "kernel_gamma": fit.gamma,
              "kernel_alpha": fit.alpha.tolist(),
              "kernel_loo_rmse": np.round(loo_rmse(fit.loo_residuals), 5).tolist(),
              "ridge_loo_rmse": np.round(loo_rmse(trials[weight].loo_residuals), 5).tolist()}
    if "continuum" in x:
        record["continuum_weight"] = weight
    return KernelEstimate(means, scale, centre, basis, fit, rows, out_of_sample, record)
