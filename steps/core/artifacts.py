"""Artifact directories: what a stage reads and writes, with a manifest, published atomically.

A stage writes every output through `ArtifactWriter`: files go to a hidden temporary sibling of the output
directory, and only when the stage's block ends without error are the manifest written and the directory renamed
into place. A stage killed at any moment therefore leaves nothing a reader could take for a finished output.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from steps.core.permissions import as_if_created
from steps.core.version import code_version

MANIFEST = "manifest.json"
_CHUNK = 1 << 20


class FileEntry(BaseModel):
    """One file of an artifact: its path inside the artifact, content hash, size and, for tables, row count."""

    path: str
    sha256: str
    bytes: int
    rows: int | None = None


class Manifest(BaseModel):
    """What an artifact is and where it came from; the lineage of a model is a walk over these."""

    stage: str
    code_version: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str] = Field(default_factory=dict, description="input name -> sha256 of its manifest")
    files: list[FileEntry] = Field(default_factory=list)
    counts: dict[str, int] = Field(default_factory=dict)
    synthetic: bool = False


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_tree(root: Path, unreadable_noted: bool = False) -> str:
    """Hex SHA-256 of a directory tree: relative paths and file contents, in sorted order (or of one file). With
    `unreadable_noted` a file that cannot be read counts by its name and error (a source folder's: the stage that
    reads it quarantines that file and keeps the others), else its OSError is raised."""
    root = Path(root)
    if root.is_file():
        return sha256_file(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(os.fsencode(path.relative_to(root).as_posix()) + b"\0")
        try:
            digest.update(sha256_file(path).encode())
        except OSError as error:
            if not unreadable_noted:
                raise
            digest.update(f"unreadable: {error.errno}".encode())
    return digest.hexdigest()


def read_manifest(artifact: Path) -> Manifest:
    """Read an artifact's manifest, failing with the artifact's path when it is missing or malformed."""
    path = Path(artifact) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{artifact}: not a finished artifact (no {MANIFEST})")
    return Manifest.model_validate_json(path.read_text())


def read_parquet(path: Path, what: str, columns: list[str] | None = None) -> pa.Table:
    """Read a Parquet file, naming it (and what it should hold) when it is missing, cut short or not Parquet:
    a `FileNotFoundError` or a `ValueError`, the bad-input errors every stage turns into exit status 2."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing ({what})")
    try:
        if columns:
            missing = [name for name in columns if name not in pq.read_schema(path).names]
            if missing:
                raise ValueError(f"{path}: no column {', '.join(missing)} ({what})")
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as error:
        detail = str(error).replace(f"Could not open Parquet input source '{path}': ", "")
        raise ValueError(f"{path}: not a readable Parquet file ({what}): {detail}") from None


def manifest_hash(artifact: Path) -> str:
    """SHA-256 of an artifact's manifest: the identity of an input in a downstream manifest."""
    path = Path(artifact) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{artifact}: not a finished artifact (no {MANIFEST})")
    return sha256_file(path)


def content_hash(artifact: Path) -> str | None:
    """SHA-256 of an artifact's files as they are on disk (their paths and content hashes, the manifest left out),
    not of where they came from: two runs that wrote the same bytes from different inputs give the same content
    hash and different manifest hashes. None for an artifact with no file besides its manifest."""
    root = Path(artifact)
    return listing_hash((path.relative_to(root).as_posix(), sha256_file(path))
                       for path in root.rglob("*") if path.is_file() and path != root / MANIFEST)


def listed_content_hash(manifest: Manifest) -> str | None:
    """`content_hash` from the files a manifest lists, for a stored artifact whose manifest is trusted (it was
    written with the artifact) and whose files are not at hand."""
    return listing_hash((entry.path, entry.sha256) for entry in manifest.files)


def checked_content_hash(artifact: Path) -> str | None:
    """`content_hash` of an artifact whose files are those its manifest lists; ValueError naming it otherwise
    (a file changed, added or removed after the artifact was written)."""
    content = content_hash(artifact)
    if content != listed_content_hash(read_manifest(artifact)):
        raise ValueError(f"{artifact}: its files are not those its manifest lists (changed after it was written)")
    return content


def listing_hash(entries: Iterable[tuple]) -> str | None:
    """SHA-256 of a listing (tuples of a path and what describes its file), in sorted order; None when empty."""
    listing = sorted(entries)
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest() if listing else None


class ArtifactWriter:
    """Write one output artifact atomically, then describe it in `manifest.json`.

    Use as a context manager; `path(name)` gives a file path inside the pending artifact, and the helpers
    write tables and JSON while recording row counts for the manifest.
    """

    def __init__(self, out_dir: str | os.PathLike, stage: str, parameters: dict[str, Any] | None = None,
                 inputs: dict[str, str | os.PathLike] | None = None, synthetic: bool = False):
        self.out_dir = Path(out_dir)
        self.manifest = Manifest(stage=stage, code_version=code_version(), parameters=dict(parameters or {}),
                                 inputs={name: manifest_hash(Path(path)) for name, path in (inputs or {}).items()},
                                 synthetic=synthetic)
        self._rows: dict[str, int] = {}
        self._tmp: Path | None = None

    def __enter__(self) -> "ArtifactWriter":
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.tmp-", dir=self.out_dir.parent))
        as_if_created(self._tmp)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._tmp is not None
        if exc_type is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            return
        self._finish()

    def path(self, name: str) -> Path:
        """A path inside the pending artifact (parent folders are created)."""
        if self._tmp is None:
            raise RuntimeError("ArtifactWriter.path() used outside its `with` block")
        target = self._tmp / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_table(self, name: str, table: pa.Table) -> Path:
        """Write a parquet table (zstd, deterministic bytes) and record its row count."""
        target = self.path(name)
        pq.write_table(table, target, compression="zstd")
        self._rows[name] = table.num_rows
        return target

    def write_json(self, name: str, obj: Any) -> Path:
        """Write JSON with sorted keys, so equal objects give equal bytes."""
        target = self.path(name)
        target.write_text(json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n")
        return target

    def count(self, name: str, value: int) -> None:
        """Record a named count (objects read, quarantined, ...) in the manifest."""
        self.manifest.counts[name] = int(value)

    def _finish(self) -> None:
        assert self._tmp is not None
        files = []
        for path in sorted(p for p in self._tmp.rglob("*") if p.is_file()):
            rel = path.relative_to(self._tmp).as_posix()
            files.append(FileEntry(path=rel, sha256=sha256_file(path), bytes=path.stat().st_size,
                                   rows=self._rows.get(rel)))
        self.manifest.files = files
        (self._tmp / MANIFEST).write_text(self.manifest.model_dump_json(indent=2) + "\n")
        if self.out_dir.exists():
            shutil.rmtree(self.out_dir)
        os.replace(self._tmp, self.out_dir)


def json_default(value: Any) -> Any:
    """What `json.dumps` writes for a NumPy scalar (its Python value), a NumPy array (a list) and a path (its text)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
