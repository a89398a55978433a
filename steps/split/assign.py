"""Deterministic, id-grouped assignment of objects to train / val / test.

An object's set depends only on (seed, id): SHA-256 of `"<seed>:<id>"` read as a number in [0, 1), compared with
the fractions. Rows sharing an id always land together, the same object lands in the same set next week however
many objects join it, and no set ordering or Python hash randomisation enters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

SPLITS = ("train", "val", "test")


def unit_hash(seed: int, object_id: str) -> float:
    """A uniform number in [0, 1) determined by (seed, id): the first 8 bytes of SHA-256 over 2^64."""
    digest = hashlib.sha256(f"{seed}:{object_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign(ids: Iterable[str], seed: int, test_fraction: float, val_fraction: float) -> np.ndarray:
    """The set of each id: `test` below `test_fraction`, `val` in the next `val_fraction`, else `train`."""
    draws = np.array([unit_hash(seed, object_id) for object_id in ids], dtype=np.float64)
    return np.where(draws < test_fraction, "test", np.where(draws < test_fraction + val_fraction, "val", "train"))
