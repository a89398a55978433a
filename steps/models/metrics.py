"""Quality metrics shared by training (train/val) and evaluation (test): regression and classification.

Definitions (residual = prediction - truth; rows where the truth is not finite are left out):

- `n`: rows with a finite truth and a finite prediction; `n_missing`: rows with a finite truth and no prediction.
- `bias`: mean residual; `median_residual`: median residual.
- `robust_sigma`: 1.4826 * median(|residual - median(residual)|) (the MAD, scaled to a Gaussian sigma).
- `rmse`, `mae`: root mean square and mean absolute residual.
- `outlier_fraction`: share of rows with |residual - median(residual)| > 3 * robust_sigma.
- `coverage_68`, `coverage_95`: share of rows whose truth lies within 1 and 1.96 predicted sigmas of the
  prediction (when the predictor gives uncertainties), over the `n_err` rows with a positive, finite sigma; ideal
  values are 0.683 and 0.95.
- `z_robust_sigma`: robust sigma of residual / predicted sigma (1 for calibrated uncertainties).
- `robust_sigma_interval`, `rmse_interval` (with `intervals=True`, as evaluation asks): the 16th and 84th
  percentiles of the figure over 1,000 bootstrap resamples of the rows (seeded: the same rows give the same
  interval), so that a reader sees how far a figure of a few dozen test objects may move (a robust sigma of 70
  residuals, about 8% either way).

Classification: `accuracy`; `balanced_accuracy` (mean recall over the classes present in the truth);
`recall` per class; `confusion` (`labels`, `matrix` with rows = truth, columns = prediction);
`roc_auc_macro` (one-vs-rest ROC AUC from ranks, averaged over classes with both positives and negatives);
`log_loss` (mean -ln p(true class), probabilities clipped to [1e-15, 1]); `balanced_accuracy_interval` (with
`intervals=True`) as the regression intervals above.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from steps.core.statistics import MAD_TO_SIGMA, robust_sigma

BOOTSTRAP_DRAWS = 1000
BOOTSTRAP_SEED = 20261130

# Direction of each metric: True when larger is better. Gates use this to read "better" and "worse".
HIGHER_IS_BETTER = {
    "accuracy": True, "balanced_accuracy": True, "roc_auc_macro": True, "log_loss": False,
    "robust_sigma": False, "rmse": False, "mae": False, "outlier_fraction": False, "abs_bias": False,
    "abs_median_residual": False, "coverage_68": True, "coverage_95": True, "n": True, "missing_fraction": False,
}


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def bootstrap_interval(statistic: Any, n: int) -> list[float]:
    """The 16th and 84th percentiles of `statistic(rows)` over `BOOTSTRAP_DRAWS` resamples (with replacement) of
    `n` row indices, seeded; `statistic` takes a (draws, n) index array and returns one value per draw. Drawn in
    chunks of at most a million indices, so that 20,000 test rows cost tens of MB, not 750."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    chunk = max(1, min(BOOTSTRAP_DRAWS, 1_000_000 // n))
    values = [statistic(rng.integers(0, n, size=(min(chunk, BOOTSTRAP_DRAWS - start), n)))
              for start in range(0, BOOTSTRAP_DRAWS, chunk)]
    return [float(v) for v in np.percentile(np.concatenate(values), [16, 84])]


def regression_metrics(truth: np.ndarray, pred: np.ndarray, err: np.ndarray | None = None,
                       intervals: bool = False) -> dict[str, Any]:
    """Metrics of one regression target (see the module docstring); non-finite values become None."""
    truth, pred = np.asarray(truth, np.float64), np.asarray(pred, np.float64)
    known = np.isfinite(truth)
    ok = known & np.isfinite(pred)
    res = pred[ok] - truth[ok]
    n = int(ok.sum())
    out: dict[str, Any] = {"n": n, "n_missing": int(known.sum() - n),
                           "missing_fraction": float((known.sum() - n) / known.sum()) if known.any() else math.nan}
    if n == 0:
        out.update({k: math.nan for k in ("bias", "median_residual", "abs_bias", "abs_median_residual",
                                           "robust_sigma", "rmse", "mae", "outlier_fraction")})
    else:
        sigma = robust_sigma(res)
        median = float(np.median(res))
        out.update({
            "bias": float(res.mean()), "median_residual": median, "abs_bias": float(abs(res.mean())),
            "abs_median_residual": abs(median), "robust_sigma": sigma,
            "rmse": float(np.sqrt(np.mean(res ** 2))), "mae": float(np.mean(np.abs(res))),
            "outlier_fraction": float(np.mean(np.abs(res - median) > 3 * sigma)),
        })
        if intervals and n >= 2:
            def sigmas(rows: np.ndarray) -> np.ndarray:
                drawn = res[rows]
                centre = np.median(drawn, axis=1, keepdims=True)
                return MAD_TO_SIGMA * np.median(np.abs(drawn - centre), axis=1)

            out["robust_sigma_interval"] = bootstrap_interval(sigmas, n)
            out["rmse_interval"] = bootstrap_interval(lambda rows: np.sqrt(np.mean(res[rows] ** 2, axis=1)), n)
    if err is not None:
        err = np.asarray(err, np.float64)
        good = ok & np.isfinite(err) & (err > 0)
        if good.any():
            z = (pred[good] - truth[good]) / err[good]
            out.update({"n_err": int(good.sum()), "coverage_68": float(np.mean(np.abs(z) <= 1.0)),
                        "coverage_95": float(np.mean(np.abs(z) <= 1.96)),
                        "z_robust_sigma": robust_sigma(z)})
        else:
            out.update({"n_err": 0, "coverage_68": math.nan, "coverage_95": math.nan, "z_robust_sigma": math.nan})
    return _clean(out)


