"""The three Keras networks and the heteroscedastic loss (imports Keras: only the Keras trainer loads this module).

Every network takes a dict of named float32 inputs (the `Encoder` of its model says which, with their shapes),
reads inputs that are already normalised, and is built only from stock Keras layers, so `keras.models.load_model`
reads the saved `.keras` file without custom code (with `compile=False`).

- `spectral_hybrid`: the spectral model. (length, 2) flux + bad-pixel mask and (blocks, 2) continuum shape + its
  mask, flattened and joined -> frozen principal components -> a frozen kernel ridge regression on them, fitted in
  closed form (NumPy), and a frozen kernel ridge refinement of each label's estimate from that estimate and a few
  leading components, one such part per group of labels (`kernel_estimate.fit_spectral_estimate`), + a small
  network correcting it: the components (with Gaussian input noise) and the kernel estimate -> dense 64 -> per
  target a mean correction (initialised at zero, so training starts from the kernel estimate) and a log-variance
  (2T outputs). The projection reads the mask channel so that a
  bad entry counts as the training mean of that entry. On a few hundred real spectra this beats a CNN trained from
  scratch, which has far more weights than there are stars to fit them.
- `spectral_cnn`: (length, 2) -> four Conv1D/max-pool blocks (16-32-32-32 filters, pooling 4-4-2-2) -> flatten ->
  dense 64 -> 2T; kept for the training-cost benchmark (`bench/`), for training sets of many thousands.
- `views_cnn`: global view (3 Conv1D/pool blocks) and local view (2 blocks), flattened, joined with the scalar
  period-search features and their missing indicators -> dense 64 -> K logits (softmax applied outside, after
  temperature scaling).
- `sed_ensemble`: standardised photometric features and their missing indicators -> a deep ensemble of
  `SED_MEMBERS` MLPs (dense 128 -> dense 128 -> 2T, SiLU), trained side by side with `ensemble_nll` from their own
  random starts. On a few hundred stars one MLP's Teff error varied by a factor 1.5 with its seed (80-122 K on the
  30 test stars of `make run`'s split, 5 seeds), and the mean of the five trained apart was as good as the best of
  them (81 K); their spread widens the uncertainty where they disagree, as with bands missing. Measured over splits:
  `bench/bench_sed_quality.py`.

Regression heads are trained with `heteroscedastic_nll` (each member of an ensemble alike: `ensemble_nll`): the
Gaussian negative log-likelihood with a predicted log-variance, each row's term weighted by its predicted variance
to the power `BETA` (stop-gradient), the "beta-NLL" of Seitzer et al. 2022, which keeps the mean from being
neglected where the variance is large. Targets missing for a row (NaN) are left out of its loss.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from steps.models.keras.calibration import LOG_VAR_RANGE

BETA = 0.5


VARIANCE_LAYERS = ("variance_dense", "log_var")  # the spectral model's uncertainty branch (trained last)
SED_MEMBERS = 5  # MLPs in the SED ensemble


def _nll(y_true, y_pred, beta: float):
    n_targets = ops.shape(y_true)[-1]
    mean, log_var = y_pred[:, :n_targets], ops.clip(y_pred[:, n_targets:], *LOG_VAR_RANGE)
    known = ops.cast(ops.logical_not(ops.isnan(y_true)), y_pred.dtype)
    truth = ops.where(ops.isnan(y_true), ops.zeros_like(y_true), y_true)
    nll = 0.5 * (log_var + ops.square(truth - mean) * ops.exp(-log_var))
    weight = ops.stop_gradient(ops.exp(beta * log_var)) if beta else 1.0
    return ops.sum(known * weight * nll, axis=-1) / ops.maximum(ops.sum(known, axis=-1), 1.0)


@keras.saving.register_keras_serializable(package="stellar")
def heteroscedastic_nll(y_true, y_pred):
    """Per-row beta-NLL of a Gaussian: `y_pred` = [mean (T), log-variance (T)]; NaN truths are ignored."""
    return _nll(y_true, y_pred, BETA)


@keras.saving.register_keras_serializable(package="stellar")
def gaussian_nll(y_true, y_pred):
    """Per-row Gaussian NLL (beta 0): for training a variance branch while the means are frozen."""
    return _nll(y_true, y_pred, 0.0)


@keras.saving.register_keras_serializable(package="stellar")
def ensemble_nll(y_true, y_pred):
    """Mean over an ensemble's members of their per-row beta-NLL: `y_pred` = K members' [mean (T), log-variance (T)]
    side by side; each member's loss depends on its own weights alone, so each trains as it would on its own."""
    n_targets = ops.shape(y_true)[-1]
    members = ops.shape(y_pred)[-1] // (2 * n_targets)
    return ops.mean(ops.stack([_nll(y_true, y_pred[:, 2 * n_targets * k:2 * n_targets * (k + 1)], BETA)
                               for k in range(members)], axis=-1), axis=-1)


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


