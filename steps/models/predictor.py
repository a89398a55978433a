"""Loading a model directory and predicting with it: the one `Predictor` interface that evaluation and the API use.

A model directory holds `model.json` (name, kind, task, targets or classes, feature configuration, training
metadata, `format_version`), `weights.npz` (the fitted arrays) and `spec.json` (the input spec of the split it
was trained on). A Keras model directory adds `model.keras` and `saved_model/`; its `weights.npz` holds only the
domain check's arrays.
`load_model(path)` reads it and returns a predictor for its `kind`: each kind has a loader in `KINDS`; the Keras
loader imports TensorFlow only when a Keras model is loaded.

Regression predictors return, per target `t`, the columns `t` and `t_err` (a 1-sigma uncertainty); classifiers
return `class` and `p_<class>` per class, and `period` when the input has one. Both then return `domain_distance`
and `in_domain`: how far the object lies from the training objects (`steps.models.domain`; blank for a model saved
without the check). An `id` column is passed through first when the input has one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from steps.models.domain import Domain, blank
from steps.models.features import Featurizer
from steps.models.inputs import Columns
from steps.models.io import FORMAT_VERSION, MODEL_JSON, SPEC_JSON, WEIGHTS, load_npz, read_json
from steps.models.keras import EARLIER_KINDS as EARLIER_KERAS_KINDS
from steps.models.keras import KIND as KERAS_KINDS
from steps.models.keras import load_keras
from steps.models.label_range import RANGES_KEY, beyond_labels, blank_reasons
from steps.models.linear import RidgeMoments, softmax
from steps.models.transforms import inverse_transform

class Predictor:
    """A loaded model: `.name`, `.kind`, `.task`, `.spec`, `.info`, and the prediction methods."""

    task = "unknown"

    def __init__(self, path: Path | None, info: dict[str, Any], spec: dict[str, Any]):
        self.path = Path(path) if path is not None else None
        self.info = info
        self.spec = spec
        self.name: str = info["name"]
        self.kind: str = info["kind"]
        self.domain: Domain | None = None

    def domain_columns(self, values: np.ndarray, bad: np.ndarray | None, usable: np.ndarray,
                       cols: Columns | None = None) -> dict[str, np.ndarray]:
        """The `domain_distance` and `in_domain` columns of objects whose features are `values` (n, p) and whose
        inputs are `cols` (read by a spectral model's residual and line checks, a light-curve model's period check)."""
        if self.domain is None:
            return blank(len(usable))
        return self.domain.outputs(values, bad, usable, cols)

    @property
    def input_fields(self) -> dict[str, list[str]]:
        """Input fields: `required` in every object, `optional` imputed when absent."""
        return dict(self.info.get("inputs", {"required": [], "optional": []}))

    @property
    def label_ranges(self) -> dict[str, list[float]]:
        """Per target, the [min, max] of the training labels (`steps.models.label_range`); empty for a classifier
        or a model saved without them."""
        return dict(self.info.get("training", {}).get(RANGES_KEY, {})) if self.task == "regression" else {}

    def blank_reasons(self, outputs: Mapping[str, Any], answered: np.ndarray | None = None) -> list[str | None]:
        """Per row of this model's output columns (`predict_columns`, `predict_table`), why labels were left blank
        (beyond the training labels), or None; `answered`: the rows the model could read (default: those with a
        finite `domain_distance`)."""
        if not self.label_ranges:
            return [None] * len(next(iter(outputs.values()), []))
        return blank_reasons(outputs, self.label_ranges, getattr(self, "transforms", {}), self.targets, answered)

    def predict_table(self, data: Any, blank_beyond_labels: bool = True) -> pd.DataFrame:
        """Predictions for a pyarrow Table or pandas DataFrame (or list of records), one row per input row. An
        answer beyond the training labels is flagged (`in_domain` False) and, unless `blank_beyond_labels` is False
        (evaluation keeps it), left blank."""
        return self._predict(Columns(data), blank_beyond_labels)

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Predictions for JSON-like records (lists as Python lists): one dict of plain Python values per record."""
        if isinstance(records, (str, bytes)) or not isinstance(records, Sequence):
            raise TypeError("expected a list of records")
        cols = Columns(records)
        featurizer = getattr(self, "featurizer", None)
        if featurizer is not None and cols.n:
            unusable = np.flatnonzero(~featurizer.usable(cols))
            if unusable.size:
                raise ValueError(f"record {int(unusable[0])}: {featurizer.describe_unusable()}")
        frame = self._predict(cols)
        columns = list(frame.columns)
        values = [frame[c].tolist() for c in columns]
        return [dict(zip(columns, row)) for row in zip(*values)] if columns else [{} for _ in records]

    def predict_columns(self, data: Any) -> dict[str, np.ndarray]:
        """The output columns (no `id`) as NumPy arrays, one row per input object: the API's path, no pandas."""
        return self._guarded(data if isinstance(data, Columns) else Columns(data), blank=True)

    def _guarded(self, cols: Columns, blank: bool) -> dict[str, np.ndarray]:
        data = self._outputs(cols)
        if self.label_ranges:
            beyond_labels(data, self.label_ranges, getattr(self, "transforms", {}), blank)
        return data

    def _outputs(self, cols: Columns) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _predict(self, cols: Columns, blank: bool = True) -> pd.DataFrame:
        out: dict[str, Any] = {}
        if cols.has("id"):
            out["id"] = cols.raw("id")
        out.update(self._guarded(cols, blank))
        return pd.DataFrame(out, index=pd.RangeIndex(cols.n))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} ({self.kind}) from {self.path}>"


