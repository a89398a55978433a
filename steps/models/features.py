"""Feature extraction for the baselines: fitted on the training split, stored in the model, re-applied at prediction.

A `Featurizer` is a list of blocks, each turning some input fields into numeric features, followed by a
standardisation of every feature (training mean and standard deviation):

- `VectorPCA`: a fixed-length vector (a spectrum's flux, a folded light-curve view). Bad entries (non-finite,
  masked, zero inverse variance) are replaced by the training mean at that position; the vector is projected on
  the leading principal components of the training set (NumPy SVD, signs fixed so results are reproducible).
- `Scalars`: numeric columns (magnitudes, colours, periods...). Heavy-tailed columns are compressed with a
  centred asinh; missing values are replaced by the training median and flagged by a missing indicator (for
  columns that had missing values in training); optionally the squares of the standardised values are added.

Each block is described by a JSON-able config (kept in `model.json`) and named arrays (kept in `weights.npz`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from steps.models.inputs import Columns

_CLIP = 8.0


def masked_vectors(cols: Columns, column: str, length: int, mask_column: str | None = None,
                   ivar_column: str | None = None, required: bool = True
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(n, length) values of a vector field, its bad entries, and its inverse variance (None without one), as every
    model reads them: an entry is bad where it is not finite, where the mask is non-zero, or where the inverse
    variance is 0 or negative; an unknown (NaN) inverse variance or mask says nothing."""
    values = cols.vectors(column, length, required=required)
    bad = ~np.isfinite(values)
    if mask_column and cols.has(mask_column):
        bad |= np.nan_to_num(cols.vectors(mask_column, length, required=False), nan=0.0) != 0
    ivar = None
    if ivar_column and cols.has(ivar_column):
        ivar = cols.vectors(ivar_column, length, required=False)
        bad |= np.isfinite(ivar) & (ivar <= 0)
    return values, bad, ivar


class VectorPCA:
    """A fixed-length vector field reduced to its leading principal components."""

    kind = "vector-pca"

    def __init__(self, column: str, length: int, n_components: int, mask_column: str | None = None,
                 ivar_column: str | None = None, arrays: dict[str, np.ndarray] | None = None,
                 optional: bool = False):
        self.column, self.length, self.n_components = column, int(length), int(n_components)
        self.mask_column, self.ivar_column = mask_column, ivar_column
        self.arrays = arrays or {}
        self.optional = bool(optional)  # an absent vector counts as the training mean (scores 0)

    @property
    def name(self) -> str:
        """The block's name: the prefix of its arrays in `weights.npz`."""
        return self.column

    @property
    def fields(self) -> dict[str, list[str]]:
        """Input fields the block reads: `required` and `optional`."""
        optional = [c for c in (self.mask_column, self.ivar_column) if c]
        if self.optional:
            return {"required": [], "optional": [self.column, *optional]}
        return {"required": [self.column], "optional": optional}

    def _matrix(self, cols: Columns) -> tuple[np.ndarray, np.ndarray]:
        values, bad, _ = masked_vectors(cols, self.column, self.length, self.mask_column, self.ivar_column,
                                        required=not self.optional)
        return values, bad

    def fit(self, cols: Columns) -> "VectorPCA":
        """Fit the mean vector and principal components on the training batch."""
        values, bad = self._matrix(cols)
        good = (~bad).sum(axis=0)
        mean = np.where(good > 0, np.where(bad, 0.0, values).sum(axis=0) / np.maximum(good, 1), 0.0)
        filled = np.where(bad, mean, values) - mean
        k = max(1, min(self.n_components, filled.shape[0] - 1, self.length))
        _, singular, vt = np.linalg.svd(filled, full_matrices=False)
        components = vt[:k]
        signs = np.sign(components[np.arange(k), np.argmax(np.abs(components), axis=1)])
        components = components * np.where(signs == 0, 1.0, signs)[:, None]
        self.n_components = k
        self.arrays = {"mean": mean, "components": components,
                       "explained": (singular[:k] ** 2) / max(float((singular ** 2).sum()), 1e-300)}
        return self

    def transform(self, cols: Columns) -> np.ndarray:
        """(n, k) principal-component scores of a batch."""
        values, bad = self._matrix(cols)
        mean = self.arrays["mean"]
        return (np.where(bad, mean, values) - mean) @ self.arrays["components"].T

    def feature_names(self) -> list[str]:
        """Names of the block's output features."""
        return [f"{self.column}_pc{i}" for i in range(self.n_components)]

    def config(self) -> dict[str, Any]:
        """The block's JSON-able description (kept in `model.json`)."""
        return {"kind": self.kind, "column": self.column, "length": self.length,
                "n_components": self.n_components, "mask_column": self.mask_column,
                "ivar_column": self.ivar_column, "optional": self.optional}


