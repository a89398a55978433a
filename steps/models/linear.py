"""Closed-form and convex estimators in NumPy (and SciPy's L-BFGS): ridge regression, kernel ridge regression and
softmax regression.

All are deterministic: ridge is solved in closed form through one SVD for every penalty on the grid, kernel ridge
through one eigendecomposition per kernel width, and the softmax model starts from zeros and is minimised with
L-BFGS on the full batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from steps.core.statistics import MAD_TO_SIGMA, robust_sigma


@dataclass
class RidgeFit:
    """Ridge coefficients per target, the penalty chosen for each, and out-of-sample residuals."""

    coef: np.ndarray  # (p, T)
    intercept: np.ndarray  # (T,)
    alpha: np.ndarray  # (T,)
    loo_residuals: np.ndarray  # (n_train, T): leave-one-out residuals at the chosen penalty
    scores: dict[str, list[float]] = field(default_factory=dict)  # alpha grid and validation RMSE per target


def ridge(x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
          alphas: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)) -> RidgeFit:
    """Fit `y ~ x @ coef + intercept` with an L2 penalty, choosing the penalty per target.

    The penalty minimising the validation RMSE is chosen (the leave-one-out RMSE on the training set when the
    validation set is empty); ties go to the larger penalty. NaN targets are left out of the fit for that target.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if y.ndim == 1:
        y = y[:, None]
    n_targets = y.shape[1]
    coef = np.zeros((x.shape[1], n_targets))
    intercept = np.zeros(n_targets)
    chosen = np.zeros(n_targets)
    loo = np.full(y.shape, np.nan)
    scores: dict[str, list[float]] = {"alphas": list(map(float, alphas))}
    for t in range(n_targets):
        rows = np.isfinite(y[:, t])
        xt, yt = x[rows], y[rows, t]
        if xt.shape[0] < 2:
            raise ValueError(f"target {t}: fewer than 2 training rows with a finite value")
        x_mean, y_mean = xt.mean(axis=0), yt.mean()
        u, s, vt = np.linalg.svd(xt - x_mean, full_matrices=False)
        uty = u.T @ (yt - y_mean)
        candidates = []
        for alpha in alphas:
            shrink = s / (s ** 2 + alpha)
            w = vt.T @ (shrink * uty)
            b = y_mean - x_mean @ w
            hat = (u ** 2) @ (s ** 2 / (s ** 2 + alpha)) + 1.0 / xt.shape[0]
            res_loo = (yt - (xt @ w + b)) / np.maximum(1.0 - hat, 1e-6)
            if x_val is not None and y_val is not None and np.isfinite(y_val[:, t]).sum() > 0:
                val_rows = np.isfinite(y_val[:, t])
                score = float(np.sqrt(np.mean((x_val[val_rows] @ w + b - y_val[val_rows, t]) ** 2)))
            else:
                score = float(np.sqrt(np.mean(res_loo ** 2)))
            candidates.append((score, w, b, res_loo))
        scores[f"target{t}"] = [c[0] for c in candidates]
        best = min(range(len(alphas)), key=lambda i: (round(candidates[i][0], 12), -alphas[i]))
        _, coef[:, t], intercept[t], loo[rows, t] = candidates[best]
        chosen[t] = alphas[best]
    return RidgeFit(coef, intercept, chosen, loo, scores)


