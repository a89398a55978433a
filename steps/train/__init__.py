"""Train stage: fit one model on a split directory and publish it as a model directory with a manifest.

`python -m steps.train {spectral,lightcurve,sed} --split DIR --out DIR`, or `train_from_split(...)` from Python.

Trainers: `baseline` (NumPy, `steps.models.baseline`) and `keras` (TensorFlow, `steps.models.keras`). Importing
this module does not import TensorFlow: the Keras trainer imports it when it runs. `auto` trains the Keras
model when TensorFlow is installed and the baseline otherwise, saying so.

NumPy's linear algebra (BLAS) runs on TRAINING_BLAS_THREADS threads while a model trains, however many cores the
machine has (a pod sees every core of its node): how a product is split between threads changes its last bits,
and the closed-form fits' choices (a width, a label outlier) can follow, so a split gave another model on a machine
with another number of cores (MILES split 6: Teff 85.1 K with two BLAS threads, 83.5 K with one). TensorFlow's
own threads did not change it. Where the process may use one core only, one thread: OpenBLAS's threads wait
spinning, and two on one core trained that split in 551 s instead of about 40 s. "One core" is the process's CPU
affinity or a cgroup CPU limit below two CPUs (a pod's `limits.cpu`, which the affinity does not show: the pod sees
every core of its node). SciPy's own OpenBLAS (loaded when training first imports SciPy) gets the same count.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from steps.core.artifacts import ArtifactWriter, read_manifest
from steps.core.logs import get_logger
from steps.core.names import MODALITY, MODEL_NAMES
from steps.models.baseline import DEFAULT_LABELS, train_baseline
from steps.models.io import (MODEL_JSON, SPEC_JSON, TRAIN_METRICS, TRAINING_IDS, WEIGHTS, Trained, dumps,
                             object_keys, save_npz)
from steps.models.label_range import RANGES_KEY, label_ranges
from steps.models.keras import train_keras
from steps.models.splits import read_split

log = get_logger("train")

TRAINER_CHOICES = ("auto", "baseline", "keras")
TRAINING_BLAS_THREADS = 2  # fixed, but for a process allowed one core (see the module docstring)
CGROUP_ROOT = Path("/sys/fs/cgroup")
REGRESSION_MODELS = ("spectral", "sed")
# trainer name -> function(name, train, val, spec, seed=, epochs=) -> Trained
TRAINERS: dict[str, Callable[..., Trained]] = {"baseline": train_baseline, "keras": train_keras}


class TrainerUnavailable(RuntimeError):
    """The requested trainer cannot run here (TensorFlow is not installed)."""


def tensorflow_available() -> bool:
    """Whether TensorFlow is installed (found without importing it)."""
    return importlib.util.find_spec("tensorflow") is not None


def resolve_trainer(requested: str) -> str:
    """The trainer that will run for a requested one (`auto`, `baseline`, `keras`)."""
    if requested not in TRAINER_CHOICES:
        raise ValueError(f"unknown trainer {requested!r}; choose one of {', '.join(TRAINER_CHOICES)}")
    if requested == "baseline":
        return "baseline"
    if tensorflow_available():
        return "keras"
    if requested == "keras":
        raise TrainerUnavailable("the TensorFlow (Keras) trainer needs TensorFlow, which is not installed; "
                                 "use --trainer baseline (or --force-dummy)")
    log.warning("TensorFlow is not installed: training the NumPy baseline instead of the TensorFlow model")
    return "baseline"


def blas_threads() -> int:
    """The BLAS threads training runs on: TRAINING_BLAS_THREADS, or 1 where this process may use one core (its
    affinity, or a cgroup CPU limit: `cgroup_cpu_limit`)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, max(1, int(limit)))
    return min(TRAINING_BLAS_THREADS, cores)


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """The CPUs this process's cgroup may use (a container's CPU limit, as a pod's `limits.cpu` sets it; cgroup v2's
    `cpu.max` or v1's CFS quota, as a container sees its own cgroup at `root`), None where none is set. The CPU
    affinity does not show it: a pod limited to one CPU on a 64-core node has 64 cores in its affinity."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:  # "max": no limit
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None  # v1's -1: no limit


def training_blas() -> threadpool_limits:
    """Limit NumPy's and SciPy's BLAS to `blas_threads()` threads until the returned context exits. SciPy's own
    OpenBLAS is loaded first: a limit covers only the libraries loaded when it is set, and training imports SciPy
    (`scipy.optimize`) only once it runs."""
    importlib.import_module("scipy.linalg")  # loads SciPy's BLAS
    return threadpool_limits(limits=blas_threads(), user_api="blas")


def train_from_split(name: str, split_dir: str | os.PathLike, out_dir: str | os.PathLike, trainer: str = "auto",
                     epochs: int | None = None, seed: int = 0) -> Path:
    """Train model `name` on `split_dir` and publish the model directory at `out_dir` (atomically); return it.

    The model directory holds `model.json` (with, for a regression model, the range of its training labels:
    `steps.models.label_range`), `spec.json` (the split's spec, copied), `train_metrics.json`,
    `training_ids.json` (the training and validation objects, by id and labels: the evaluation of a later week
    measures this model only on objects it did not learn from), `manifest.json` (stage `train.<name>`, the split
    as input, row counts), and the trainer's weights:
    `weights.npz` (a baseline's arrays; for Keras, the domain check's) and, for Keras, `model.keras` and
    `saved_model/`.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    split_dir = Path(split_dir)
    synthetic = read_manifest(split_dir).synthetic
    tables, spec, spec_path = read_split(split_dir, MODALITY[name])
    _require_labels(name, MODALITY[name], tables["train"])
    used = resolve_trainer(trainer)
    log.info("%s: training the %s model on %d rows (%d for validation)", name, used, tables["train"].num_rows,
             tables["val"].num_rows)
    with training_blas():  # the same model on any machine
        trained = TRAINERS[used](name, tables["train"], tables["val"], spec, seed=seed, epochs=epochs)
    if trained.info.get("task") == "regression":
        training = trained.info.setdefault("training", {})
        training[RANGES_KEY] = label_ranges(tables["train"], trained.info["targets"], training.get("teff_range"))
    parameters = {"model": name, "trainer": used, "trainer_requested": trainer, "epochs": epochs, "seed": seed}
    with ArtifactWriter(out_dir, stage=f"train.{name}", parameters=parameters, inputs={"split": split_dir},
                        synthetic=synthetic) as out:
        out.path(MODEL_JSON).write_text(dumps(trained.info))
        if trained.arrays:
            save_npz(out.path(WEIGHTS), trained.arrays)
        if trained.save is not None:
            trained.save(out.path(MODEL_JSON).parent)
        shutil.copyfile(spec_path, out.path(SPEC_JSON))
        out.path(TRAIN_METRICS).write_text(dumps(trained.metrics))
        out.path(TRAINING_IDS).write_text(dumps(sorted(key for part in ("train", "val")
                                                       for key in object_keys(tables[part]))))
        out.count("train_rows", tables["train"].num_rows)
        out.count("val_rows", tables["val"].num_rows)
    _log_summary(name, trained)
    return Path(out_dir)


def _require_labels(name: str, modality: str, train) -> None:
    """A regression model needs labelled training rows: say so when a source gave none (not, later, that a target
    has too few finite values)."""
    if name not in REGRESSION_MODELS:
        return
    counts = {label: int(np.isfinite(np.asarray(train.column(label).to_numpy(zero_copy_only=False), float)).sum())
              for label in DEFAULT_LABELS if label in train.column_names}
    if not any(count >= 2 for count in counts.values()):
        raise ValueError(f"{name}: none of the {train.num_rows} training rows of {modality} has a Teff, log g or "
                         f"[Fe/H] label: the source gives unlabelled {modality}; train on a labelled one (a library "
                         "folder with its labels.csv, a catalogue with teff, logg and feh columns)")
    short = {label: count for label, count in counts.items() if count < 2}
    if short:
        raise ValueError(f"{name}: of the {train.num_rows} training rows of {modality}, "
                         + ", ".join(f"{count} ha{'s' if count == 1 else 've'} a {label} label"
                                     for label, count in short.items())
                         + f" (at least 2 needed): the source gives no {' or '.join(short)} (a labels table without "
                         "that column?); every label the model learns needs values")


def _log_summary(name: str, trained: Trained) -> None:
    training = trained.metrics.get("training") or {}
    if training:
        log.info("%s: %d epochs (best %d, at most %d), %.3g s per epoch, %.0f samples/s", name,
                 training["epochs_run"], training["best_epoch"], training["epochs_max"],
                 training["seconds_per_epoch"], training["samples_per_second"] or 0)
    val = trained.metrics.get("val")
    if not val:
        return
    if "balanced_accuracy" in val:
        log.info("%s: validation balanced accuracy %.3f, accuracy %.3f", name, val["balanced_accuracy"],
                 val["accuracy"])
    else:
        for target, m in val.items():
            log.info("%s: validation %s robust sigma %s, rmse %s", name, target, _fmt(m.get("robust_sigma")),
                     _fmt(m.get("rmse")))


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4g}"
