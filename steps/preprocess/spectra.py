"""Spectra to model inputs: rest frame, one common log-wavelength grid, a mask, and continuum normalisation.

For each spectrum:
1. pixels are bad where SDSS flags them unusable (`BAD_PIXEL_BITS`), where ivar is 0, or flux or ivar is not
   finite;
2. its pixels (extents halfway to their neighbours; across a gap between spectrograph arms, as wide as on their
   other side) are moved to the rest frame by (1 + z) and resampled flux-conservingly onto the common grid: each
   output pixel is the overlap-weighted mean of the good input pixels it covers, with variance propagated
   (sum of w^2 sigma^2 / (sum of w)^2); output pixels less than half covered by good input are masked;
3. the continuum is a low-order Chebyshev polynomial in log-lambda, fitted to the means of the usable pixels in
   `CONTINUUM_BLOCKS` blocks of the grid with asymmetric clipping (blocks deepened by absorption lines, or raised
   by spikes, are rejected iteratively), and flux and ivar are divided by it (ivar times its square).
Masked pixels end with flux 1 and ivar 0. `continuum_shape` keeps what normalisation removes: per block, log10 of the
mean usable flux (over blocks at least `SHAPE_MIN_COVERAGE` usable), less its mean over the blocks inside
`SHAPE_REFERENCE` (all blocks where none is): the spectral energy distribution, which carries Teff, as relative
dex, NaN where a block is not covered (and everywhere when less than `SHAPE_REFERENCE_COVERAGE` of the reference
blocks are, since a partial zero point would shift the whole shape). `snr` is the median S/N per pixel: the median
over the blocks of the mean flux * sqrt(ivar) of their usable pixels. Spectra with too few usable pixels are
quarantined with the reason. The (1+z) change of flux density into the rest frame is left out: continuum
normalisation removes any constant.

Step 2 is one sparse matrix per distinct rest-frame input grid (a wavelength array and a redshift): S[j, i] is the
overlap in Angstrom of input pixel i with output pixel j, so with g the good-pixel indicator the resampled flux is
S(g f) / S g, its variance S^2(g sigma^2) / (S g)^2 and its coverage S g / width. The matrix is built once and
applied to all the spectra sharing the grid as pixel-major batches (pixels x spectra), so the work per spectrum is
three sparse-dense products and a few array passes, vectorised over the batch. Spectra from one library or
survey plate share a grid; spectra with their own redshifts each get their own matrix (the most recent are kept for
reuse). Block sums for the continuum are one more sparse operator (blocks x pixels); the clipped fit runs on 64 block
means per spectrum, not on thousands of pixels, for up to FIT_CHUNK spectra at once, its 6 x 6 normal equations
solved by one vectorised elimination for all of them. Each array crosses between the layouts once: flux and variance
are transposed to pixel-major for the products, the resampled flux and ivar straight into their output rows, where
they are normalised in place once the chunk's continua are known. A batch's intermediates live in reused buffers.
Masks are applied by arithmetic rather than np.where, which costs about six multiplications on these arrays; bad
ivar (0, negative, NaN, inf) ends as variance 0 through that arithmetic, and rare non-finite flux shows in the
block sums, after which the batch is done again with those pixels bad.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sparse
from numpy.polynomial import chebyshev

from steps.core.quarantine import Quarantine
from steps.ingest.schemas import SDSS_PIXEL_BITS, STELLAR_LABELS_SCHEMA
from steps.preprocess.common import Features, RawArtifact, label_columns

try:  # scipy's own CSR kernel: private, so a SciPy without it falls back to `@` (slower on small batches, same sums)
    from scipy.sparse._sparsetools import csr_matvecs
except ImportError:
    csr_matvecs = None

# Angstrom, rest frame vacuum. BOSS starts at 3600 A, LAMOST at 3700, MILES at 3540 and SDSS-I/II at 3800 (below
# which its pixels are simply masked). The blue end carries surface gravity (the Balmer jump and high Balmer lines,
# CN 3883): on MILES FGK stars, 3600 A instead of 3900 took log g from 0.240 to 0.215 dex (closed-form estimate,
# 5-fold CV x 6); see `kernel_estimate.metallicity_window` for [Fe/H].
WAVE_MIN, WAVE_MAX = 3600.0, 9000.0
DEFAULT_LENGTH = 1024
# Bits that make a pixel unusable: the fibre or its calibration failed, or the pixel was rejected or has no
# data. Informational bits (NEARBADPIXEL, BRIGHTSKY, PARTIALREJECT, ...) only inflate the noise, which ivar has.
BAD_PIXEL_BITS = sum(1 << SDSS_PIXEL_BITS[name] for name in (
    "NOPLUG", "BADTRACE", "BADFLAT", "BADARC", "MANYBADCOLUMNS", "MANYREJECTED", "LARGESHIFT", "BADSKYFIBER",
    "FULLREJECT", "NODATA", "COMBINEREJ", "BADFLUXFACTOR", "BADSKYCHI"))
MIN_COVERAGE = 0.5          # fraction of an output pixel that good input must cover for it to be kept
MIN_VALID_FRACTION = 0.5    # fraction of output pixels that must be kept for the spectrum to be used
GAP_FACTOR = 2.0            # a step between pixel centres this many times both neighbouring steps is a gap
CONTINUUM_DEGREE = 5
CONTINUUM_BLOCKS = 64       # blocks of the grid (52-128 A on 3600-9000 A) whose means the continuum is fitted to
SHAPE_MIN_COVERAGE = 0.5   # fraction of a block's pixels that must be usable for its `continuum_shape` value
SHAPE_REFERENCE = (4000.0, 7000.0)   # Angstrom: the `continuum_shape` zero point (covered by SDSS, LAMOST, MILES)
SHAPE_REFERENCE_COVERAGE = 0.9       # share of the reference blocks a spectrum must cover to have a shape at all
CLIP_LOW, CLIP_HIGH = 2.0, 3.0   # sigma: below rejects absorption, above rejects spikes
CLIP_ITERATIONS = 5
BATCH = 32                  # spectra per batch: the working arrays stay in the core's cache
FIT_CHUNK = 512             # spectra whose continua are fitted together: the clipping loop is many small operations
TINY = np.finfo(np.float32).tiny   # floor of denominators that are 0 only where the result is masked anyway
OPERATORS_KEPT = 16         # resampling operators kept for reuse across chunks
LABELS = ("teff", "logg", "feh")


def output_grid(length: int, wave_range: tuple[float, float] = (WAVE_MIN, WAVE_MAX)) -> tuple[float, float, np.ndarray]:
    """(loglam of the first pixel centre, step in dex, the `length + 1` pixel edges in log10 Angstrom)."""
    low, high = np.log10(wave_range[0]), np.log10(wave_range[1])
    step = (high - low) / length
    return low + step / 2, step, low + step * np.arange(length + 1)


def block_edges(length: int) -> np.ndarray:
    """Pixel indices bounding the continuum blocks of a grid of `length` pixels (block i is edges[i]:edges[i+1])."""
    return np.linspace(0, length, min(CONTINUUM_BLOCKS, length) + 1).round().astype(np.int64)


def grid_spec(length: int, wave_range: tuple[float, float] = (WAVE_MIN, WAVE_MAX)) -> dict[str, Any]:
    """The features spec's `grid`: first pixel centre and step in log10 Angstrom, and the length."""
    loglam_start, loglam_step, _ = output_grid(length, wave_range)
    return {"loglam_start": loglam_start, "loglam_step": loglam_step, "length": length,
            "wavelength": "rest frame, vacuum, log10 Angstrom"}


