"""Training cost of the three Keras models on CPU: seconds per epoch and samples per second, at realistic sizes.

    .venv/bin/python bench/bench_training.py [--threads 2] [--epochs 3] [--scale 1.0]

Each row trains a freshly built network with `model.fit` on random inputs of the shapes the pipeline feeds it
(the networks of `steps.models.keras.networks`, their losses, Adam), timing every epoch after the first (which
also traces the graph):

- spectral CNN: 4,000-pixel spectra with their mask (2 channels) -> 3 targets x (mean, log-variance), batch 64;
- light-curve CNN: 201-bin global and 61-bin local views + 10 scalars -> 5 class logits, batch 64;
- SED MLP: 8 bands (magnitudes, errors, 10 colours, abs G, parallax and its error: 29 values + 29 missing
  indicators) -> 3 x (mean, log-variance), batch 256;
- the two references of the issue, plain `fit` with MSE: a 4-layer Conv1D (16-32-32-32 filters, kernel 5,
  max-pool 2) on 4,000-pixel spectra at batch 64, and a 17->128->128->6 MLP at batch 256.

`samples/s` is rows per wall-clock second of a steady epoch (the median); `CPU s/epoch` is this process's CPU
time per steady epoch (all threads), which on a shared machine says more than the wall clock about the work.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def _networks():
    import keras

    from steps.models.keras.networks import heteroscedastic_nll, sed_mlp, spectral_cnn, views_cnn

    def plain_conv(shapes, outputs):
        x = inputs = keras.Input(shapes["spectrum"], name="spectrum")
        for filters in (16, 32, 32, 32):
            x = keras.layers.Conv1D(filters, 5, padding="same", activation="relu")(x)
            x = keras.layers.MaxPooling1D(2)(x)
        x = keras.layers.Dense(outputs)(keras.layers.Flatten()(x))
        return keras.Model({"spectrum": inputs}, x)

    def plain_mlp(shapes, outputs):
        inputs = keras.Input(shapes["x"], name="x")
        x = keras.layers.Dense(128, activation="relu")(inputs)
        x = keras.layers.Dense(128, activation="relu")(x)
        return keras.Model({"x": inputs}, keras.layers.Dense(outputs)(x))

    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    # name: (builder, input shapes, outputs, loss, batch, rows at --scale 1, task)
    return {
        "spectral CNN (4000 px)": (spectral_cnn, {"spectrum": (4000, 2)}, 3, heteroscedastic_nll, 64, 2048, "reg"),
        "light-curve CNN (201+61)": (views_cnn, {"global_view": (201, 1), "local_view": (61, 1), "scalars": (10,)},
                                     5, ce, 64, 8192, "cls"),
        "SED MLP (29+29 inputs)": (sed_mlp, {"photometry": (29,), "photometry_missing": (29,)}, 3,
                                   heteroscedastic_nll, 256, 131072, "reg"),
        "reference: 4-layer Conv1D": (plain_conv, {"spectrum": (4000, 1)}, 6, "mse", 64, 2048, "plain"),
        "reference: 17-128-128-6 MLP": (plain_mlp, {"x": (17,)}, 6, "mse", 256, 131072, "plain"),
    }


class _Timer:
    def __init__(self):
        import keras

        class Callback(keras.callbacks.Callback):
            def on_epoch_begin(cb, epoch, logs=None):
                cb.start = (time.perf_counter(), time.process_time())

            def on_epoch_end(cb, epoch, logs=None):
                wall, cpu = cb.start
                self.wall.append(time.perf_counter() - wall)
                self.cpu.append(time.process_time() - cpu)

        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.callback = Callback()


def run(threads: int, epochs: int, scale: float) -> list[dict]:
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    rng = np.random.default_rng(0)
    rows = []
    for name, (build, shapes, outputs, loss, batch, n, task) in _networks().items():
        n = max(batch, int(n * scale))
        keras.utils.set_random_seed(0)
        model = build(shapes, outputs)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
        x = {key: rng.normal(size=(n, *shape)).astype(np.float32) for key, shape in shapes.items()}
        if task == "cls":
            y = rng.integers(0, outputs, n)
        else:
            y = rng.normal(size=(n, outputs)).astype(np.float32)
        timer = _Timer()
        model.fit(x, y, epochs=epochs, batch_size=batch, verbose=0, callbacks=[timer.callback])
        wall, cpu = float(np.median(timer.wall[1:])), float(np.median(timer.cpu[1:]))
        rows.append({"model": name, "parameters": model.count_params(), "batch": batch, "rows": n,
                     "s/epoch": wall, "samples/s": n / wall, "CPU s/epoch": cpu})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="TensorFlow intra-op threads")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per model (the first is not timed)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the rows per epoch")
    args = parser.parse_args()
    rows = run(args.threads, max(2, args.epochs), args.scale)
    print(f"CPU training cost, {args.threads} threads, steady epochs (median of {max(2, args.epochs) - 1})")
    print(f"{'model':30s} {'params':>9s} {'batch':>6s} {'rows':>7s} {'s/epoch':>8s} {'samples/s':>10s} "
          f"{'CPU s/epoch':>11s}")
    for r in rows:
        print(f"{r['model']:30s} {r['parameters']:9,d} {r['batch']:6d} {r['rows']:7d} {r['s/epoch']:8.2f} "
              f"{r['samples/s']:10,.0f} {r['CPU s/epoch']:11.2f}")


if __name__ == "__main__":
    main()
