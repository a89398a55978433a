"""Model directories on disk: `model.json` (what the model is), `weights.npz` (its arrays), `spec.json` (its
input spec), `train_metrics.json` (how it did on the training and validation splits); a Keras model adds
`model.keras` (the Keras model, for `keras.models.load_model`) and `saved_model/` (its exported serving graph,
what the predictor runs). `Trained` is what a trainer hands to the train stage to write.

`weights.npz` is an ordinary NumPy archive (`numpy.load` reads it) written with fixed zip timestamps and sorted
member names, so the same arrays always give the same bytes: a re-run with the same inputs publishes an
identical artifact, and the registry stores it once.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from steps.core.artifacts import json_default

FORMAT_VERSION = 1
MODEL_JSON = "model.json"
WEIGHTS = "weights.npz"
SPEC_JSON = "spec.json"
TRAIN_METRICS = "train_metrics.json"
TRAINING_IDS = "training_ids.json"  # the objects it learnt from (training and validation rows): `object_keys`
KEY_LABELS = ("teff", "logg", "feh", "class")  # with the id, what tells an object apart (`object_keys`)
KERAS_MODEL = "model.keras"
SAVED_MODEL = "saved_model"
_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass
class Trained:
    """A fitted model: `info` (model.json), `arrays` (weights.npz, not written when empty), `metrics`
    (train_metrics.json), and `save`, which writes the trainer's own files (a `.keras` file, a SavedModel
    directory) into the pending model directory it is given."""

    info: dict[str, Any]
    arrays: dict[str, np.ndarray]
    metrics: dict[str, Any]
    save: Callable[[Path], None] | None = field(default=None, repr=False)


def model_dir_in(folder: Path) -> Path:
    """The model directory a user names by `folder`: the folder itself, or its `model/` where `stellar train-*` laid
    the model out (`<output-dir>/<model>/model`, its evaluation beside it)."""
    folder = Path(folder)
    if not (folder / MODEL_JSON).is_file() and (folder / "model" / MODEL_JSON).is_file():
        return folder / "model"
    return folder


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write `arrays` as an uncompressed `.npz` whose bytes depend only on the arrays (names sorted, fixed times)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue())


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Read every array of a `.npz` (no pickles)."""
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def object_keys(table) -> list[str]:
    """One key per row of a split table: its id and its labels. Ids alone do not tell objects apart: a synthetic
    source's draw with another seed gives other stars the same ids; a library's star keeps its id and labels."""
    columns = [name for name in ("id", *KEY_LABELS) if name in table.column_names]
    values = zip(*(table.column(name).to_pylist() for name in columns)) if columns else ()
    return ["|".join(f"{value:.6g}" if isinstance(value, float) else str(value) for value in row) for row in values]


def dumps(obj: Any) -> str:
    """JSON with sorted keys and a trailing newline: equal objects give equal bytes."""
    return json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n"


def read_json(path: Path, what: str) -> Any:
    """Read a JSON file, naming it (and what it should be) when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing ({what})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({what}): {error}") from None