class Scalars:
    """Numeric columns: robust compression of heavy tails, median imputation with missing indicators, squares."""

    kind = "scalars"

    def __init__(self, columns: list[str], quadratic: bool = False, name: str = "scalars",
                 compressed: list[str] | None = None, indicators: list[str] | None = None,
                 arrays: dict[str, np.ndarray] | None = None, require_any: bool = False):
        self.columns, self.quadratic, self._name = list(columns), bool(quadratic), name
        self.require_any = bool(require_any)  # an object with none of the columns has nothing to predict from
        self.compressed = list(compressed or [])
        self.indicators = list(indicators or [])
        self.arrays = arrays or {}

    @property
    def name(self) -> str:
        """The block's name: the prefix of its arrays in `weights.npz`."""
        return self._name

    @property
    def fields(self) -> dict[str, list[str]]:
        """Input fields the block reads: all optional (missing values are imputed)."""
        return {"required": [], "optional": list(self.columns)}

    def _raw(self, cols: Columns) -> np.ndarray:
        if not self.columns:
            return np.zeros((cols.n, 0))
        return np.column_stack([cols.scalar(c) for c in self.columns])

    def fit(self, cols: Columns) -> "Scalars":
        """Fit tail compression, medians, indicators and standardisation on the training batch."""
        raw = self._raw(cols)
        center, scale, compressed = [], [], []
        for j, column in enumerate(self.columns):
            x = raw[:, j][np.isfinite(raw[:, j])]
            if x.size == 0:
                center.append(0.0), scale.append(1.0)
                continue
            q01, q25, q50, q75, q99 = np.quantile(x, [0.01, 0.25, 0.5, 0.75, 0.99])
            upper, lower = q99 - q50, q50 - q01
            spread = (q75 - q25) / 1.349
            if spread <= 0:
                spread = float(np.std(x)) or 1.0
            heavy = min(upper, lower) > 0 and max(upper, lower) > 5 * min(upper, lower)
            heavy |= min(upper, lower) == 0 and max(upper, lower) > 10 * spread
            center.append(float(q50)), scale.append(float(spread))
            if heavy:
                compressed.append(column)
        self.compressed = compressed
        self.arrays = {"center": np.array(center), "scale": np.array(scale)}
        transformed = self._compress(raw)
        missing = ~np.isfinite(transformed)
        self.indicators = [c for j, c in enumerate(self.columns) if missing[:, j].any()]
        medians = [float(np.median(transformed[~missing[:, j], j])) if (~missing[:, j]).any() else 0.0
                   for j in range(len(self.columns))]
        self.arrays["median"] = np.array(medians)
        filled = np.where(missing, self.arrays["median"], transformed)
        mean, std = filled.mean(axis=0), filled.std(axis=0)
        self.arrays["mean"], self.arrays["std"] = mean, np.where(std > 0, std, 1.0)
        return self

    def _compress(self, raw: np.ndarray) -> np.ndarray:
        out = raw.copy()
        for j, column in enumerate(self.columns):
            if column in self.compressed:
                c, s = self.arrays["center"][j], self.arrays["scale"][j]
                out[:, j] = c + s * np.arcsinh((raw[:, j] - c) / s)
        return out

    def transform(self, cols: Columns) -> np.ndarray:
        """(n, p) features: standardised values, their squares (optional), missing indicators."""
        transformed = self._compress(self._raw(cols))
        missing = ~np.isfinite(transformed)
        filled = np.where(missing, self.arrays["median"], transformed)
        z = np.clip((filled - self.arrays["mean"]) / self.arrays["std"], -_CLIP, _CLIP)
        parts = [z]
        if self.quadratic:
            parts.append(z ** 2)
        if self.indicators:
            index = [self.columns.index(c) for c in self.indicators]
            parts.append(missing[:, index].astype(np.float64))
        return np.hstack(parts)

    def usable(self, cols: Columns) -> np.ndarray:
        """Objects with something to predict from: any finite value among the columns, when that is required."""
        if not self.require_any or not self.columns:
            return np.ones(cols.n, bool)
        return np.isfinite(self._raw(cols)).any(axis=1)

    def unknown_features(self, cols: Columns) -> np.ndarray:
        """(n, p) bool: the features an object's missing columns leave unknown (its value, square, indicator)."""
        missing = ~np.isfinite(self._raw(cols))
        sources = list(range(len(self.columns))) * (2 if self.quadratic else 1)
        sources += [self.columns.index(c) for c in self.indicators]
        return missing[:, sources]

    def feature_names(self) -> list[str]:
        """Names of the block's output features."""
        names = list(self.columns)
        if self.quadratic:
            names += [f"{c}^2" for c in self.columns]
        return names + [f"{c}_missing" for c in self.indicators]

    def config(self) -> dict[str, Any]:
        """The block's JSON-able description (kept in `model.json`)."""
        return {"kind": self.kind, "name": self._name, "columns": self.columns, "quadratic": self.quadratic,
                "compressed": self.compressed, "indicators": self.indicators, "require_any": self.require_any}


