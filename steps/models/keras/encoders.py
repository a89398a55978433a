"""Input encoders of the Keras models: a batch of objects -> the float32 arrays the network reads. NumPy only.

Training, evaluation, the API and batch prediction all encode through these classes, so every path feeds the
network the same numbers. An encoder is fitted once, on the training split; its whole state (columns, transforms,
normalisation statistics) is a small JSON object kept in `model.json` and restored by `Encoder.restore`.

- `VectorInput`: a fixed-length list field (a spectrum's flux, a folded light-curve view) -> (n, length, channels).
  An `optional` vector may be absent (every entry then counts as bad). Values are standardised with one training
  mean and standard deviation (the shape of a line or a dip is kept, which a per-pixel standardisation would
  destroy); bad entries (non-finite, masked, zero inverse variance) become 0 after standardisation, and with
  `mask_channel` a second channel flags them (1 = bad).
- `ScalarInput`: numeric columns -> (n, p) standardised values plus (n, q) missing indicators. Columns named as
  scale-like (periods, powers, errors: `log_columns`) are taken in log10 when every training value is positive;
  other heavy-tailed columns are compressed with a centred asinh (as the baselines do); standardised values are
  clipped to +-8, and missing values become 0 after standardisation (the training mean) with their indicator
  set to 1. Colours are never logged: they cross zero.
A `VectorInput` with `local_continuum` (a number of entries) divides its values by a running upper quantile of
their good entries (`local_continuum_of`), before clipping: a spectrum normalised by its continuum once more, to the
local pseudo-continuum a line sits in.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from steps.models.inputs import Columns

CLIP = 8.0
LOCAL_QUANTILE = 90.0  # percent: the running quantile of good entries that `local_continuum_of` takes
LOCAL_CHUNK_ENTRIES = 1 << 24  # window entries sorted at once (128 MiB of floats): rows * length * width


def _running_mean(values: np.ndarray, width: int) -> np.ndarray:
    """Mean of the finite entries of (n, length) `values` within width // 2 entries on either side (NaN if none)."""
    half = width // 2
    good = np.isfinite(values)
    sums = np.pad(np.cumsum(np.where(good, values, 0.0), axis=1), ((0, 0), (1, 0)))
    counts = np.pad(np.cumsum(good, axis=1), ((0, 0), (1, 0)))
    index = np.arange(values.shape[1])
    low, high = np.maximum(index - half, 0), np.minimum(index + half + 1, values.shape[1])
    n = counts[:, high] - counts[:, low]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sums[:, high] - sums[:, low]) / n, np.nan)


def local_continuum_of(values: np.ndarray, bad: np.ndarray, width: int) -> np.ndarray:
    """(n, length) pseudo-continuum of (n, length) `values`: the LOCAL_QUANTILE of the good entries within
    width // 2 entries on either side (np.percentile's linear interpolation), smoothed by a running mean over as
    many; NaN where no good entry is near."""
    half = width // 2
    out = np.empty(values.shape)
    chunk = max(1, LOCAL_CHUNK_ENTRIES // (values.shape[1] * (2 * half + 1)))  # 321 rows of 1024 entries, 51 wide
    for start in range(0, len(values), chunk):
        part = np.where(bad[start:start + chunk], np.nan, values[start:start + chunk])
        padded = np.pad(part, ((0, 0), (half, half)), constant_values=np.nan)
        windows = np.sort(np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1, axis=1), axis=2)
        count = np.isfinite(windows).sum(axis=2)
        position = LOCAL_QUANTILE / 100.0 * np.maximum(count - 1, 0)
        below = np.floor(position).astype(np.int64)
        above = np.minimum(below + 1, np.maximum(count - 1, 0))
        low = np.take_along_axis(windows, below[..., None], axis=2)[..., 0]
        high = np.take_along_axis(windows, above[..., None], axis=2)[..., 0]
        out[start:start + chunk] = np.where(count > 0, low + (position - below) * (high - low), np.nan)
    return _running_mean(out, width)