def grid_wavelengths(grid: dict[str, Any]) -> np.ndarray:
    """Pixel centres in Angstrom of a features spec's `grid`."""
    return 10 ** (grid["loglam_start"] + grid["loglam_step"] * np.arange(grid["length"]))


def pixel_extents(loglam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) log10 edges of pixels centred at `loglam` (increasing, at least two).

    A pixel reaches halfway to each neighbour. At the ends, and beside a gap (a step `GAP_FACTOR` times both
    neighbouring steps, as between two spectrograph arms), it reaches as far as on its other side, so that no pixel
    stretches over wavelengths that were not observed.
    """
    steps = np.diff(loglam)
    before = np.concatenate([[np.inf], steps[:-1]])
    after = np.concatenate([steps[1:], [np.inf]])
    gaps = np.flatnonzero((steps > GAP_FACTOR * before) & (steps > GAP_FACTOR * after))
    lower_half = np.concatenate([steps[:1], steps]) / 2
    upper_half = np.concatenate([steps, steps[-1:]]) / 2
    upper_half[gaps] = lower_half[gaps]
    lower_half[gaps + 1] = upper_half[gaps + 1]
    return loglam - lower_half, loglam + upper_half


@dataclass(frozen=True)
class ResamplingOperator:
    """Flux-conserving resampling from one input grid onto the common grid, as sparse matrices (output x input)."""

    overlap: sparse.csr_matrix            # Angstrom of input pixel i inside output pixel j
    overlap_squared: sparse.csr_matrix
    width: np.ndarray                     # Angstrom, per output pixel, as a column (length x 1)
    half_width: np.ndarray                # MIN_COVERAGE of it: the least good input an output pixel may keep

    @classmethod
    def build(cls, lower: np.ndarray, upper: np.ndarray, out_edges: np.ndarray) -> "ResamplingOperator":
        """The operator for input pixels spanning [lower, upper) and output pixel edges `out_edges` (Angstrom)."""
        length = out_edges.size - 1
        first = np.searchsorted(out_edges, lower, side="right") - 1
        last = np.searchsorted(out_edges, upper, side="left") - 1
        spans = np.clip(last - first + 1, 0, None)
        source = np.repeat(np.arange(lower.size), spans)
        target = np.repeat(first, spans) + np.arange(spans.sum()) - np.repeat(np.cumsum(spans) - spans, spans)
        inside = (target >= 0) & (target < length)
        source, target = source[inside], target[inside]
        overlap = (np.minimum(upper[source], out_edges[target + 1])
                   - np.maximum(lower[source], out_edges[target]))
        positive = overlap > 0
        # Entries come input pixel by input pixel, output pixels ascending: already the compressed-column layout.
        per_input = np.bincount(source[positive], minlength=lower.size)
        matrix = sparse.csc_matrix((overlap[positive].astype(np.float32), target[positive],
                                    np.concatenate([[0], np.cumsum(per_input)])), shape=(length, lower.size)).tocsr()
        squared = sparse.csr_matrix((matrix.data * matrix.data, matrix.indices, matrix.indptr), shape=matrix.shape)
        width = np.diff(out_edges).astype(np.float32)[:, None]
        return cls(matrix, squared, width, MIN_COVERAGE * width)

    def sums(self, flux: np.ndarray, good: np.ndarray, variance: np.ndarray,
             out: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`S(g f)`, `S g` and `S^2(g sigma^2)` of pixel-major (input pixels x spectra, C-contiguous float32)
        flux already 0 at bad pixels, good-pixel indicator (1.0 or 0.0) and variance (0 at bad pixels), into
        `out` (three C-contiguous float32 arrays, output pixels x spectra)."""
        for matrix, values, result in zip((self.overlap, self.overlap, self.overlap_squared), (flux, good, variance),
                                          out):
            _products(matrix, values, result)
        return out

    def apply(self, flux: np.ndarray, variance: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The sums of a pixel-major batch (input pixels x spectra, float32: flux, and variance, positive at the
        good pixels and 0 at the others, whose flux is ignored), output pixels x spectra: flux sums `S(g f)`,
        weights `S g` (Angstrom of good input) and variance sums `S^2(g sigma^2)`."""
        good = (variance > 0).astype(np.float32)
        return self.overlap @ (flux * good), self.overlap @ good, self.overlap_squared @ variance

    def resampled(self, flux: np.ndarray, variance: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(flux, ivar, usable) of a pixel-major batch, as `apply` takes it: output pixels x spectra, usable (1.0)
        where good input covers at least MIN_COVERAGE of the output pixel, flux and ivar 0 where not."""
        flux_sum, weight, variance_sum = self.apply(flux, variance)
        usable = (weight >= self.half_width).astype(np.float32)
        unusable = 1 - usable                                # keeps denominators that may be 0 away from 0
        return (flux_sum * usable / (weight + unusable), weight * weight * usable / (variance_sum + unusable),
                usable)


def _products(matrix: sparse.csr_matrix, values: np.ndarray, out: np.ndarray) -> np.ndarray:
    """`matrix @ values` into `out` (C-contiguous, of the matrix's dtype), by scipy's kernel called directly:
    `@` costs several microseconds of checks and an allocation per call, as much as a small batch's product."""
    if csr_matvecs is None:
        out[...] = matrix @ values
        return out
    out.fill(0)
    csr_matvecs(matrix.shape[0], matrix.shape[1], values.shape[1], matrix.indptr, matrix.indices, matrix.data,
                values.ravel(), out.ravel())
    return out


def resample(wave_edges: np.ndarray, flux: np.ndarray, variance: np.ndarray, good: np.ndarray,
             out_edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flux-conserving resampling of one spectrum's good pixels onto `out_edges` (all edges in Angstrom,
    increasing), pixel by pixel: the reference the batched `ResamplingOperator` is checked against.

    Returns (flux, variance, coverage): the overlap-weighted mean flux of each output pixel, its propagated
    variance, and the fraction of the output pixel covered by good input (0 where none; flux and variance NaN).
    """
    low, high = wave_edges[:-1], wave_edges[1:]
    first = np.searchsorted(out_edges, low, side="right") - 1
    last = np.searchsorted(out_edges, high, side="left") - 1
    length = out_edges.size - 1
    weight_sum = np.zeros(length)
    flux_sum = np.zeros(length)
    variance_sum = np.zeros(length)
    for step in range(int(np.max(last - first, initial=0)) + 1):
        target = first + step
        inside = good & (target <= last) & (target >= 0) & (target < length)
        target = target[inside]
        overlap = (np.minimum(high[inside], out_edges[target + 1]) - np.maximum(low[inside], out_edges[target]))
        overlap = np.clip(overlap, 0.0, None)
        weight_sum += np.bincount(target, overlap, length)
        flux_sum += np.bincount(target, overlap * flux[inside], length)
        variance_sum += np.bincount(target, overlap**2 * variance[inside], length)
    with np.errstate(invalid="ignore", divide="ignore"):
        return flux_sum / weight_sum, variance_sum / weight_sum**2, weight_sum / np.diff(out_edges)


class ContinuumFitter:
    """Continua on one grid: Chebyshev polynomials in log-lambda fitted to block means, with clipping.

    The grid is cut into `CONTINUUM_BLOCKS` blocks; each contributes the mean of its usable pixels, weighted by how
    many there are. Blocks more than CLIP_LOW sigma below or CLIP_HIGH sigma above the fit are rejected on each
    iteration, sigma being the weighted RMS of the kept blocks' residuals. A degree-5 continuum has no detail that
    a block resolves, and clipping 64 block means is cheap where clipping thousands of pixels is not.
    """

    def __init__(self, loglam: np.ndarray):
        x = np.interp(loglam, [loglam[0], loglam[-1]], [-1.0, 1.0])
        self.basis = chebyshev.chebvander(x, CONTINUUM_DEGREE).astype(np.float32)                  # px x terms
        edges = block_edges(x.size)
        block_of_pixel = np.repeat(np.arange(edges.size - 1), np.diff(edges))
        self.blocks = sparse.csr_matrix((np.ones(x.size, np.float32), (block_of_pixel, np.arange(x.size))),
                                        shape=(edges.size - 1, x.size))
        self.block_size = np.diff(edges)
        self.block_loglam = self.blocks @ loglam / self.block_size
        self.block_basis = chebyshev.chebvander(self.blocks @ x / np.diff(edges), CONTINUUM_DEGREE)  # blocks x terms
        self.upper = np.triu_indices(CONTINUUM_DEGREE + 1)
        self.products = (self.block_basis[:, self.upper[0]] * self.block_basis[:, self.upper[1]]).T  # pairs x blocks

    def block_sums(self, values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Sums over each block of `values` (pixels x spectra, C-contiguous float32): blocks x spectra."""
        return _products(self.blocks, values, np.empty((self.blocks.shape[0], values.shape[1]), np.float32)
                         if out is None else out)

    def fit(self, counts: np.ndarray, sums: np.ndarray) -> np.ndarray:
        """Coefficients (terms x spectra) of the continua of block sums of usable flux and of usable pixel counts
        (blocks x spectra). A block's weight is its count while kept, 0 once clipped (or empty)."""
        means = sums / np.maximum(counts, 1)
        weights = counts
        for iteration in range(CLIP_ITERATIONS):
            coefficients = self._weighted_fit(weights, means)
            if iteration == CLIP_ITERATIONS - 1:                      # the last clipping would not be used
                return coefficients
            residual = means - self.block_basis @ coefficients
            squares = np.einsum("ij,ij,ij->j", weights, residual, residual)  # weighted squares, no temporaries
            sigma = np.sqrt(squares / np.maximum(weights.sum(axis=0), 1))
            weights = counts * ((residual > -CLIP_LOW * sigma) & (residual < CLIP_HIGH * sigma))

    def _weighted_fit(self, weights: np.ndarray, means: np.ndarray) -> np.ndarray:
        """Least-squares coefficients (terms x spectra) of block means with weights (both blocks x spectra)."""
        terms = CONTINUUM_DEGREE + 1
        normal = np.zeros((terms, terms, weights.shape[1]))
        normal[self.upper[0], self.upper[1]] = self.products @ weights
        normal[self.upper[1], self.upper[0]] = normal[self.upper[0], self.upper[1]]
        normal[range(terms), range(terms)] += 1e-9                      # keeps a spectrum with nothing kept solvable
        return solve_positive_definite(normal, self.block_basis.T @ (weights * means))

    def evaluate(self, coefficients: np.ndarray) -> np.ndarray:
        """The continua (spectra x pixels) of coefficients (terms x spectra)."""
        return coefficients.T.astype(np.float32) @ self.basis.T

    def shape(self, counts: np.ndarray, sums: np.ndarray) -> np.ndarray:
        """`continuum_shape` (spectra x blocks) from block sums of usable pixels and of their flux (blocks x
        spectra): log10 block means relative to their mean over the reference blocks; NaN where not covered."""
        covered = counts >= SHAPE_MIN_COVERAGE * self.block_size[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            level = np.where(covered & (sums > 0), np.log10(sums / np.maximum(counts, 1)), np.nan)
        wave = 10 ** self.block_loglam
        reference = (wave >= SHAPE_REFERENCE[0]) & (wave <= SHAPE_REFERENCE[1])
        levels = level[reference] if reference.any() else level
        known = np.isfinite(levels)
        zero = np.where(known, levels, 0.0).sum(axis=0) / np.maximum(known.sum(axis=0), 1)
        # a zero point from part of the window would shift the whole shape (a slope looks like another Teff)
        zero[known.sum(axis=0) < SHAPE_REFERENCE_COVERAGE * len(levels)] = np.nan
        return (level - zero).T.astype(np.float32)


def solve_positive_definite(matrices: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Solutions x of matrices[:, :, j] x = vectors[:, j] for every j: many small symmetric positive definite
    systems (terms x terms x systems, terms x systems), by Gaussian elimination vectorised over the systems.

    Positive definite systems need no pivoting; one array operation per step for all systems beats LAPACK's
    call per system, which costs more than a 6 x 6 solve itself.
    """
    matrix, vector = matrices.copy(), vectors.copy()
    size = vector.shape[0]
    for pivot in range(size - 1):
        factors = matrix[pivot + 1:, pivot] / matrix[pivot, pivot]
        matrix[pivot + 1:, pivot:] -= factors[:, None] * matrix[pivot, pivot:]
        vector[pivot + 1:] -= factors * vector[pivot]
    solution = np.empty_like(vector)
    for row in range(size - 1, -1, -1):
        solution[row] = (vector[row] - (matrix[row, row + 1:] * solution[row + 1:]).sum(axis=0)) / matrix[row, row]
    return solution


def masked_row_median(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Median of each row's valid entries (NaN for a row with none), with one partition of all rows at once.

    Invalid entries become -inf and +inf in equal numbers (one more +inf when odd), which leaves the median of the
    valid entries at the row's middle rank (or between the two middle ranks): no per-row selection is needed.
    """
    rows, length = values.shape
    invalid = ~valid
    n_invalid = invalid.sum(axis=1)
    below = n_invalid // 2
    filled = np.where(valid, values, np.where(np.cumsum(invalid, axis=1) <= below[:, None], -np.inf, np.inf))
    middle = length // 2
    partitioned = np.partition(filled, (middle - 1, middle), axis=1)
    n_valid = length - n_invalid
    low = np.clip(below + (n_valid - 1) // 2, middle - 1, middle)
    high = np.clip(below + n_valid // 2, middle - 1, middle)
    index = np.arange(rows)
    with np.errstate(invalid="ignore"):                      # -inf + inf in rows without a valid entry
        median = 0.5 * (partitioned[index, low].astype(np.float64) + partitioned[index, high])
    return np.where(n_valid > 0, median, np.nan)


def _single_chunk(column: pa.ChunkedArray) -> pa.Array:
    """A column as one array: its only chunk as it is (combining copies even one chunk), or the chunks joined."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


class _ListColumns:
    """The raw table's list columns as flat numpy values with their row offsets, read without a per-row copy."""

    NAMES = ("loglam", "flux", "ivar", "and_mask")

    def __init__(self, data: pa.Table):
        arrays = {name: _single_chunk(data.column(name)) for name in self.NAMES}
        self.values = {name: array.values.to_numpy(zero_copy_only=False) for name, array in arrays.items()}
        self.offsets = {name: array.offsets.to_numpy().astype(np.int64) for name, array in arrays.items()}

    def lengths(self, name: str) -> np.ndarray:
        """The length of every row of column `name`."""
        return np.diff(self.offsets[name])

    def row(self, name: str, row: int) -> np.ndarray:
        """One row of column `name`."""
        return self.values[name][self.offsets[name][row]:self.offsets[name][row + 1]]

    def batch(self, name: str, rows: np.ndarray, size: int) -> np.ndarray:
        """Rows `rows` (increasing, all of length `size`) of column `name` as a 2-D array: a view where the rows
        are consecutive, a copy otherwise."""
        values, offsets = self.values[name], self.offsets[name]
        if rows[-1] - rows[0] == rows.size - 1:
            return values[offsets[rows[0]]:offsets[rows[0]] + rows.size * size].reshape(rows.size, size)
        return np.stack([values[offset:offset + size] for offset in offsets[rows]])


def _shape_reasons(columns: _ListColumns, redshifts: np.ndarray) -> list[str | None]:
    """Why each raw spectrum cannot be used, as far as its array lengths and redshift tell (None where they
    allow it); the pixel values are checked batch by batch."""
    lengths = np.column_stack([columns.lengths(name) for name in columns.NAMES])
    with np.errstate(invalid="ignore"):
        fine = ((lengths == lengths[:, :1]).all(axis=1) & (lengths[:, 0] >= 2) & np.isfinite(redshifts)
                & (redshifts > -1))
    reasons: list[str | None] = [None] * lengths.shape[0]
    for row in np.flatnonzero(~fine).tolist():
        sizes, z = lengths[row].tolist(), float(redshifts[row])
        if len(set(sizes)) > 1 or sizes[0] < 2:
            reasons[row] = f"malformed: loglam/flux/ivar/and_mask lengths {'/'.join(map(str, sizes))}"
        else:
            reasons[row] = f"unusable redshift {z}"
    return reasons


def _grid_groups(columns: _ListColumns, rows: np.ndarray, redshifts: np.ndarray) -> list[np.ndarray]:
    """`rows` grouped by identical rest-frame input grid (the same wavelength array and redshift), in order of
    first appearance, each group in row order."""
    loglam, offsets = columns.values["loglam"], columns.offsets["loglam"]
    starts, ends = offsets[rows], offsets[rows + 1]
    keys = np.column_stack([ends - starts, loglam[starts], loglam[ends - 1], redshifts[rows]])
    _, first_of, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    groups = []
    for key in np.argsort(first_of, kind="stable"):
        members = rows[inverse.ravel() == key]
        while members.size:
            grid = columns.row("loglam", members[0])
            same = np.concatenate([(columns.batch("loglam", chunk, grid.size) == grid).all(axis=1)
                                   for chunk in np.array_split(members, -(-members.size // (2 * BATCH)))])
            groups.append(members[same])
            members = members[~same]
    return groups


def _list_column(matrix: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    """One list-typed column from the rows of a 2-D array, without copying them one by one."""
    offsets = np.arange(matrix.shape[0] + 1, dtype=np.int32) * matrix.shape[1]
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(matrix.ravel(), value_type))


@dataclass
class _Output:
    """The preprocessed rows being filled in, batch by batch, and what made rows unusable."""

    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray            # 1 = bad pixel
    shape: np.ndarray           # continuum_shape (rows x blocks)
    usable: np.ndarray          # usable pixels per row
    snr: np.ndarray
    reasons: list[str | None]

    @classmethod
    def empty(cls, rows: int, length: int, blocks: int, reasons: list[str | None]) -> "_Output":
        """Room for `rows` spectra; a row is filled in only if its spectrum is processed, and read only if kept."""
        return cls(np.empty((rows, length), np.float32), np.empty((rows, length), np.float32),
                   np.empty((rows, length), np.uint8), np.full((rows, blocks), np.nan, np.float32),
                   np.zeros(rows, np.int64), np.full(rows, np.nan), reasons)


class _Workspace:
    """Reused buffers for the batches: a batch's intermediates are written into memory that the previous batch
    left in the cache, rather than into fresh allocations, and an intermediate no longer needed lends its
    buffer (by name) to a later one, so that the batch's working set stays small."""

    def __init__(self):
        self.buffers: dict[str, np.ndarray] = {}
        self.views: dict[tuple[str, tuple[int, ...], type], np.ndarray] = {}
        # (id of a column, columns) -> (the column, kept alive so that its id stays its own; its broadcast)
        self.broadcasts: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
        """A C-contiguous array of `shape` and `dtype` (contents undefined) in buffer `name`, grown as needed."""
        key = (name, shape, dtype)
        view = self.views.get(key)
        if view is not None:
            return view
        size = math.prod(shape) * np.dtype(dtype).itemsize
        buffer = self.buffers.get(name)
        if buffer is None or buffer.size < size:
            buffer = self.buffers[name] = np.empty(size, np.uint8)
            self.views = {other: view for other, view in self.views.items() if other[0] != name}
        if len(self.views) > 256:                          # many grid sizes: keep the cache small
            self.views.clear()
        view = self.views[key] = buffer[:size].view(dtype).reshape(shape)
        return view

    def broadcast(self, column: np.ndarray, columns: int) -> np.ndarray:
        """`column` (rows x 1) repeated into a C-contiguous rows x `columns` array, kept for reuse: ufuncs run
        faster over two flat arrays than with a column broadcast along rows of a batch's 32 elements."""
        key = (id(column), columns)
        if key not in self.broadcasts:
            if len(self.broadcasts) >= 2 * OPERATORS_KEPT:
                self.broadcasts.clear()
            self.broadcasts[key] = (column, np.ascontiguousarray(np.broadcast_to(column, (column.shape[0], columns))))
        return self.broadcasts[key][1]


def _rows(batch: np.ndarray) -> slice | np.ndarray:
    """Output rows of a batch (increasing): a slice, so views rather than copies, where they are consecutive."""
    return slice(int(batch[0]), int(batch[-1]) + 1) if batch[-1] - batch[0] == batch.size - 1 else batch


def _chunks(rows: np.ndarray, size: int) -> list[np.ndarray]:
    """`rows` in consecutive pieces of at most `size`."""
    return np.array_split(rows, -(-rows.size // size))


class _Operators:
    """Resampling operators by rest-frame grid, the `OPERATORS_KEPT` most recently used kept: a grid shared by many
    spectra is built once, however the spectra are ordered."""

    def __init__(self, out_edges: np.ndarray):
        self.out_edges = out_edges
        self.kept: OrderedDict[bytes, ResamplingOperator] = OrderedDict()

    def get(self, rest_loglam: np.ndarray) -> ResamplingOperator:
        """The operator of a rest-frame grid (log10 Angstrom), built on first use."""
        key = rest_loglam.tobytes()
        if key in self.kept:
            self.kept.move_to_end(key)
            return self.kept[key]
        lower, upper = pixel_extents(rest_loglam)
        self.kept[key] = operator = ResamplingOperator.build(10**lower, 10**upper, self.out_edges)
        if len(self.kept) > OPERATORS_KEPT:
            self.kept.popitem(last=False)
        return operator


def preprocess_spectra(raw: RawArtifact, length: int = DEFAULT_LENGTH,
                       wave_range: tuple[float, float] = (WAVE_MIN, WAVE_MAX)) -> Features:
    """Rest-frame, resampled, masked, continuum-normalised spectra with their labels; bad ones quarantined.

    Rows are taken in chunks of FIT_CHUNK: within a chunk, spectra sharing a rest-frame grid are resampled in
    batches, then the continua of the whole chunk are fitted at once and each batch normalised into its rows.
    """
    data = raw.data
    ids = data.column("id").to_pylist()
    sources = data.column("source").to_pylist()
    redshifts = data.column("z").to_numpy(zero_copy_only=False).astype(np.float64)
    columns = _ListColumns(data)
    loglam_start, loglam_step, out_edges = output_grid(length, wave_range)
    fitter = ContinuumFitter(loglam_start + loglam_step * np.arange(length))
    operators = _Operators(10**out_edges)
    work = _Workspace()
    output = _Output.empty(data.num_rows, length, fitter.block_size.size, _shape_reasons(columns, redshifts))

    candidates = np.array([row for row, reason in enumerate(output.reasons) if reason is None], dtype=np.int64)
    for chunk in _chunks(candidates, FIT_CHUNK) if candidates.size else []:
        sums = np.zeros((3, len(fitter.block_basis), chunk.size))       # per block: usable pixels, flux, S/N
        pending: list[tuple[np.ndarray, np.ndarray]] = []      # (rows, positions in the chunk) per batch
        for group in _grid_groups(columns, chunk, redshifts):
            rest_loglam = columns.row("loglam", group[0]) - np.log10(1 + redshifts[group[0]])
            if not (np.isfinite(rest_loglam).all() and (np.diff(rest_loglam) > 0).all()):
                for row in group:
                    output.reasons[row] = "malformed: wavelengths are not finite and strictly increasing"
                continue
            operator = operators.get(rest_loglam)
            for batch in _chunks(group, BATCH):
                positions = np.searchsorted(chunk, batch)
                sums[:, :, positions] = _resample_batch(columns, batch, operator, fitter, output, work)
                pending.append((batch, positions))
        if not pending:
            continue
        coefficients = fitter.fit(sums[0], sums[1])
        usable = sums[0].sum(axis=0).astype(np.int64)                  # usable pixels of each spectrum
        for batch, positions in pending:
            _normalise(batch, fitter.evaluate(coefficients[:, positions]), usable[positions], output)
        done = np.sort(np.concatenate([batch for batch, _ in pending]))
        positions = np.searchsorted(chunk, done)
        counts, snr_sums = sums[0][:, positions], sums[2][:, positions]
        output.shape[done] = fitter.shape(counts, sums[1][:, positions])
        output.snr[done] = masked_row_median((snr_sums / np.maximum(counts, 1)).T, (counts > 0).T)
        for row in done[output.usable[done] < MIN_VALID_FRACTION * length]:
            spans = 10 ** (columns.row("loglam", row)[[0, -1]] - np.log10(1 + redshifts[row]))
            output.reasons[row] = _pixel_reason(columns, row) or (
                f"only {output.usable[row]} of {length} pixels usable after masking, resampling and continuum "
                f"normalisation (the spectrum spans {spans[0]:.0f}-{spans[1]:.0f} A in the rest frame, the grid "
                f"{wave_range[0]:.0f}-{wave_range[1]:.0f} A)")

    quarantine = Quarantine("preprocess.spectra")
    for row, reason in enumerate(output.reasons):
        if reason is not None:
            quarantine.add(ids[row], reason, sources[row])
    kept = np.array([row for row, reason in enumerate(output.reasons) if reason is None], dtype=np.int64)
    every = kept.size == data.num_rows                  # then no copy of the (large) output arrays is needed
    flux, ivar, mask, shape = ((array if every else array[kept])
                               for array in (output.flux, output.ivar, output.mask, output.shape))
    kept_ids = [ids[row] for row in kept]
    table = pa.table({
        "id": pa.array(kept_ids, pa.string()),
        "flux": _list_column(flux, pa.float32()),
        "ivar": _list_column(ivar, pa.float32()),
        "mask": _list_column(mask, pa.uint8()),
        "continuum_shape": _list_column(shape, pa.float32()),
        "snr": pa.array(output.snr[kept], pa.float64()),
        **label_columns(kept_ids, raw.labels, STELLAR_LABELS_SCHEMA),
    })
    spec = {
        "modality": "spectra",
        "grid": grid_spec(length, wave_range),
        "inputs": {"flux": "continuum-normalised flux (1.0 where masked)", "ivar": "inverse variance of flux",
                   "mask": "1 = bad pixel",
                   "continuum_shape": (f"log10 mean flux of {fitter.block_size.size} blocks of the grid relative to "
                                       f"its mean over {SHAPE_REFERENCE[0]:.0f}-{SHAPE_REFERENCE[1]:.0f} A "
                                       "(dex; NaN where a block is not covered)")},
        "continuum_blocks": int(fitter.block_size.size),
        "labels": list(LABELS),
        "normalisation": (f"continuum: Chebyshev polynomial of degree {CONTINUUM_DEGREE} in log-lambda, fitted to "
                          f"the usable-pixel means of {CONTINUUM_BLOCKS} blocks of the grid with "
                          f"{CLIP_LOW:g}/{CLIP_HIGH:g}-sigma low/high clipping over {CLIP_ITERATIONS} iterations; "
                          "flux divided by it, ivar multiplied by its square"),
        "bad_pixel_bits": BAD_PIXEL_BITS,
    }
    parameters = {"modality": "spectra", "length": length}
    if wave_range != (WAVE_MIN, WAVE_MAX):
        parameters["wave_range"] = list(wave_range)
    return Features(table=table, spec=spec, quarantine=quarantine, objects_in=data.num_rows, parameters=parameters)


def _resample_batch(columns: _ListColumns, batch: np.ndarray, operator: ResamplingOperator,
                    fitter: ContinuumFitter, output: _Output, work: _Workspace) -> np.ndarray:
    """Mask and resample one batch of spectra sharing a grid into its rows of `output` (flux and ivar, not yet
    normalised, 0 where not usable); returns its block sums, 3 x blocks x spectra (usable pixels, flux, S/N).

    Masks are made spectrum-major, as the raw rows come; flux and variance are transposed once each to
    pixel-major for the sparse products, and the resampled flux and ivar once each back into the output rows.
    Every intermediate lives in a reused buffer of `work`. NaN, infinite or negative ivar needs no check: such
    pixels end with variance 0, which marks them bad. Non-finite flux is rare, and shows in the block sums (a NaN
    or infinity survives the masking arithmetic); only then is the batch done again with those pixels bad."""
    size = operator.overlap.shape[1]
    flux, ivar, and_mask = (columns.batch(name, batch, size) for name in ("flux", "ivar", "and_mask"))
    sums = _resample_arrays(flux, ivar, and_mask, _rows(batch), operator, fitter, output, work)
    if not np.isfinite(sums).all():
        finite = np.isfinite(flux)
        sums = _resample_arrays(np.where(finite, flux, np.float32(0)), np.where(finite, ivar, np.float32(0)),
                                and_mask, _rows(batch), operator, fitter, output, work)
    return sums


def _resample_arrays(flux: np.ndarray, ivar: np.ndarray, and_mask: np.ndarray, rows: slice | np.ndarray,
                     operator: ResamplingOperator, fitter: ContinuumFitter, output: _Output,
                     work: _Workspace) -> np.ndarray:
    """`_resample_batch` of spectrum-major flux, ivar and and_mask (spectra x input pixels)."""
    (count, size), length = flux.shape, operator.overlap.shape[0]
    bits = np.bitwise_and(and_mask, BAD_PIXEL_BITS, out=work.get("bits", (count, size), and_mask.dtype))
    good = np.equal(bits, 0, out=work.get("good", (count, size), bool))
    good &= np.greater(ivar, 0, out=work.get("positive", (count, size), bool))
    # 1/ivar where good (so ivar > 0), 0 elsewhere: the floor keeps 0/0 out, fmax turns NaN into the floor.
    variance = np.fmax(ivar, TINY, out=work.get("bits", (count, size)))
    np.divide(good, variance, out=variance)
    good = np.greater(variance, 0, out=work.get("good_s", (count, size)))  # good, less infinite ivar (variance 0)
    flux = np.multiply(flux, good, out=work.get("flux_s", (count, size)))   # bad pixels' flux to 0 (or NaN)
    flux_p, variance_p, good_p = (work.get(name, (size, count)) for name in ("flux_p", "variance_p", "good_p"))
    np.copyto(flux_p, flux.T)
    np.copyto(variance_p, variance.T)
    np.greater(variance_p, 0, out=good_p)                 # as `good`: cheaper than its transpose
    flux_sum, weight, variance_sum = operator.sums(flux_p, good_p, variance_p, tuple(
        work.get(name, (length, count)) for name in ("flux_sum", "weight", "variance_sum")))
    half_width = work.broadcast(operator.half_width, count)
    usable = np.greater_equal(weight, half_width, out=work.get("flux_p", (length, count)))
    # Where usable, weight >= half width > 0 and the variance sum > 0; elsewhere the floors keep 0/0 out.
    floor = work.get("variance_p", (length, count))
    resampled_flux = np.divide(flux_sum, np.maximum(weight, half_width, out=floor), out=flux_sum)
    resampled_flux *= usable
    resampled_ivar = np.multiply(weight, weight, out=weight)
    resampled_ivar /= np.maximum(variance_sum, TINY, out=variance_sum)
    resampled_ivar *= usable
    snr = np.sqrt(resampled_ivar, out=floor)
    snr *= resampled_flux
    output.flux[rows] = resampled_flux.T
    output.ivar[rows] = resampled_ivar.T
    sums = np.empty((3, fitter.blocks.shape[0], count), np.float32)
    for values, out in zip((usable, resampled_flux, snr), sums):
        fitter.block_sums(values, out)
    return sums


def _normalise(rows: np.ndarray, continuum: np.ndarray, usable: np.ndarray, output: _Output) -> None:
    """Divide rows of `output` (resampled, 0 where not usable) by their continua (spectra x pixels), in place:
    flux (1 where masked), ivar (0 where masked), mask and usable-pixel counts (`usable`, the counts from the
    block sums, unless the continuum masks more)."""
    index = _rows(rows)
    in_place = isinstance(index, slice)                   # consecutive rows: views; otherwise copies written back
    flux, ivar, mask = output.flux[index], output.ivar[index], output.mask[index]
    masked = np.less_equal(ivar, 0, out=mask.view(bool))  # usable: flux and ivar are 0 elsewhere
    if not continuum.min() > 0:                            # rare: the fit reaches 0 (or nothing was usable)
        dips = ~(continuum > 0)
        usable = usable - np.count_nonzero(dips & ~masked, axis=1)
        masked |= dips
        continuum[dips] = 1
        flux[dips] = 0
        ivar[dips] = 0
    flux /= continuum
    flux += masked                                         # 1 where masked
    ivar *= continuum
    ivar *= continuum                                      # 0 where masked
    output.usable[rows] = usable
    if not in_place:
        output.flux[index], output.ivar[index], output.mask[index] = flux, ivar, mask


def _pixel_reason(columns: _ListColumns, row: int) -> str | None:
    """"no finite flux" or "no pixel with positive ivar" where a raw spectrum has none, else None."""
    if not np.isfinite(columns.row("flux", row)).any():
        return "no finite flux"
    if not (columns.row("ivar", row) > 0).any():
        return "no pixel with positive ivar"
    return None
