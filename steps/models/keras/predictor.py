"""Predictors of the Keras models: encode inputs (NumPy), run the compiled serving graph, decode in NumPy.

`load_keras` reads `saved_model/` (what `model.export` wrote) with `tf.saved_model.load` and calls its `serve`
function: a traced graph with a fixed input signature, so no retracing and none of the per-call overhead of
Keras `predict()`. TensorFlow is imported here, on the first load of a Keras model, never before.

Outputs match the baselines: per target `t`, `t` and `t_err` (1 sigma: the network's predicted sigma, or its
members' combined for an ensemble, times the validation calibration factor, propagated through the target
transform); for the classifier, `class`, `p_<class>` (softmax of logits / temperature) and `period` (the input's
detected period, for objects whose predicted class is periodic); then `domain_distance` and `in_domain`, from the
check in `weights.npz` (`steps.models.domain`) measured on the encoded inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from steps.models.inputs import Columns
from steps.models.domain import Domain, blank
from steps.models.io import KERAS_MODEL, SAVED_MODEL, WEIGHTS, load_npz
from steps.models.keras.calibration import member_moments, softmax
from steps.models.keras.encoders import Encoder
from steps.models.keras.startup import import_tensorflow
from steps.models.predictor import Predictor
from steps.models.transforms import inverse_transform

Graph = Callable[[dict[str, np.ndarray]], Any]
CHUNK = 2048  # rows per graph call: bounds memory for large batches


class KerasPredictor(Predictor):
    """A Keras model behind its input encoder: `graph` maps the encoder's arrays to the network's outputs."""

    def __init__(self, path: Path | None, info: dict[str, Any], spec: dict[str, Any], graph: Graph,
                 keep: Any = None, domain: Domain | None = None):
        super().__init__(path, info, spec)
        self.featurizer = Encoder.restore(info["encoder"])  # the name `Predictor.predict_records` checks
        self._graph = self._saved_model = graph
        self.runtime = "saved_model"
        self._keep = keep  # the loaded SavedModel: its variables live as long as this predictor
        self.domain = domain

    def use_fastest_runtime(self) -> str:
        """Run the network on the faster of its SavedModel and its NumPy evaluation (`runtime`); return which."""
        import keras

        from steps.models.keras.runtime import fastest_runtime

        keras_file = Path(self.path) / self.info.get("files", {}).get("keras", KERAS_MODEL)
        network = keras.models.load_model(keras_file, compile=False)
        self.runtime, self._graph = fastest_runtime(self._saved_model, network, self.featurizer.shapes)
        return self.runtime

    def outputs(self, cols: Columns, arrays: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """The network's raw outputs (n, k) for a batch (`arrays`: its encoding, when already made), in chunks."""
        arrays = self.featurizer.transform(cols) if arrays is None else arrays
        parts = []
        for start in range(0, cols.n, CHUNK):
            chunk = {key: value[start:start + CHUNK] for key, value in arrays.items()}
            parts.append(np.asarray(self._graph(chunk), np.float64))
        width = int(self.info["n_outputs"])
        return np.vstack(parts) if parts else np.zeros((0, width))

    def encoded_domain_columns(self, arrays: dict[str, np.ndarray], usable: np.ndarray,
                               cols: Columns) -> dict[str, np.ndarray]:
        """`domain_distance` and `in_domain` of a batch from its encoding (and its inputs `cols`)."""
        if self.domain is None:
            return blank(len(usable))
        return self.domain_columns(*self.featurizer.flat(arrays), usable, cols)