class VectorInput:
    """A fixed-length vector field, standardised, bad entries zeroed and (optionally) flagged in a mask channel."""

    kind = "vector"

    def __init__(self, column: str, length: int, key: str | None = None, mask_column: str | None = None,
                 ivar_column: str | None = None, mask_channel: bool = False, clip: tuple[float, float] | None = None,
                 mean: float = 0.0, std: float = 1.0, optional: bool = False, local_continuum: int = 0):
        self.column, self.length, self.key, self.optional = column, int(length), key or column, bool(optional)
        self.local_continuum = int(local_continuum)  # entries of the running window; 0: values as they are
        self.mask_column, self.ivar_column, self.mask_channel = mask_column, ivar_column, bool(mask_channel)
        self.clip = tuple(clip) if clip is not None else None
        self.mean, self.std = float(mean), float(std)

    @property
    def fields(self) -> dict[str, list[str]]:
        """Input fields read: `required` and `optional`."""
        companions = [c for c in (self.mask_column, self.ivar_column) if c]
        if self.optional:
            return {"required": [], "optional": [self.column, *companions]}
        return {"required": [self.column], "optional": companions}

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Network input name -> per-object shape."""
        return {self.key: (self.length, 2 if self.mask_channel else 1)}

    def _values(self, cols: Columns) -> tuple[np.ndarray, np.ndarray]:
        values = cols.vectors(self.column, self.length, required=not self.optional)
        bad = ~np.isfinite(values)
        if self.mask_column and cols.has(self.mask_column):
            bad |= np.nan_to_num(cols.vectors(self.mask_column, self.length, required=False), nan=0.0) != 0
        if self.ivar_column and cols.has(self.ivar_column):
            ivar = cols.vectors(self.ivar_column, self.length, required=False)
            bad |= np.isfinite(ivar) & (ivar <= 0)
        if self.local_continuum:
            continuum = local_continuum_of(values, bad, self.local_continuum)
            bad |= ~(continuum > 0)
            values = values / np.where(bad, 1.0, continuum)
        if self.clip is not None:
            values = np.clip(values, *self.clip)
        return values, bad

    def fit(self, cols: Columns) -> "VectorInput":
        """The training mean and standard deviation over every good entry."""
        values, bad = self._values(cols)
        good = values[~bad]
        if good.size:
            self.mean = float(good.mean())
            self.std = float(good.std()) or 1.0
        return self

    def transform(self, cols: Columns) -> dict[str, np.ndarray]:
        """{key: (n, length, channels) float32}."""
        values, bad = self._values(cols)
        z = np.where(bad, 0.0, (np.where(bad, self.mean, values) - self.mean) / self.std)
        channels = [z, bad.astype(np.float64)] if self.mask_channel else [z]
        return {self.key: np.stack(channels, axis=-1).astype(np.float32)}

    def usable(self, cols: Columns) -> np.ndarray:
        """Every object with the vector is usable (its absence is an error, raised by `transform`)."""
        return np.ones(cols.n, bool)

    def config(self) -> dict[str, Any]:
        """The fitted input's JSON-able state."""
        local = {"local_continuum": self.local_continuum} if self.local_continuum else {}
        return {"kind": self.kind, "column": self.column, "length": self.length, "key": self.key,
                "mask_column": self.mask_column, "ivar_column": self.ivar_column, "mask_channel": self.mask_channel,
                "clip": list(self.clip) if self.clip is not None else None, "mean": self.mean, "std": self.std,
                "optional": self.optional, **local}


