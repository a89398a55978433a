"""The NumPy runtime of dense-type Keras networks: the same outputs as Keras, and only where it can run."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from steps.models.keras.runtime import NumpyNetwork, Unsupported, fastest_runtime  # noqa: E402


def _randomised(model):
    rng = np.random.default_rng(3)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            layer.set_weights([rng.normal(0.5, 0.3, w.shape).astype(np.float32) ** 2 if "normalization" in
                               type(layer).__name__.lower() else rng.normal(0, 0.3, w.shape).astype(np.float32)
                               for w in weights])
    return model


def _dense_model():
    a = keras.Input((5,), name="a")
    b = keras.Input((3,), name="b")
    x = keras.layers.Concatenate()([a, b])
    x = keras.layers.Dense(16, activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.Dense(8, activation="tanh")(x)
    x = keras.layers.LayerNormalization()(x)
    x = keras.layers.Activation("sigmoid")(x)
    return _randomised(keras.Model([a, b], keras.layers.Dense(4)(x)))


def test_numpy_network_matches_keras_inference():
    model = _dense_model()
    rng = np.random.default_rng(0)
    arrays = {"a": rng.normal(size=(7, 5)).astype(np.float32), "b": rng.normal(size=(7, 3)).astype(np.float32)}
    expected = np.asarray(model(arrays, training=False))
    np.testing.assert_allclose(NumpyNetwork(model)(arrays), expected, rtol=1e-4, atol=1e-5)


def test_convolutional_networks_stay_on_the_saved_model():
    x = inputs = keras.Input((32, 1), name="spectrum")
    x = keras.layers.Flatten()(keras.layers.Conv1D(4, 3)(x))
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    with pytest.raises(Unsupported, match="Conv1D"):
        NumpyNetwork(model)
    name, _ = fastest_runtime(lambda arrays: model(arrays), model, {"spectrum": (32, 1)})
    assert name == "saved_model"


def test_a_runtime_that_disagrees_is_never_chosen():
    model = _dense_model()
    wrong = lambda arrays: np.asarray(model(arrays)) + 1.0  # noqa: E731 - a graph computing something else
    name, graph = fastest_runtime(wrong, model, {"a": (5,), "b": (3,)})
    assert name == "saved_model" and graph is wrong
