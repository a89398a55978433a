"""How a loaded Keras model's forward pass runs at prediction time, chosen by measurement when it is loaded.

Two runtimes compute the same function of the encoder's arrays:
- the exported SavedModel's traced `serve` function: TensorFlow's graph executor, right for convolutional networks,
  but each call pays ~0.5-1 ms of dispatch, whatever the batch;
- `NumpyNetwork`: the network's layers evaluated in NumPy (float32), possible when every layer is dense-type
  (Dense, Concatenate, Activation, normalisation, inference-time no-ops). For a small MLP it costs tens of
  microseconds, which is what single-object API requests need.
`fastest_runtime` keeps the NumPy network only when it agrees with the SavedModel on a probe batch (within 1e-4,
relative and absolute) and is faster at both a single object and a full batch; otherwise the SavedModel runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

Graph = Callable[[dict[str, np.ndarray]], np.ndarray]
_NO_OPS = {"Dropout", "GaussianNoise", "GaussianDropout", "AlphaDropout", "SpatialDropout1D", "ActivityRegularization"}
_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "tanh": np.tanh,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "softplus": lambda x: np.logaddexp(0, x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    "swish": lambda x: x / (1 + np.exp(-x)),
    "silu": lambda x: x / (1 + np.exp(-x)),
}


class Unsupported(ValueError):
    """The network has a layer the NumPy runtime does not evaluate."""


class NumpyNetwork:
    """A Keras functional model of dense-type layers, evaluated in NumPy from its weights."""

    def __init__(self, model: Any):
        self.input_names = [tensor.name for tensor in model.inputs]
        self._input_ids = [id(tensor) for tensor in model.inputs]
        self._output_id = id(model.outputs[0]) if len(model.outputs) == 1 else None
        if self._output_id is None:
            raise Unsupported("more than one output")
        self._steps = [self._step(layer) for layer in model.layers if type(layer).__name__ != "InputLayer"]

    def _step(self, layer: Any) -> tuple[Callable, list[int], int]:
        node = layer._inbound_nodes[0]
        inputs = [id(tensor) for tensor in node.input_tensors]
        output = id(node.output_tensors[0])
        kind = type(layer).__name__
        config = layer.get_config()
        if kind == "Dense":
            kernel, *bias = [np.asarray(w, np.float32) for w in layer.get_weights()]
            activation = _activation(config.get("activation", "linear"))
            offset = bias[0] if bias else np.float32(0)
            return (lambda x, k=kernel, b=offset, f=activation: f(x[0] @ k + b)), inputs, output
        if kind == "Concatenate":
            axis = config.get("axis", -1)
            return (lambda x, a=axis: np.concatenate(x, axis=a)), inputs, output
        if kind == "Activation":
            return (lambda x, f=_activation(config["activation"]): f(x[0])), inputs, output
        if kind == "Flatten":
            return (lambda x: x[0].reshape(len(x[0]), -1)), inputs, output
        if kind == "BatchNormalization" and config.get("axis", -1) in (-1, [-1]):
            gamma, beta, mean, variance = _batch_norm_weights(layer, config)
            scale = gamma / np.sqrt(variance + config["epsilon"])
            return (lambda x, s=scale, m=mean, b=beta: (x[0] - m) * s + b), inputs, output
        if kind == "LayerNormalization" and config.get("axis") in (-1, [-1]):
            weights = [np.asarray(w, np.float32) for w in layer.get_weights()]
            gamma = weights[0] if config.get("scale", True) else np.float32(1)
            beta = weights[-1] if config.get("center", True) else np.float32(0)
            epsilon = config["epsilon"]

            def layer_norm(x, g=gamma, b=beta, e=epsilon):
                mean = x[0].mean(axis=-1, keepdims=True)
                return (x[0] - mean) / np.sqrt(x[0].var(axis=-1, keepdims=True) + e) * g + b
            return layer_norm, inputs, output
        if kind in _NO_OPS:
            return (lambda x: x[0]), inputs, output
        raise Unsupported(f"layer {layer.name!r} of type {kind}")

    def __call__(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        values = {key: np.asarray(arrays[name], np.float32) for key, name in zip(self._input_ids, self.input_names)}
        for apply, inputs, output in self._steps:
            values[output] = apply([values[i] for i in inputs])
        return values[self._output_id]


def _activation(name: Any) -> Callable[[np.ndarray], np.ndarray]:
    if not isinstance(name, str) or name not in _ACTIVATIONS:
        raise Unsupported(f"activation {name!r}")
    return _ACTIVATIONS[name]


def _batch_norm_weights(layer: Any, config: dict[str, Any]) -> tuple[np.ndarray, ...]:
    weights = [np.asarray(w, np.float32) for w in layer.get_weights()]
    size = weights[-1].shape
    gamma = weights.pop(0) if config.get("scale", True) else np.ones(size, np.float32)
    beta = weights.pop(0) if config.get("center", True) else np.zeros(size, np.float32)
    return gamma, beta, weights[0], weights[1]


def fastest_runtime(saved_model: Graph, keras_model: Any, shapes: dict[str, tuple[int, ...]],
                    batch: int = 64) -> tuple[str, Graph]:
    """(name, graph) of the faster runtime that agrees with the SavedModel on a probe batch."""
    try:
        numpy_network = NumpyNetwork(keras_model)
    except (Unsupported, AttributeError, IndexError, KeyError):
        return "saved_model", saved_model
    rng = np.random.default_rng(0)
    probe = {key: rng.standard_normal((batch, *shape)).astype(np.float32) for key, shape in shapes.items()}
    reference = np.asarray(saved_model(probe))
    try:
        candidate = np.asarray(numpy_network(probe))
    except (ValueError, KeyError, IndexError):  # e.g. a normalisation over another axis: not ours to evaluate
        return "saved_model", saved_model
    if reference.shape != candidate.shape or not np.allclose(candidate, reference, rtol=1e-4, atol=1e-4):
        return "saved_model", saved_model
    single = {key: value[:1] for key, value in probe.items()}
    faster = all(_seconds(numpy_network, arrays) < _seconds(saved_model, arrays) for arrays in (single, probe))
    return ("numpy", numpy_network) if faster else ("saved_model", saved_model)


def _seconds(graph: Graph, arrays: dict[str, np.ndarray], repeats: int = 20) -> float:
    """Best time of one call over `repeats` (after one untimed call)."""
    graph(arrays)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        graph(arrays)
        best = min(best, time.perf_counter() - started)
    return best