class ScalarInput:
    """Numeric columns: compressed, standardised, clipped; missing values zeroed and flagged."""

    kind = "scalars"

    def __init__(self, columns: list[str], key: str, require_any: bool = False, all_indicators: bool = False,
                 log_columns: list[str] | None = None, transforms: dict[str, dict[str, Any]] | None = None,
                 mean: list[float] | None = None, std: list[float] | None = None,
                 indicators: list[str] | None = None):
        self.columns, self.key = list(columns), key
        self.log_columns = [c for c in (log_columns or []) if c in self.columns]
        self.require_any = bool(require_any)  # an object with none of the columns has nothing to predict from
        self.all_indicators = bool(all_indicators)  # flag every column, not only those missing in training
        self.transforms = dict(transforms or {})
        self.mean = np.asarray(mean if mean is not None else np.zeros(len(self.columns)), np.float64)
        self.std = np.asarray(std if std is not None else np.ones(len(self.columns)), np.float64)
        self.indicators = list(indicators if indicators is not None else (self.columns if all_indicators else []))

    @property
    def missing_key(self) -> str:
        """Network input name of the missing indicators."""
        return f"{self.key}_missing"

    @property
    def fields(self) -> dict[str, list[str]]:
        """Input fields read: all optional (missing values are imputed)."""
        return {"required": [], "optional": list(self.columns)}

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Network input name -> per-object shape (no indicator input when no column is flagged)."""
        shapes = {self.key: (len(self.columns),)} if self.columns else {}
        if self.indicators:
            shapes[self.missing_key] = (len(self.indicators),)
        return shapes

    def _raw(self, cols: Columns) -> np.ndarray:
        if not self.columns:
            return np.zeros((cols.n, 0))
        return np.column_stack([cols.scalar(c) for c in self.columns])

    def _compress(self, raw: np.ndarray) -> np.ndarray:
        out = raw.copy()
        with np.errstate(divide="ignore", invalid="ignore"):
            for j, column in enumerate(self.columns):
                t = self.transforms.get(column, {"kind": "identity"})
                if t["kind"] == "log10":
                    out[:, j] = np.where(raw[:, j] > 0, np.log10(np.where(raw[:, j] > 0, raw[:, j], 1.0)), np.nan)
                elif t["kind"] == "asinh":
                    out[:, j] = t["center"] + t["scale"] * np.arcsinh((raw[:, j] - t["center"]) / t["scale"])
        return out

    def _choose_transform(self, column: str, x: np.ndarray) -> dict[str, Any]:
        """log10 for scale-like columns that are positive, asinh for other heavy tails, else identity."""
        if x.size < 3:
            return {"kind": "identity"}
        if column in self.log_columns and x.min() > 0:
            return {"kind": "log10"}
        q01, q25, q50, q75, q99 = np.quantile(x, [0.01, 0.25, 0.5, 0.75, 0.99])
        spread = (q75 - q25) / 1.349 or float(np.std(x)) or 1.0
        upper, lower = q99 - q50, q50 - q01
        heavy = min(upper, lower) > 0 and max(upper, lower) > 5 * min(upper, lower)
        heavy |= min(upper, lower) == 0 and max(upper, lower) > 10 * spread
        return {"kind": "asinh", "center": float(q50), "scale": float(spread)} if heavy else {"kind": "identity"}

    def fit(self, cols: Columns) -> "ScalarInput":
        """Choose each column's transform, then its standardisation, on the training batch."""
        raw = self._raw(cols)
        self.transforms = {}
        for j, column in enumerate(self.columns):
            x = raw[:, j][np.isfinite(raw[:, j])]
            t = self._choose_transform(column, x)
            if t["kind"] != "identity":
                self.transforms[column] = t
        values = self._compress(raw)
        finite = np.isfinite(values)
        mean, std = [], []
        for j in range(len(self.columns)):
            x = values[finite[:, j], j]
            mean.append(float(x.mean()) if x.size else 0.0)
            std.append(float(x.std()) if x.size > 1 and x.std() > 1e-12 else 1.0)
        self.mean, self.std = np.array(mean), np.array(std)
        if not self.all_indicators:
            self.indicators = [c for j, c in enumerate(self.columns) if (~finite[:, j]).any()]
        return self

    def transform(self, cols: Columns) -> dict[str, np.ndarray]:
        """{key: (n, p) float32 standardised values, key_missing: (n, q) float32 indicators (when any)}."""
        values = self._compress(self._raw(cols))
        missing = ~np.isfinite(values)
        z = np.clip((np.where(missing, self.mean, values) - self.mean) / self.std, -CLIP, CLIP)
        out = {self.key: z.astype(np.float32)} if self.columns else {}
        if self.indicators:
            index = [self.columns.index(c) for c in self.indicators]
            out[self.missing_key] = missing[:, index].astype(np.float32)
        return out

    def usable(self, cols: Columns) -> np.ndarray:
        """Objects with something to predict from: any finite value among the columns, when that is required."""
        if not self.require_any or not self.columns:
            return np.ones(cols.n, bool)
        return np.isfinite(self._raw(cols)).any(axis=1)

    def config(self) -> dict[str, Any]:
        """The fitted input's JSON-able state."""
        return {"kind": self.kind, "columns": self.columns, "key": self.key, "require_any": self.require_any,
                "all_indicators": self.all_indicators, "log_columns": self.log_columns,
                "transforms": self.transforms, "mean": self.mean.tolist(), "std": self.std.tolist(),
                "indicators": self.indicators}