class KerasRegressionPredictor(KerasPredictor):
    """Mean and calibrated 1-sigma per target, from a heteroscedastic regression network."""

    task = "regression"

    def __init__(self, path: Path | None, info: dict[str, Any], spec: dict[str, Any], graph: Graph,
                 keep: Any = None, domain: Domain | None = None):
        super().__init__(path, info, spec, graph, keep, domain)
        self.targets: list[str] = list(info["targets"])
        self.transforms: dict[str, str] = dict(info.get("target_transforms", {}))
        scaling = info["target_scaling"]
        self.y_mean, self.y_std = np.asarray(scaling["mean"]), np.asarray(scaling["std"])
        self.sigma_scale = np.asarray([info["calibration"]["sigma_scale"].get(t, 1.0) for t in self.targets])

    def fitted_space(self, cols: Columns,
                     arrays: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(mean, calibrated sigma), each (n, T), in the fitted space (log10 Teff, log g, [Fe/H])."""
        mean, log_var = member_moments(self.outputs(cols, arrays), len(self.targets))
        mean = mean * self.y_std + self.y_mean
        sigma = np.exp(0.5 * log_var) * self.y_std * self.sigma_scale
        unusable = ~self.featurizer.usable(cols)
        mean[unusable], sigma[unusable] = np.nan, np.nan
        return mean, sigma

    def _outputs(self, cols: Columns) -> dict[str, np.ndarray]:
        arrays = self.featurizer.transform(cols)
        mean, sigma = self.fitted_space(cols, arrays)
        data: dict[str, np.ndarray] = {}
        for t, target in enumerate(self.targets):
            data[target], data[f"{target}_err"] = inverse_transform(self.transforms.get(target), mean[:, t],
                                                                    sigma[:, t])
        data.update(self.encoded_domain_columns(arrays, self.featurizer.usable(cols), cols))
        return data


class KerasClassifierPredictor(KerasPredictor):
    """Temperature-scaled class probabilities; the detected period passed through for periodic classes."""

    task = "classification"

    def __init__(self, path: Path | None, info: dict[str, Any], spec: dict[str, Any], graph: Graph,
                 keep: Any = None, domain: Domain | None = None):
        super().__init__(path, info, spec, graph, keep, domain)
        self.classes: list[str] = list(info["classes"])
        self.period_column: str | None = info.get("period_column")
        self.aperiodic: set[str] = set(info.get("aperiodic_classes", []))
        self.temperature = float(info["calibration"]["temperature"])

    def predict_proba(self, data: Any, temperature: float | None = None,
                      arrays: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """(n, K) class probabilities in the order of `.classes` (NaN rows for unusable objects)."""
        cols = data if isinstance(data, Columns) else Columns(data)
        proba = softmax(self.outputs(cols, arrays), self.temperature if temperature is None else temperature)
        proba[~self.featurizer.usable(cols)] = np.nan
        return proba

    def _outputs(self, cols: Columns) -> dict[str, np.ndarray]:
        arrays = self.featurizer.transform(cols)
        proba = self.predict_proba(cols, arrays=arrays)
        usable = np.isfinite(proba).all(axis=1)
        best = np.argmax(np.nan_to_num(proba, nan=-1.0), axis=1)
        labels = np.array([self.classes[i] if ok else None for i, ok in zip(best, usable)], dtype=object)
        data: dict[str, np.ndarray] = {"class": labels}
        data.update({f"p_{c}": proba[:, k] for k, c in enumerate(self.classes)})
        if self.period_column and cols.has(self.period_column):
            periodic = np.array([label is not None and label not in self.aperiodic for label in labels], bool)
            data["period"] = np.where(periodic, cols.scalar(self.period_column), np.nan)
        data.update(self.encoded_domain_columns(arrays, self.featurizer.usable(cols), cols))
        return data


PREDICTORS = {"regression": KerasRegressionPredictor, "classification": KerasClassifierPredictor}


def load_keras(path: Path, info: dict[str, Any], spec: dict[str, Any]) -> Predictor:
    """Load a Keras model directory through its exported SavedModel (imports TensorFlow)."""
    folder = Path(path) / info.get("files", {}).get("saved_model", SAVED_MODEL)
    if not (folder / "saved_model.pb").is_file():
        raise FileNotFoundError(f"{folder}: missing (the exported serving graph of the Keras model)")
    tf = import_tensorflow()
    loaded = tf.saved_model.load(str(folder))
    serve = loaded.serve

    def graph(arrays: dict[str, np.ndarray]) -> np.ndarray:
        return serve({key: tf.convert_to_tensor(value) for key, value in arrays.items()}).numpy()

    weights = Path(path) / WEIGHTS
    domain = Domain.restore(load_npz(weights)) if weights.is_file() else None
    return PREDICTORS[info["task"]](path, info, spec, graph, keep=loaded, domain=domain)
