"""The three Keras networks and the heteroscedastic loss (imports Keras: only the Keras trainer loads this module).

Every network takes a dict of named float32 inputs (the `Encoder` of its model says which, with their shapes),
reads inputs that are already normalised, and is built only from stock Keras layers, so `keras.models.load_model`
reads the saved `.keras` file without custom code (with `compile=False`).

- `spectral_cnn`: (length, 2) flux + bad-pixel mask -> four Conv1D/max-pool blocks (16-32-32-32 filters, pooling
  4-4-2-2, so 64x fewer positions) -> flatten (line positions matter: no global pooling) -> dense 64 ->
  per target a mean and a log-variance (2T outputs).
- `views_cnn`: global view (3 Conv1D/pool blocks) and local view (2 blocks), flattened, joined with the scalar
  period-search features and their missing indicators -> dense 64 -> K logits (softmax applied outside, after
  temperature scaling).
- `sed_mlp`: standardised photometric features and their missing indicators -> dense 128 -> dense 128 -> 2T.

Regression heads are trained with `heteroscedastic_nll`: the Gaussian negative log-likelihood with a predicted
log-variance, each row's term weighted by its predicted variance to the power `BETA` (stop-gradient), the
"beta-NLL" of Seitzer et al. 2022, which keeps the mean from being neglected where the variance is large. Targets
missing for a row (NaN) are left out of its loss.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from steps.models.keras.calibration import LOG_VAR_RANGE

BETA = 0.5


@keras.saving.register_keras_serializable(package="stellar")
def heteroscedastic_nll(y_true, y_pred):
    """Per-row beta-NLL of a Gaussian: `y_pred` = [mean (T), log-variance (T)]; NaN truths are ignored."""
    n_targets = ops.shape(y_true)[-1]
    mean, log_var = y_pred[:, :n_targets], ops.clip(y_pred[:, n_targets:], *LOG_VAR_RANGE)
    known = ops.cast(ops.logical_not(ops.isnan(y_true)), y_pred.dtype)
    truth = ops.where(ops.isnan(y_true), ops.zeros_like(y_true), y_true)
    nll = 0.5 * (log_var + ops.square(truth - mean) * ops.exp(-log_var))
    weight = ops.stop_gradient(ops.exp(BETA * log_var))
    return ops.sum(known * weight * nll, axis=-1) / ops.maximum(ops.sum(known, axis=-1), 1.0)


def _inputs(shapes: dict[str, tuple[int, ...]]) -> dict[str, keras.KerasTensor]:
    return {key: keras.Input(shape=shape, name=key, dtype="float32") for key, shape in shapes.items()}


def _conv_blocks(x, filters: list[int], kernels: list[int], pools: list[int], prefix: str):
    for i, (f, k, p) in enumerate(zip(filters, kernels, pools)):
        x = layers.Conv1D(f, k, padding="same", activation="relu", name=f"{prefix}_conv{i}")(x)
        if p > 1:
            x = layers.MaxPooling1D(p, padding="same", name=f"{prefix}_pool{i}")(x)
    return layers.Flatten(name=f"{prefix}_flat")(x)


def spectral_cnn(shapes: dict[str, tuple[int, ...]], n_targets: int, dropout: float = 0.1) -> keras.Model:
    """Spectrum (length, 2) -> [mean, log-variance] of each standardised target."""
    inputs = _inputs(shapes)
    x = _conv_blocks(inputs["spectrum"], [16, 32, 32, 32], [7, 5, 5, 3], [4, 4, 2, 2], "spectrum")
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(64, activation="relu", name="dense")(x)
    out = layers.Dense(2 * n_targets, name="mean_logvar")(x)
    return keras.Model(inputs, out, name="spectral_cnn")


def views_cnn(shapes: dict[str, tuple[int, ...]], n_classes: int, dropout: float = 0.3) -> keras.Model:
    """Global and local views (+ scalars and missing indicators) -> class logits."""
    inputs = _inputs(shapes)
    parts = [_conv_blocks(inputs["global_view"], [16, 16, 32], [5, 5, 5], [2, 2, 2], "global"),
             _conv_blocks(inputs["local_view"], [16, 16], [5, 5], [2, 2], "local")]
    parts += [inputs[key] for key in ("scalars", "scalars_missing") if key in inputs]
    x = layers.Concatenate(name="join")(parts)
    x = layers.Dense(64, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    out = layers.Dense(n_classes, name="logits")(x)
    return keras.Model(inputs, out, name="views_cnn")


def sed_mlp(shapes: dict[str, tuple[int, ...]], n_targets: int, dropout: float = 0.1) -> keras.Model:
    """Photometric features and missing indicators -> [mean, log-variance] of each standardised target."""
    inputs = _inputs(shapes)
    parts = [inputs[key] for key in ("photometry", "photometry_missing") if key in inputs]
    x = layers.Concatenate(name="join")(parts) if len(parts) > 1 else parts[0]
    x = layers.Dense(128, activation="relu", name="dense0")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(128, activation="relu", name="dense1")(x)
    out = layers.Dense(2 * n_targets, name="mean_logvar")(x)
    return keras.Model(inputs, out, name="sed_mlp")