def spectral_hybrid(shapes: dict[str, tuple[int, ...]], n_targets: int, parts, hidden: int = 64,
                    noise: float = 0.05, l2: float = 1e-3, dropout: float = 0.1,
                    gate: tuple | None = None) -> tuple[keras.Model, keras.Model]:
    """(serving model, training model) sharing every layer.

    Every input of `shapes` ((length, 2) arrays: values and mask) is flattened and the results joined in order.
    Each of `parts` (`kernel_estimate.EstimatePart`-like: projection, kernel, refinements, outputs) is a closed-form
    estimate in frozen stock layers: `projection` is the (kernel, bias) of its principal-component layer on the
    joined inputs, `kernel` a kernel ridge fit on the components (`steps.models.linear.KernelRidgeFit`, see
    `_frozen_kernel`), each of `refinements` (`kernel_estimate.Refinement`: target, components, fit) adds a kernel
    ridge correction to one of its labels from a frozen selection of its estimates and components, and `outputs`
    ((its labels, n_targets) matrix) places the labels it gives; the parts' estimates add up to `refined_estimate`.
    A `gate` (`kernel_estimate.TeffGate.network`: projection, kernel, refinements, low, high, edge) is one more
    estimate of the first label, which replaces the parts' first label by the gate's weight at it (`_gated`).
    The first part's components feed the correction network. The serving model feeds it its own estimate; the
    training model takes it as a second input, `estimate`, so that the correction can be trained on out-of-sample
    estimates of the training rows (in-sample ones are too good and would teach it nothing).
    """
    inputs = _inputs(shapes)
    given = keras.Input(shape=(n_targets,), name="estimate", dtype="float32")
    flats = [layers.Flatten(name=f"flat_{key}")(tensor) for key, tensor in inputs.items()]
    flat = layers.Concatenate(name="flat")(flats) if len(flats) > 1 else flats[0]
    frozen: list = []
    placed, components = [], None
    for index, (projection, kernel, refinements, outputs) in enumerate(parts):
        part, part_components = _frozen_part(flat, projection, kernel, refinements, outputs,
                                             f"part{index}_" if index else "", frozen)
        placed.append(part)
        components = part_components if components is None else components
    estimate = (layers.Add(name="parts_estimate" if gate else "refined_estimate")(placed) if len(placed) > 1
                else layers.Identity(name="parts_estimate" if gate else "refined_estimate")(placed[0]))
    if gate is not None:
        projection, kernel, refinements, low, high, edge = gate
        narrower, _ = _frozen_part(flat, projection, kernel, refinements, np.eye(1, n_targets), "gate_", frozen)
        estimate = _gated(estimate, narrower, low, high, edge, n_targets, frozen)

    noisy = layers.GaussianNoise(noise, name="pca_noise")
    dense = layers.Dense(hidden, activation="gelu", kernel_regularizer=keras.regularizers.l2(l2), name="dense")
    drop = layers.Dropout(dropout, name="dropout")
    correction = layers.Dense(n_targets, kernel_initializer="zeros", name="mean_correction")
    variance_dense = layers.Dense(hidden, activation="gelu", kernel_regularizer=keras.regularizers.l2(l2),
                                  name=VARIANCE_LAYERS[0])
    log_var = layers.Dense(n_targets, name=VARIANCE_LAYERS[1])

    def head(guess):
        features = layers.Concatenate()([noisy(components), guess])
        mean = layers.Add()([guess, correction(drop(dense(features)))])
        return layers.Concatenate(name="mean_logvar")([mean, log_var(drop(variance_dense(features)))])

    serving = keras.Model(inputs, head(estimate), name="spectral_hybrid")
    training = keras.Model({**inputs, "estimate": given}, head(given), name="spectral_hybrid_training")
    for layer, weights in frozen:
        layer.set_weights([np.asarray(w, np.float32) for w in weights])
    return serving, training


def _frozen_part(flat, projection, kernel, refinements, outputs: np.ndarray, prefix: str, frozen: list):
    """(the part's estimates placed in the model's columns, its components): one closed-form estimate in frozen
    layers (see `spectral_hybrid`), their weights appended to `frozen`."""
    pca_layer = layers.Dense(projection[0].shape[1], trainable=False, name=f"{prefix}pca")
    frozen.append((pca_layer, projection))
    components = pca_layer(flat)
    labels = outputs.shape[0]
    estimate = _frozen_kernel(components, kernel, np.eye(labels), f"{prefix}kernel", frozen)
    if refinements:
        joined = layers.Concatenate(name=f"{prefix}estimate_components")([estimate, components])
        corrections = []
        for refinement in refinements:
            name = f"{prefix}refine{refinement.target}"
            select = layers.Dense(1 + refinement.components, use_bias=False, trainable=False, name=f"{name}_inputs")
            frozen.append((select, [refinement.selection(labels, projection[0].shape[1])]))
            corrections.append(_frozen_kernel(select(joined), refinement.fit, np.eye(labels)[[refinement.target]],
                                              name, frozen))
        estimate = layers.Add(name=f"{prefix}refined")([estimate, *corrections])
    place = layers.Dense(outputs.shape[1], use_bias=False, trainable=False, name=f"{prefix}placed")
    frozen.append((place, [outputs]))
    return place(estimate), components