class Encoder:
    """The inputs of one network; offers the `usable`/`describe_unusable` interface that `Predictor` checks."""

    def __init__(self, inputs: list[VectorInput | ScalarInput]):
        self.inputs = inputs

    @property
    def fields(self) -> dict[str, list[str]]:
        """Input fields: `required` in every object, `optional` imputed when absent."""
        required = list(dict.fromkeys(f for block in self.inputs for f in block.fields["required"]))
        optional = [f for block in self.inputs for f in block.fields["optional"] if f not in required]
        return {"required": required, "optional": list(dict.fromkeys(optional))}

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Network input name -> per-object shape."""
        return {key: shape for block in self.inputs for key, shape in block.shapes.items()}

    def fit(self, cols: Columns) -> "Encoder":
        """Fit every input on the training batch."""
        for block in self.inputs:
            block.fit(cols)
        return self

    def transform(self, cols: Columns) -> dict[str, np.ndarray]:
        """The network's input arrays for a batch."""
        out: dict[str, np.ndarray] = {}
        for block in self.inputs:
            out.update(block.transform(cols))
        return out

    def flat(self, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """((n, p) values, (n, p) bad flags) of `transform`'s arrays, one entry per vector entry (its value channel,
        bad where the mask channel says so) and per scalar column; the missing indicators are left out (a missing
        value is already the training mean). What `steps.models.domain.Domain` measures distances on."""
        values, bad = [], []
        for block in self.inputs:
            if isinstance(block, VectorInput):
                vector = arrays[block.key]
                values.append(vector[:, :, 0])
                bad.append(vector[:, :, 1] > 0.5 if block.mask_channel else np.zeros(vector.shape[:2], bool))
            elif block.columns:
                values.append(arrays[block.key])
                bad.append(np.zeros(arrays[block.key].shape, bool))
        return np.hstack(values), np.hstack(bad)

    def usable(self, cols: Columns) -> np.ndarray:
        """(n,) bool: objects the model can predict (the others get NaN predictions)."""
        ok = np.ones(cols.n, bool)
        for block in self.inputs:
            ok &= block.usable(cols)
        return ok

    def describe_unusable(self) -> str:
        """What an unusable object lacks, for error messages."""
        names = [c for b in self.inputs if isinstance(b, ScalarInput) and b.require_any for c in b.columns]
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        return f"none of the input fields has a value (give at least one of {shown})"

    def config(self) -> list[dict[str, Any]]:
        """Every input's JSON-able state (kept in `model.json` under `encoder`)."""
        return [block.config() for block in self.inputs]

    @classmethod
    def restore(cls, config: list[dict[str, Any]]) -> "Encoder":
        """Rebuild a fitted encoder from `config()`."""
        inputs: list[VectorInput | ScalarInput] = []
        for spec in config:
            spec = dict(spec)
            kind = spec.pop("kind")
            if kind == VectorInput.kind:
                inputs.append(VectorInput(**spec))
            elif kind == ScalarInput.kind:
                inputs.append(ScalarInput(**spec))
            else:
                raise ValueError(f"unknown encoder input kind {kind!r}")
        return cls(inputs)