class RegressionPredictor(Predictor):
    """A linear model on fitted features, per target, with a per-object 1-sigma uncertainty."""

    task = "regression"

    def __init__(self, path: Path | None, info: dict[str, Any], spec: dict[str, Any],
                 arrays: dict[str, np.ndarray]):
        super().__init__(path, info, spec)
        self.targets: list[str] = list(info["targets"])
        self.transforms: dict[str, str] = dict(info.get("target_transforms", {}))
        self.uncertainty: dict[str, dict[str, Any]] = dict(info.get("uncertainty", {}))
        self.featurizer = Featurizer.restore(info["features"], arrays)
        self.coef, self.intercept = arrays["coef"], arrays["intercept"]
        self.domain = Domain.restore(arrays)
        self.moments = RidgeMoments.restore(arrays)
        self._refits: dict[bytes, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # by pattern of missing inputs

    def _sigma(self, cols: Columns, target: str) -> np.ndarray:
        spec = self.uncertainty.get(target, {"kind": "constant", "sigma": math.nan})
        if spec["kind"] == "snr":
            snr = cols.scalar(spec["column"])
            snr = np.where(np.isfinite(snr) & (snr > 0), snr, spec["snr_ref"])
            return np.sqrt(spec["s0"] ** 2 + (spec["s1"] / snr) ** 2)
        return np.full(cols.n, float(spec["sigma"]) if spec.get("sigma") is not None else math.nan)

    def fitted_space(self, cols: Columns) -> tuple[np.ndarray, np.ndarray]:
        """(n, T) predictions in the fitted space (NaN for unusable objects), and (n, T) factors that widen their
        uncertainty: 1, but for objects answered by a refit around their missing inputs."""
        unknown = self.featurizer.unknown_features(cols) if self.moments is not None else None
        return self._fitted(self.featurizer.transform(cols), self.featurizer.usable(cols), unknown)

    def _fitted(self, features: np.ndarray, usable: np.ndarray,
                unknown: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        z = features @ self.coef + self.intercept
        widen = np.ones_like(z)
        if unknown is not None:
            partial = usable & unknown.any(axis=1)
            z[partial], widen[partial] = self.moments.predict(features[partial], unknown[partial], self._refits)
            widen[partial] *= [self.uncertainty.get(t, {}).get("refit_scale", 1.0) for t in self.targets]
        z[~usable] = np.nan
        return z, widen

    def _outputs(self, cols: Columns) -> dict[str, np.ndarray]:
        features, usable = self.featurizer.transform(cols), self.featurizer.usable(cols)
        unknown = self.featurizer.unknown_features(cols) if self.moments is not None else None
        z, widen = self._fitted(features, usable, unknown)
        data: dict[str, np.ndarray] = {}
        for t, target in enumerate(self.targets):
            sigma = self._sigma(cols, target) * widen[:, t]
            data[target], data[f"{target}_err"] = inverse_transform(self.transforms.get(target), z[:, t], sigma)
        data.update(self.domain_columns(features, None, usable, cols))
        return data


class ClassifierPredictor(Predictor):
    """A softmax model on fitted features: class probabilities, the most probable class, the period passed through."""

    task = "classification"

    def __init__(self, path: Path | None, info: dict[str, Any], spec: dict[str, Any],
                 arrays: dict[str, np.ndarray]):
        super().__init__(path, info, spec)
        self.classes: list[str] = list(info["classes"])
        self.period_column: str | None = info.get("period_column")
        self.featurizer = Featurizer.restore(info["features"], arrays)
        self.coef, self.intercept = arrays["coef"], arrays["intercept"]
        self.domain = Domain.restore(arrays)

    def predict_proba(self, data: Any) -> np.ndarray:
        """(n, K) class probabilities in the order of `.classes`."""
        return softmax(self.featurizer.transform(data if isinstance(data, Columns) else Columns(data))
                       @ self.coef + self.intercept)

    def _outputs(self, cols: Columns) -> dict[str, np.ndarray]:
        features = self.featurizer.transform(cols)
        proba = softmax(features @ self.coef + self.intercept)
        usable = self.featurizer.usable(cols)
        proba[~usable] = np.nan
        best = np.argmax(np.nan_to_num(proba, nan=-1.0), axis=1)
        data = {"class": np.array([self.classes[i] if ok else None for i, ok in zip(best, usable)], dtype=object)}
        data.update({f"p_{c}": proba[:, k] for k, c in enumerate(self.classes)})
        if self.period_column and cols.has(self.period_column):
            data["period"] = cols.scalar(self.period_column)
        data.update(self.domain_columns(features, None, usable, cols))
        return data


Loader = Callable[[Path, dict[str, Any], dict[str, Any]], Predictor]


def _load_linear(cls):
    def load(path: Path, info: dict[str, Any], spec: dict[str, Any]) -> Predictor:
        """Read `weights.npz` and build the predictor."""
        return cls(path, info, spec, load_npz(path / WEIGHTS))
    return load


# kind -> loader: the NumPy baselines and the Keras models (those trained now and the earlier kinds).
KINDS: dict[str, Loader] = {
    "ridge-pca": _load_linear(RegressionPredictor),
    "ridge": _load_linear(RegressionPredictor),
    "softmax": _load_linear(ClassifierPredictor),
    **{kind: load_keras for kind in (*KERAS_KINDS.values(), *EARLIER_KERAS_KINDS)},
}


def load_model(path: str | Path) -> Predictor:
    """Load a model directory written by `steps.train`; ValueError/FileNotFoundError name what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a model directory")
    info = read_json(path / MODEL_JSON, "the model description")
    spec = read_json(path / SPEC_JSON, "the model's input spec")
    version = info.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: model format version {version!r}; this code reads version {FORMAT_VERSION}")
    kind = info.get("kind")
    if kind not in KINDS:
        raise ValueError(f"{path}: model kind {kind!r} is not supported by this version "
                         f"(supported: {', '.join(sorted(KINDS))})")
    return KINDS[kind](path, info, spec)
