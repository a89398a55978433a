"""Calibration of predicted uncertainties and class probabilities, fitted on the validation split. NumPy only.

- `member_moments`: a regression network's (mean, log-variance) per target from its outputs: one head's as they
  are, or a deep ensemble's members' combined (the mean of their means; the mean of their variances plus the
  variance of their means, Lakshminarayanan et al. 2017).
- `sigma_scale`: the factor by which a regression head's predicted sigma is multiplied so that the median of
  |residual / sigma| is 0.6745, as for a Gaussian (the same rule as the baselines': the 68% interval then covers
  about 68% of out-of-sample residuals).
- `fit_temperature`: temperature scaling (Guo et al. 2017): one scalar T dividing the logits, chosen to minimise
  the validation log loss; it changes confidence, never the predicted class (and stays 1 where the validation
  objects are all classified correctly, which leaves the log loss without a minimum).
- `reliability` and `expected_calibration_error`: the reliability-diagram bins (confidence of the top class
  against its accuracy) and the ECE, the bin-weighted mean |accuracy - confidence|. The evaluation report draws
  the same bins.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

GAUSS_MEDIAN_ABS_Z = 0.6744897501960817
# Range of a regression head's log-variance, on standardised targets (sigma from 0.0025 to 20 training standard
# deviations): the loss and the predictors clip to it alike.
LOG_VAR_RANGE = (-12.0, 6.0)
TEMPERATURE_BOUNDS = (0.05, 20.0)


def member_moments(outputs: np.ndarray, n_targets: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, log-variance), each (n, T), of outputs (n, K * 2T): K heads of [mean (T), log-variance (T)] side by
    side (K = 1: a single head), log-variances clipped to `LOG_VAR_RANGE`."""
    outputs = np.asarray(outputs, np.float64)
    heads = outputs.reshape(len(outputs), -1, 2 * n_targets)
    means, log_var = heads[:, :, :n_targets], np.clip(heads[:, :, n_targets:], *LOG_VAR_RANGE)
    if heads.shape[1] == 1:
        return means[:, 0], log_var[:, 0]
    variance = np.exp(log_var).mean(axis=1) + means.var(axis=1)
    return means.mean(axis=1), np.clip(np.log(variance), *LOG_VAR_RANGE)


def sigma_scale(residuals: np.ndarray, sigma: np.ndarray) -> float:
    """The factor s with median |residual / (s * sigma)| = 0.6745 over finite rows (1.0 when there are none)."""
    residuals, sigma = np.asarray(residuals, np.float64), np.asarray(sigma, np.float64)
    ok = np.isfinite(residuals) & np.isfinite(sigma) & (sigma > 0)
    if not ok.any():
        return 1.0
    scale = float(np.median(np.abs(residuals[ok] / sigma[ok]))) / GAUSS_MEDIAN_ABS_Z
    return scale if math.isfinite(scale) and scale > 0 else 1.0


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature, computed stably."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_loss(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0,
             weights: np.ndarray | None = None) -> float:
    """(Weighted) mean -ln p(true class) at a temperature."""
    p = softmax(logits, temperature)[np.arange(len(labels)), labels]
    w = np.ones(len(labels)) if weights is None else np.asarray(weights, np.float64)
    return float(-np.sum(w * np.log(np.clip(p, 1e-15, 1.0))) / max(w.sum(), 1e-300))


def best_temperature(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The temperature in TEMPERATURE_BOUNDS minimising the log loss (1.0 without rows). Where every row is
    classified correctly that is the lower bound: the log loss falls as the temperature goes to 0."""
    labels = np.asarray(labels, np.int64)
    if len(labels) == 0:
        return 1.0
    lo, hi = (math.log(b) for b in TEMPERATURE_BOUNDS)
    result = minimize_scalar(lambda t: log_loss(logits, labels, math.exp(t), weights), bounds=(lo, hi),
                             method="bounded", options={"xatol": 1e-4})
    return float(math.exp(result.x))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The calibration temperature: `best_temperature` on the validation rows, but 1.0 where every one is classified
    correctly. The log loss then has no minimum, and the bound it stops at makes every probability 0 or 1, the
    misclassified objects of new data included (a Stripe 82 light-curve model got 0.053 so, its test log loss
    3.5e-12)."""
    if len(labels) and bool(np.all(np.asarray(logits).argmax(axis=1) == np.asarray(labels))):
        return 1.0
    return best_temperature(logits, labels, weights)


def reliability(proba: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> dict[str, list[Any]]:
    """Equal-width confidence bins of the top-class probability: edges, count, mean confidence, accuracy."""
    proba = np.asarray(proba, np.float64)
    ok = np.isfinite(proba).all(axis=1) if proba.ndim == 2 else np.isfinite(proba)
    confidence = (proba.max(axis=1) if proba.ndim == 2 else proba)[ok]
    correct = np.asarray(correct, bool)[ok]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)
    count, conf, acc = [], [], []
    for b in range(n_bins):
        members = which == b
        count.append(int(members.sum()))
        conf.append(float(confidence[members].mean()) if members.any() else None)
        acc.append(float(correct[members].mean()) if members.any() else None)
    return {"edges": edges.tolist(), "count": count, "confidence": conf, "accuracy": acc}


def expected_calibration_error(proba: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> float | None:
    """Bin-weighted mean |accuracy - confidence| of the top class (None without rows)."""
    bins = reliability(proba, correct, n_bins)
    n = sum(bins["count"])
    if n == 0:
        return None
    return float(sum(c * abs(a - f) for c, a, f in zip(bins["count"], bins["accuracy"], bins["confidence"]) if c)
                 / n)
