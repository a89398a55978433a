"""The null predictors: what a model must beat. A regression target's training mean (with the training standard
deviation as its uncertainty); a classifier's training class frequencies (always predicting the commonest class).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from steps.models.inputs import Columns


class NullRegressor:
    """Predicts each target's training mean, with the training standard deviation as 1-sigma."""

    task = "regression"
    name = kind = "null"

    def __init__(self, targets: list[str], mean: dict[str, float], sigma: dict[str, float]):
        self.targets, self.mean, self.sigma = list(targets), mean, sigma

    @classmethod
    def fit(cls, train: Any, targets: list[str]) -> "NullRegressor":
        """Fit on a training batch (table, frame or records)."""
        cols = Columns(train)
        mean, sigma = {}, {}
        for target in targets:
            y = cols.scalar(target)
            y = y[np.isfinite(y)]
            mean[target] = float(y.mean()) if y.size else float("nan")
            sigma[target] = float(y.std()) if y.size else float("nan")
        return cls(targets, mean, sigma)

    def predict_table(self, data: Any) -> pd.DataFrame:
        """The training mean and standard deviation of each target, for every row."""
        cols = Columns(data)
        out: dict[str, Any] = {"id": cols.raw("id")} if cols.has("id") else {}
        for target in self.targets:
            out[target] = np.full(cols.n, self.mean[target])
            out[f"{target}_err"] = np.full(cols.n, self.sigma[target])
        return pd.DataFrame(out, index=pd.RangeIndex(cols.n))


class NullClassifier:
    """Predicts the training class frequencies for every object."""

    task = "classification"
    name = kind = "null"

    def __init__(self, classes: list[str], prior: np.ndarray):
        self.classes, self.prior = list(classes), np.asarray(prior, np.float64)

    @classmethod
    def fit(cls, train: Any, classes: list[str], column: str = "class") -> "NullClassifier":
        """Fit on a training batch (table, frame or records)."""
        labels = Columns(train).strings(column)
        counts = np.array([np.sum(labels == c) for c in classes], np.float64)
        prior = counts / counts.sum() if counts.sum() else np.full(len(classes), 1.0 / len(classes))
        return cls(classes, prior)

    def predict_table(self, data: Any) -> pd.DataFrame:
        """The training class frequencies (and the commonest class) for every row."""
        cols = Columns(data)
        out: dict[str, Any] = {"id": cols.raw("id")} if cols.has("id") else {}
        out["class"] = [self.classes[int(np.argmax(self.prior))]] * cols.n
        out.update({f"p_{c}": np.full(cols.n, self.prior[k]) for k, c in enumerate(self.classes)})
        return pd.DataFrame(out, index=pd.RangeIndex(cols.n))


def null_for(model: Any, train: Any) -> NullRegressor | NullClassifier:
    """The null predictor matching a model's task and outputs, fitted on the training split."""
    if model.task == "regression":
        return NullRegressor.fit(train, model.targets)
    return NullClassifier.fit(train, model.classes, model.info.get("label_column", "class"))
