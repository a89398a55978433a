"""Training cost of the Keras models: seconds per epoch and samples per second, at realistic sizes.

    .venv/bin/python bench/bench_training.py [--threads 2] [--epochs 3] [--scale 1.0]
    KERAS_BACKEND=jax python bench/bench_training.py      # the same networks on another Keras backend (a GPU)

Each row trains a freshly built network with `model.fit` on random inputs of the shapes the pipeline feeds it
(the networks of `steps.models.keras.networks`, their losses, Adam), timing every epoch after the first (which
also traces the graph):

- spectral kernel network (the production spectral model): 1,024-pixel spectra and 64 continuum blocks, each with
  its mask (2% bad); its closed-form part (`steps.models.keras.kernel_estimate`: continuum weight trials, label
  cleaning, principal components, kernel ridge with its leave-one-out search; NumPy) is timed apart as `closed
  form s`, then the correction network trains, batch 32, on the 2,048 rows less those it left out;
- spectral CNN: 4,000-pixel spectra with their mask (2 channels) -> 3 targets x (mean, log-variance), batch 64
  (for libraries of many thousands of spectra);
- light-curve CNN: 201-bin global and 61-bin local views + 10 scalars -> 5 class logits, batch 64;
- SED ensemble: 8 bands (magnitudes, errors, 10 colours, abs G, parallax and its error: 29 values + 29 missing
  indicators) -> 5 MLPs, each 3 x (mean, log-variance), batch 256;
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

    from steps.models.keras.networks import ensemble_nll, heteroscedastic_nll, sed_ensemble, spectral_cnn, views_cnn

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
        "SED ensemble (5 MLPs, 29+29 inputs)": (sed_ensemble, {"photometry": (29,), "photometry_missing": (29,)}, 3,
                                                ensemble_nll, 256, 131072, "reg"),
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


def _spectral_kernel(n: int, rng: np.random.Generator):
    """(training model, its inputs, targets, seconds of the closed-form part) of the production spectral network
    on random spectra of the pipeline's shapes and grid: the trainer's own closed-form stage (`fit_spectral_estimate`,
    [Fe/H] from its window), as it fits a library of M dwarfs to B stars (MILES, seed-42 split: 14% of the
    training stars hotter than 8000 K, whose [Fe/H] it sets aside, and 83% in 3500-8000 K, on which the Teff gate's
    estimate is fitted), with the local pseudo-continuum input that only [Fe/H]'s estimate sees, and NumPy's BLAS on
    the threads `steps.train.training_blas` gives, as `steps.train` fits it."""
    from steps.models.keras.kernel_estimate import LOCAL_INPUT, fit_spectral_estimate, metallicity_window
    from steps.models.keras.networks import spectral_hybrid
    from steps.preprocess.spectra import grid_spec
    from steps.train import training_blas

    shapes = {"spectrum": (1024, 2), "continuum": (64, 2), LOCAL_INPUT: (1024, 2)}
    window = metallicity_window(grid_spec(shapes["spectrum"][0]), shapes)
    x = {key: np.concatenate([rng.normal(size=(n, shape[0], 1)), rng.random((n, shape[0], 1)) < 0.02],
                             axis=-1).astype(np.float32) for key, shape in shapes.items()}
    y = rng.normal(size=(n, 3)).astype(np.float32)
    teff = y[:, 0]
    y[teff > np.quantile(teff, 0.86), 2] = np.nan
    low, high = np.quantile(teff, [0.03, 0.86])
    gate = ((teff >= low) & (teff <= high), float(np.quantile(teff, 0.05)), float(np.quantile(teff, 0.8)), 0.05)
    started = time.perf_counter()
    with training_blas():
        estimate = fit_spectral_estimate(x, y, (2,), window, gate, window_inputs=(LOCAL_INPUT,))
    seconds = time.perf_counter() - started
    _, training = spectral_hybrid(shapes, 3, estimate.network_parts(), gate=estimate.gate.network())
    rows = estimate.rows
    inputs = {**{key: value[rows] for key, value in x.items()}, "estimate": estimate.out_of_sample.astype(np.float32)}
    return training, inputs, y[rows], seconds


def run(threads: int, epochs: int, scale: float) -> list[dict]:
    import keras

    from steps.models.keras.networks import heteroscedastic_nll

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    rng = np.random.default_rng(0)
    rows = []
    cases = {"spectral kernel network (1024 px x 2 + 64 blocks)": (None, None, 3, heteroscedastic_nll, 32, 2048, "reg"),
             **_networks()}
    for name, (build, shapes, outputs, loss, batch, n, task) in cases.items():
        n = max(batch, int(n * scale))
        keras.utils.set_random_seed(0)
        closed_form = None
        if build is None:
            model, x, y, closed_form = _spectral_kernel(n, rng)
        else:
            model = build(shapes, outputs)
            x = {key: rng.normal(size=(n, *shape)).astype(np.float32) for key, shape in shapes.items()}
            if task == "cls":
                y = rng.integers(0, outputs, n)
            else:
                y = rng.normal(size=(n, outputs)).astype(np.float32)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
        timer = _Timer()
        model.fit(x, y, epochs=epochs, batch_size=batch, verbose=0, callbacks=[timer.callback])
        wall, cpu = float(np.median(timer.wall[1:])), float(np.median(timer.cpu[1:]))
        rows.append({"model": name, "parameters": model.count_params(), "batch": batch, "rows": len(y),
                     "s/epoch": wall, "samples/s": len(y) / wall, "CPU s/epoch": cpu, "closed form s": closed_form})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="TensorFlow intra-op threads")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per model (the first is not timed)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the rows per epoch")
    args = parser.parse_args()
    import keras

    rows = run(args.threads, max(2, args.epochs), args.scale)
    backend = keras.backend.backend()
    devices = _devices(backend)
    print(f"training cost, Keras {keras.__version__} on {backend} ({devices}), {args.threads} CPU threads where "
          f"the backend takes a setting, steady epochs (median of {max(2, args.epochs) - 1})")
    print(f"{'model':46s} {'params':>9s} {'batch':>6s} {'rows':>7s} {'s/epoch':>8s} {'samples/s':>10s} "
          f"{'CPU s/epoch':>11s} {'closed form s':>13s}")
    for r in rows:
        closed = f"{r['closed form s']:13.2f}" if r["closed form s"] is not None else f"{'-':>13s}"
        print(f"{r['model']:46s} {r['parameters']:9,d} {r['batch']:6d} {r['rows']:7d} {r['s/epoch']:8.3f} "
              f"{r['samples/s']:10,.0f} {r['CPU s/epoch']:11.2f} {closed}")


def _devices(backend: str) -> str:
    """What the backend computes on, in words."""
    if backend == "jax":
        import jax

        return ", ".join(sorted({f"{d.platform}:{getattr(d, 'device_kind', '')}" for d in jax.devices()}))
    if backend == "tensorflow":
        import tensorflow as tf

        return ", ".join(d.device_type for d in tf.config.list_logical_devices()) or "CPU"
    return "?"


if __name__ == "__main__":
    main()