def rank_average(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(x, kind="mergesort")
    _, first, counts = np.unique(x[order], return_index=True, return_counts=True)
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    return ranks


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U from average ranks); NaN without both positives and negatives."""
    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rank_average(np.asarray(scores, np.float64))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def classification_metrics(truth: np.ndarray, proba: np.ndarray, classes: list[str],
                           intervals: bool = False) -> dict[str, Any]:
    """Metrics of class probabilities `proba` (n, K) in the order of `classes` against true labels."""
    truth = np.asarray(truth, dtype=object)
    proba = np.asarray(proba, np.float64)
    known = np.array([t is not None for t in truth], bool)
    labels = list(classes) + sorted({str(t) for t in truth[known]} - set(classes))
    truth, proba = truth[known], proba[known]
    ok = np.isfinite(proba).all(axis=1)
    n_missing = int((~ok).sum())
    truth, proba = truth[ok], proba[ok]
    n = len(truth)
    out: dict[str, Any] = {"n": n, "n_missing": n_missing,
                           "missing_fraction": n_missing / (n + n_missing) if n + n_missing else math.nan}
    if n == 0:
        out.update({"accuracy": math.nan, "balanced_accuracy": math.nan, "roc_auc_macro": math.nan,
                    "log_loss": math.nan, "recall": {}, "roc_auc": {},
                    "confusion": {"labels": labels, "matrix": [[0] * len(labels) for _ in labels]}})
        return _clean(out)
    index = {label: i for i, label in enumerate(labels)}
    t_idx = np.array([index[str(t)] for t in truth])
    p_idx = np.argmax(proba, axis=1)
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(matrix, (t_idx, p_idx), 1)
    present = matrix.sum(axis=1) > 0
    recall = {labels[i]: float(matrix[i, i] / matrix[i].sum()) for i in range(len(labels)) if present[i]}
    aucs = {c: roc_auc(proba[:, k], t_idx == k) for k, c in enumerate(classes)}
    finite_aucs = [a for a in aucs.values() if math.isfinite(a)]
    p_true = np.array([proba[i, t] if t < len(classes) else 0.0 for i, t in enumerate(t_idx)])
    p_true = p_true / np.maximum(proba.sum(axis=1), 1e-300)
    out.update({
        "accuracy": float(np.mean(t_idx == p_idx)),
        "balanced_accuracy": float(np.mean(list(recall.values()))),
        "recall": recall,
        "roc_auc": aucs,
        "roc_auc_macro": float(np.mean(finite_aucs)) if finite_aucs else math.nan,
        "log_loss": float(-np.mean(np.log(np.clip(p_true, 1e-15, 1.0)))),
        "confusion": {"labels": labels, "matrix": matrix.tolist()},
    })
    if intervals and n >= 2:
        def balanced(rows: np.ndarray) -> np.ndarray:
            truth_drawn, hit = t_idx[rows], (t_idx == p_idx)[rows]
            recalls = [np.where((truth_drawn == k).any(axis=1), (hit & (truth_drawn == k)).sum(axis=1)
                                / np.maximum((truth_drawn == k).sum(axis=1), 1), np.nan)
                       for k in np.flatnonzero(present)]
            return np.nanmean(recalls, axis=0)

        out["balanced_accuracy_interval"] = bootstrap_interval(balanced, n)
    return _clean(out)


def period_metrics(truth: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """How well a period estimate matches the true period, over the rows with a true period (finite, positive).

    `within_1pct`: share of them with |pred/truth - 1| < 1%; `within_1pct_harmonic`: the same, also accepting half
    and double the true period (a common, and for eclipsing binaries expected, alias). A row given no period counts
    as a miss, so that withholding a period never scores better than giving one; `n_predicted` counts the rows given
    one, and `median_abs_log10_ratio` is over those.
    """
    truth, pred = np.asarray(truth, np.float64), np.asarray(pred, np.float64)
    known = np.isfinite(truth) & (truth > 0)
    if not known.any():
        return {"n": 0, "n_predicted": 0, "within_1pct": None, "within_1pct_harmonic": None,
                "median_abs_log10_ratio": None}
    given = known & np.isfinite(pred) & (pred > 0)
    ratio = np.where(given, pred, np.nan)[known] / truth[known]
    harmonic = np.min(np.abs(np.stack([ratio, ratio * 2, ratio / 2]) - 1.0), axis=0)
    return _clean({"n": int(known.sum()), "n_predicted": int(given.sum()),
                   "within_1pct": float(np.mean(np.abs(ratio - 1) < 0.01)),
                   "within_1pct_harmonic": float(np.mean(harmonic < 0.01)),
                   "median_abs_log10_ratio": float(np.nanmedian(np.abs(np.log10(ratio)))) if given.any() else None})