class Featurizer:
    """Blocks of features followed by a standardisation of each feature; fitted once, on the training split."""

    def __init__(self, blocks: list[VectorPCA | Scalars], quadratic_leading: int = 0,
                 arrays: dict[str, np.ndarray] | None = None):
        self.blocks = blocks
        self.quadratic_leading = int(quadratic_leading)
        self.arrays = arrays or {}

    @property
    def fields(self) -> dict[str, list[str]]:
        """Input fields: `required` must be present in every object, `optional` are imputed when absent."""
        required = [f for block in self.blocks for f in block.fields["required"]]
        optional = [f for block in self.blocks for f in block.fields["optional"] if f not in required]
        return {"required": required, "optional": list(dict.fromkeys(optional))}

    def _raw(self, cols: Columns) -> np.ndarray:
        parts = [block.transform(cols) for block in self.blocks]
        leading = [p[:, :self.quadratic_leading] ** 2 for p, b in zip(parts, self.blocks)
                   if isinstance(b, VectorPCA) and self.quadratic_leading]
        return np.hstack(parts + leading) if parts else np.zeros((cols.n, 0))

    def fit(self, cols: Columns) -> "Featurizer":
        """Fit every block, then the standardisation of every feature, on the training batch."""
        for block in self.blocks:
            block.fit(cols)
        raw = self._raw(cols)
        std = raw.std(axis=0)
        self.arrays = {"mean": raw.mean(axis=0), "std": np.where(std > 1e-12, std, 1.0)}
        return self

    def usable(self, cols: Columns) -> np.ndarray:
        """(n,) bool: objects the model can predict (the others get NaN predictions)."""
        ok = np.ones(cols.n, bool)
        for block in self.blocks:
            if isinstance(block, Scalars):
                ok &= block.usable(cols)
        return ok

    def unknown_features(self, cols: Columns) -> np.ndarray:
        """(n, p) bool: the features an object's missing scalar inputs leave unknown (imputed by `transform`)."""
        parts = [block.unknown_features(cols) if isinstance(block, Scalars)
                 else np.zeros((cols.n, len(block.feature_names())), bool) for block in self.blocks]
        leading = sum(len(block.feature_names()[:self.quadratic_leading]) for block in self.blocks
                      if isinstance(block, VectorPCA))
        return np.hstack(parts + [np.zeros((cols.n, leading), bool)])

    def describe_unusable(self) -> str:
        """What an unusable object lacks, for error messages."""
        needs = [b.columns for b in self.blocks if isinstance(b, Scalars) and b.require_any]
        names = [c for columns in needs for c in columns]
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        return f"none of the input fields has a value (give at least one of {shown})"

    def transform(self, cols: Columns) -> np.ndarray:
        """The standardised feature matrix (n, p) for a batch."""
        return (self._raw(cols) - self.arrays["mean"]) / self.arrays["std"]

    def feature_names(self) -> list[str]:
        """Names of every output feature, in column order."""
        names = [n for block in self.blocks for n in block.feature_names()]
        for block in self.blocks:
            if isinstance(block, VectorPCA) and self.quadratic_leading:
                names += [f"{n}^2" for n in block.feature_names()[:self.quadratic_leading]]
        return names

    def config(self) -> dict[str, Any]:
        """The featurizer's JSON-able description (kept in `model.json`)."""
        return {"blocks": [block.config() for block in self.blocks], "quadratic_leading": self.quadratic_leading}

    def state(self, prefix: str = "features") -> dict[str, np.ndarray]:
        """Every fitted array, under `<prefix>.<block>.<array>` names."""
        out = {f"{prefix}.{name}": value for name, value in self.arrays.items()}
        for block in self.blocks:
            out.update({f"{prefix}.{block.name}.{name}": value for name, value in block.arrays.items()})
        return out

    @classmethod
    def restore(cls, config: dict[str, Any], arrays: dict[str, np.ndarray],
                prefix: str = "features") -> "Featurizer":
        """Rebuild a fitted featurizer from its config and arrays."""
        blocks: list[VectorPCA | Scalars] = []
        for spec in config["blocks"]:
            kind = spec["kind"]
            if kind == VectorPCA.kind:
                block: VectorPCA | Scalars = VectorPCA(spec["column"], spec["length"], spec["n_components"],
                                                       spec.get("mask_column"), spec.get("ivar_column"),
                                                       optional=spec.get("optional", False))
            elif kind == Scalars.kind:
                block = Scalars(spec["columns"], spec.get("quadratic", False), spec.get("name", "scalars"),
                                spec.get("compressed"), spec.get("indicators"),
                                require_any=spec.get("require_any", False))
            else:
                raise ValueError(f"unknown feature block kind {kind!r}")
            head = f"{prefix}.{block.name}."
            block.arrays = {k[len(head):]: v for k, v in arrays.items() if k.startswith(head)}
            blocks.append(block)
        head = f"{prefix}."
        own = {k[len(head):]: v for k, v in arrays.items() if k.startswith(head) and k.count(".") == 1}
        return cls(blocks, config.get("quadratic_leading", 0), own)
