"""The Keras (TensorFlow) models: a kernel-ridge-started network for spectra, a two-view CNN for light curves, a
deep ensemble of MLPs for SEDs.

Importing this package does not import TensorFlow: `train_keras` and `load_keras` import the modules that do
when they are called, so the CLI, the executor and the baselines stay light.

- `encoders`: NumPy input encoding and normalisation, fitted on the training split, kept in `model.json`;
- `networks`: the Keras architectures and the heteroscedastic loss;
- `kernel_estimate`: the spectral model's closed-form stage in NumPy (cleaning, components, kernel ridge);
- `training`: seeded, deterministic training with early stopping, uncertainty and temperature calibration;
- `predictor`: the predictors, which run the exported SavedModel's compiled `serve` function;
- `calibration`: NumPy sigma scaling, temperature scaling and reliability bins (also used by the report);
- `startup`: TensorFlow's first import, without the native start-up lines its log level cannot silence.

Model directories add `model.keras` and `saved_model/` to `model.json`, `spec.json`, `train_metrics.json` and
`weights.npz` (the domain check's arrays, `steps.models.domain`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

KIND = {"spectral": "keras-spectral-kernel", "lightcurve": "keras-softmax-views", "sed": "keras-sed-ensemble"}
# Kinds earlier versions trained, still loaded: a registry's older versions must stay servable for a rollback.
EARLIER_KINDS = ("keras-spectral-cnn", "keras-sed-mlp")


def train_keras(name: str, train: Any, val: Any, spec: dict[str, Any], seed: int = 0,
                epochs: int | None = None):
    """Train the Keras model `name` (see `steps.models.keras.training.train_keras`); imports TensorFlow."""
    from steps.models.keras import training

    return training.train_keras(name, train, val, spec, seed=seed, epochs=epochs)


def load_keras(path: Path, info: dict[str, Any], spec: dict[str, Any]):
    """Load a Keras model directory (see `steps.models.keras.predictor.load_keras`); imports TensorFlow."""
    from steps.models.keras import predictor

    return predictor.load_keras(path, info, spec)