def _gated(estimate, narrower, low: float, high: float, edge: float, n_targets: int, frozen: list):
    """`refined_estimate`: the parts' `estimate` (n, T) with its first column moved towards `narrower` (n, T, zero
    but in the first column) by the gate's weight at it, sigmoid((t - low) / edge) - sigmoid((t - high) / edge), as
    `kernel_estimate.TeffGate.applied` computes it."""
    first = np.zeros((n_targets, n_targets))
    first[0, 0] = 1.0
    edges = layers.Dense(2, activation="sigmoid", trainable=False, name="gate_edges")
    weight = layers.Dense(n_targets, use_bias=False, trainable=False, name="gate_weight")
    own_first = layers.Dense(n_targets, use_bias=False, trainable=False, name="gate_first")
    kernel = np.zeros((n_targets, 2))
    kernel[0] = 1.0 / edge
    box = np.zeros((2, n_targets))
    box[:, 0] = (1.0, -1.0)
    frozen += [(edges, [kernel, np.array([-low, -high]) / edge]), (weight, [box]), (own_first, [first])]
    difference = layers.Subtract(name="gate_difference")([narrower, own_first(estimate)])
    moved = layers.Multiply(name="gate_moved")([weight(edges(estimate)), difference])
    return layers.Add(name="refined_estimate")([estimate, moved])


def _frozen_kernel(x, fit, outputs: np.ndarray, name: str, frozen: list):
    """The prediction of a kernel ridge fit (`steps.models.linear.KernelRidgeFit`: centres, dual, intercept, scale,
    width, gamma) on tensor `x`, placed in the output columns by `outputs` ((fit targets, outputs) matrix), from
    stock layers: exp(-g|a - c|^2) = exp(2g a.c - g|c|^2 - g|a|^2) is a Dense layer on x plus a Dense layer on its
    squares, added, through an exponential. The layers and their weights are appended to `frozen`."""
    g = fit.gamma / fit.width
    centres, dual = np.asarray(fit.centres), np.asarray(fit.dual)
    cross = layers.Dense(len(centres), trainable=False, name=f"{name}_cross")
    norm = layers.Dense(len(centres), use_bias=False, trainable=False, name=f"{name}_norm")
    linear = layers.Dense(outputs.shape[1], trainable=False, name=f"{name}_linear")
    gaussian = layers.Dense(outputs.shape[1], use_bias=False, trainable=False, name=f"{name}_gaussian")
    frozen += [(cross, [2 * g * centres.T, -g * (centres ** 2).sum(axis=1)]),
               (norm, [np.full((centres.shape[1], len(centres)), -g)]),
               (linear, [centres.T @ dual @ outputs / fit.scale, np.asarray(fit.intercept) @ outputs]),
               (gaussian, [dual @ outputs])]
    squares = layers.Multiply(name=f"{name}_squares")([x, x])
    similarity = layers.Activation("exponential", name=f"{name}_similarity")(
        layers.Add(name=f"{name}_exponent")([cross(x), norm(squares)]))
    return layers.Add(name=f"{name}_estimate")([linear(x), gaussian(similarity)])


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


def sed_ensemble(shapes: dict[str, tuple[int, ...]], n_targets: int, members: int = SED_MEMBERS) -> keras.Model:
    """Photometric features and missing indicators -> `members` MLPs side by side, each [mean, log-variance] of
    every standardised target (members * 2T outputs, combined by `calibration.member_moments`)."""
    inputs = _inputs(shapes)
    parts = [inputs[key] for key in ("photometry", "photometry_missing") if key in inputs]
    x = layers.Concatenate(name="join")(parts) if len(parts) > 1 else parts[0]
    heads = []
    for k in range(members):
        h = layers.Dense(128, activation="silu", name=f"member{k}_dense0")(x)
        h = layers.Dense(128, activation="silu", name=f"member{k}_dense1")(h)
        heads.append(layers.Dense(2 * n_targets, name=f"member{k}_mean_logvar")(h))
    out = layers.Concatenate(name="members")(heads) if members > 1 else heads[0]
    return keras.Model(inputs, out, name="sed_ensemble")