@dataclass
class RidgeMoments:
    """A ridge fit's training rows reduced to their centred second moments, per target: enough to refit the ridge,
    at its chosen penalty, on any subset of its features without the rows.

    That is how a model answers for an object whose missing inputs leave some features unknown: from the ridge
    fitted on the features the object has (a "pattern submodel", Mercaldo & Blume 2020, Biostatistics 21, 236),
    not from the full fit with the unknown features imputed, which a model trained on complete rows extrapolates
    wildly. `subset` also gives how much larger the submodel's training residuals are, to widen its uncertainty.
    """

    mean: np.ndarray  # (T, p) feature means over the rows with the target
    gram: np.ndarray  # (T, p, p) centred x'x
    xty: np.ndarray  # (T, p) centred x'y
    yty: np.ndarray  # (T,) centred y'y
    y_mean: np.ndarray  # (T,)
    alpha: np.ndarray  # (T,) the penalty of the full fit

    NAMES = ("mean", "gram", "xty", "yty", "y_mean", "alpha")

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray, alpha: np.ndarray) -> "RidgeMoments":
        """The moments of training rows `x` (n, p) and targets `y` (n, T; NaN = unknown, left out per target)."""
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64).reshape(len(x), -1)
        parts: list[list[np.ndarray]] = [[] for _ in range(5)]
        for t in range(y.shape[1]):
            rows = np.isfinite(y[:, t])
            xt, yt = x[rows], y[rows, t]
            mean, y_mean = xt.mean(axis=0), yt.mean()
            xc, yc = xt - mean, yt - y_mean
            for part, value in zip(parts, (mean, xc.T @ xc, xc.T @ yc, yc @ yc, y_mean)):
                part.append(value)
        return cls(*(np.array(part) for part in parts), np.asarray(alpha, np.float64))

    def _solve(self, t: int, keep: np.ndarray) -> tuple[np.ndarray, float]:
        """Target t's ridge coefficients on the features `keep`, and its training residuals' sum of squares."""
        gram = self.gram[t][np.ix_(keep, keep)]
        w = np.linalg.solve(gram + self.alpha[t] * np.eye(len(gram)), self.xty[t][keep])
        return w, float(self.yty[t] - 2.0 * w @ self.xty[t][keep] + w @ gram @ w)

    @cached_property
    def _full_rss(self) -> np.ndarray:
        """(T,) the full fit's training residual sum of squares, which every `subset` ratio divides by."""
        every = np.ones(self.gram.shape[1], bool)
        return np.array([self._solve(t, every)[1] for t in range(len(self.alpha))])

    def subset(self, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ridge on the features `keep` (p,) bool: coefficients (k, T), intercepts (T,), and the ratio of its
        training residuals' sum of squares to the full fit's (T,), >= 1 up to the penalty's effect."""
        keep = np.asarray(keep, bool)
        coef = np.zeros((int(keep.sum()), len(self.alpha)))
        intercept, ratio = np.zeros(len(self.alpha)), np.ones(len(self.alpha))
        for t in range(len(self.alpha)):
            coef[:, t], rss = self._solve(t, keep)
            intercept[t] = self.y_mean[t] - self.mean[t][keep] @ coef[:, t]
            if self._full_rss[t] > 0:
                ratio[t] = rss / self._full_rss[t]
        return coef, intercept, ratio

    def predict(self, x: np.ndarray, unknown: np.ndarray,
                solved: dict[bytes, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """(n, T) answers to rows `x` (n, p), each from the ridge on the features it has (`unknown` (n, p) marks
        the others), and (n, T) factors that widen their uncertainty, sqrt of `subset`'s ratio (at least 1).
        `solved` caches the refits by pattern of unknown features."""
        solved = {} if solved is None else solved
        z, widen = np.empty((len(x), len(self.alpha))), np.ones((len(x), len(self.alpha)))
        if not len(x):
            return z, widen
        patterns, which = np.unique(np.asarray(unknown, bool), axis=0, return_inverse=True)
        for index, pattern in enumerate(patterns):
            rows = which.ravel() == index
            key = np.packbits(pattern).tobytes()
            if key not in solved:
                solved[key] = self.subset(~pattern)
            coef, intercept, ratio = solved[key]
            z[rows] = x[np.ix_(rows, ~pattern)] @ coef + intercept
            widen[rows] = np.sqrt(np.maximum(ratio, 1.0))
        return z, widen

    def arrays(self, prefix: str = "moments") -> dict[str, np.ndarray]:
        """What `weights.npz` keeps of them (`restore` reads them back)."""
        return {f"{prefix}.{name}": getattr(self, name) for name in self.NAMES}

    @classmethod
    def restore(cls, arrays: dict[str, np.ndarray], prefix: str = "moments") -> "RidgeMoments | None":
        """The moments saved by `arrays`, or None for a model saved without them."""
        if not all(f"{prefix}.{name}" in arrays for name in cls.NAMES):
            return None
        return cls(*(arrays[f"{prefix}.{name}"] for name in cls.NAMES))


@dataclass
class KernelRidgeFit:
    """Kernel ridge regression with k(a, b) = a.b / scale + exp(-gamma |a - b|^2 / width) on the training rows
    `centres`: prediction = sum_i dual[i] k(x, centres[i]) + intercept (dual is 0 for rows without the target)."""

    centres: np.ndarray  # (n, k)
    dual: np.ndarray  # (n, T)
    intercept: np.ndarray  # (T,)
    scale: float  # of the linear kernel: the mean squared norm of the centres
    width: float  # of the Gaussian kernel: the median squared distance between centres
    gamma: float
    alpha: np.ndarray  # (T,)
    loo_residuals: np.ndarray  # (n, T)
    scores: dict[str, list[float]] = field(default_factory=dict)  # gammas; LOO error per gamma (best alphas)

    def kernel(self, x: np.ndarray) -> np.ndarray:
        """k(x_j, centre_i) for every row of x: (m, n)."""
        squares = (x ** 2).sum(axis=1)[:, None] + (self.centres ** 2).sum(axis=1)[None] - 2 * x @ self.centres.T
        return x @ self.centres.T / self.scale + np.exp(-self.gamma * np.maximum(squares, 0) / self.width)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(m, T) predictions."""
        return self.kernel(np.asarray(x, np.float64)) @ self.dual + self.intercept


def _rmse(residuals: np.ndarray) -> float:
    return float(np.sqrt(np.mean(residuals ** 2)))


LOO_CRITERIA = {"rmse": _rmse, "robust_sigma": robust_sigma}  # what kernel_ridge minimises over its grid


def loo_rmse(residuals: np.ndarray) -> np.ndarray:
    """(T,) root mean square of each column of leave-one-out residuals (n, T), NaN (unknown truths) left out."""
    return np.sqrt(np.nanmean(np.asarray(residuals, np.float64) ** 2, axis=0))


def kernel_ridge(x: np.ndarray, y: np.ndarray, gammas: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0),
                 alphas: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0), criterion: str = "rmse") -> KernelRidgeFit:
    """Kernel ridge regression of `y` (n, T; NaN = unknown) on `x` (n, k), one Gaussian width for all targets.

    The width `gamma` (in units of the median squared distance between rows) is the one whose best penalty gives
    the lowest leave-one-out error averaged over the targets; the penalty `alpha` is then chosen per target, by the
    same closed-form leave-one-out residuals (residual_i = dual_i / [(K + alpha I)^-1]_ii). The error is their RMSE
    or, with `criterion="robust_sigma"`, their 1.4826 MAD (the core of the residuals, outliers aside). The intercept
    (the target's mean) is held at its full-data value in that formula, which makes the residuals optimistic by
    O(1/n). Targets should be standardised, so that the penalties and the average mean the same for each.
    """
    if criterion not in LOO_CRITERIA:
        raise ValueError(f"kernel_ridge: criterion {criterion!r} is not one of {sorted(LOO_CRITERIA)}")
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if y.ndim == 1:
        y = y[:, None]
    squares = (x ** 2).sum(axis=1)[:, None] + (x ** 2).sum(axis=1)[None] - 2 * x @ x.T
    squares = np.maximum(squares, 0)
    positive = squares[squares > 0]
    width = float(np.median(positive)) if positive.size else 1.0
    scale = float(np.mean((x ** 2).sum(axis=1))) or 1.0
    best = None
    scores: dict[str, list[float]] = {"gammas": list(map(float, gammas))}
    for gamma in gammas:
        gram = x @ x.T / scale + np.exp(-gamma * squares / width)
        decompositions: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}  # targets known on the same rows share one
        fits = [_kernel_target(gram, y[:, t], alphas, decompositions, LOO_CRITERIA[criterion])
                for t in range(y.shape[1])]
        score = float(np.mean([fit[0] for fit in fits]))
        scores.setdefault(f"loo_{criterion}", []).append(score)
        if best is None or score < best[0] - 1e-12:
            best = (score, gamma, fits)
    _, gamma, fits = best
    dual = np.column_stack([fit[1] for fit in fits])
    loo = np.column_stack([fit[2] for fit in fits])
    return KernelRidgeFit(x, dual, np.array([fit[3] for fit in fits]), scale, width, float(gamma),
                          np.array([fit[4] for fit in fits]), loo, scores)


def _kernel_target(gram: np.ndarray, y: np.ndarray, alphas: tuple[float, ...],
                   decompositions: dict[bytes, tuple[np.ndarray, np.ndarray]], error):
    """(LOO error, dual, LOO residuals, intercept, alpha) of one target at its best penalty by `error` of the LOO
    residuals; the eigendecomposition of the Gram matrix of its known rows is kept in `decompositions` for the other
    targets."""
    rows = np.isfinite(y)
    if rows.sum() < 2:
        raise ValueError("a target has fewer than 2 training rows with a finite value")
    intercept = float(y[rows].mean())
    key = np.packbits(rows).tobytes()
    if key not in decompositions:
        decompositions[key] = np.linalg.eigh(gram[np.ix_(rows, rows)])
    values, vectors = decompositions[key]
    projected = vectors.T @ (y[rows] - intercept)
    best = None
    for alpha in alphas:
        inverse = 1.0 / (np.maximum(values, 0) + alpha)
        coefficients = vectors @ (inverse * projected)
        diagonal = (vectors ** 2) @ inverse
        residuals = coefficients / diagonal
        score = float(error(residuals))
        if best is None or score < best[0] - 1e-12:
            best = (score, coefficients, residuals, alpha)
    score, coefficients, residuals, alpha = best
    dual, loo = np.zeros(len(y)), np.full(len(y), np.nan)
    dual[rows], loo[rows] = coefficients, residuals
    return score, dual, loo, intercept, float(alpha)


def robust_outliers(residuals: np.ndarray, n_sigma: float) -> np.ndarray:
    """Rows whose residual in any column is beyond `n_sigma` robust sigmas (1.4826 MAD) of that column's
    (NaN = no opinion)."""
    out = np.zeros(len(residuals), bool)
    for r in residuals.T:
        known = np.isfinite(r)
        if known.sum() < 3:
            continue
        centre = np.median(r[known])
        sigma = MAD_TO_SIGMA * np.median(np.abs(r[known] - centre))
        out[known] |= np.abs(r[known] - centre) > n_sigma * max(sigma, 1e-12)
    return out


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits, stable for large values."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class SoftmaxFit:
    """A multinomial logistic regression: weights (p, K), biases (K,), its L2 penalty and optimiser outcome."""

    coef: np.ndarray
    intercept: np.ndarray
    lam: float
    iterations: int
    converged: bool
    loss: float


def _objective(theta: np.ndarray, x: np.ndarray, onehot: np.ndarray, weight: np.ndarray, lam: float):
    p, k = x.shape[1], onehot.shape[1]
    w, b = theta[:p * k].reshape(p, k), theta[p * k:]
    z = x @ w + b
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1, keepdims=True))
    log_p = z - log_norm
    loss = -float((weight[:, None] * onehot * log_p).sum()) + 0.5 * lam * float((w ** 2).sum())
    grad_z = (np.exp(log_p) - onehot) * weight[:, None]
    grad_w = x.T @ grad_z + lam * w
    return loss, np.concatenate([grad_w.ravel(), grad_z.sum(axis=0)])


def fit_softmax(x: np.ndarray, y: np.ndarray, n_classes: int, lam: float, sample_weight: np.ndarray | None = None,
                max_iter: int = 2000) -> SoftmaxFit:
    """Minimise the weighted mean cross-entropy plus `lam/2 * |W|^2` (biases unpenalised) with L-BFGS from zeros."""
    from scipy.optimize import minimize  # imported here: serving never trains, and SciPy is slow to import

    x = np.asarray(x, np.float64)
    onehot = np.zeros((x.shape[0], n_classes))
    onehot[np.arange(x.shape[0]), y] = 1.0
    weight = np.ones(x.shape[0]) if sample_weight is None else np.asarray(sample_weight, np.float64)
    weight = weight / weight.sum()
    theta0 = np.zeros(x.shape[1] * n_classes + n_classes)
    result = minimize(_objective, theta0, args=(x, onehot, weight, lam), jac=True, method="L-BFGS-B",
                      options={"maxiter": max_iter, "gtol": 1e-7, "ftol": 1e-12})
    p = x.shape[1]
    return SoftmaxFit(result.x[:p * n_classes].reshape(p, n_classes), result.x[p * n_classes:], float(lam),
                      int(result.nit), bool(result.success), float(result.fun))


def balanced_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-row weights n / (K_present * n_class): every class present counts equally in the loss."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = (counts > 0).sum()
    per_class = np.where(counts > 0, len(y) / (present * np.maximum(counts, 1)), 0.0)
    return per_class[y]
