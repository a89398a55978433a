"""The executor's artifact store and task cache, on any object store (a directory, or S3).

    artifacts/<task key>/<artifact name>/<content hash>/...   a task's output artifact, as the stage wrote it
    cache/<task key>.json                                      a finished task: its outputs and their content hashes

A task key is the hash of everything that decides a task's result (image, command, arguments, input artifact
hashes, code version and, for registry readers, the registry's alias state), so an entry is never stale.
An artifact's place ends in the hash of its bytes, so stored bytes are never rewritten: two runs sharing a store
(two homes, one `--artifact-store`) that run the same task at once each store what they made, and each one's
consumers read what was stored there (before, the second upload replaced the first under a reader, whose run failed
with "changed while it was read"); the first entry recorded is kept, and the other run goes on with its outputs
(`save_outputs`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from steps.core.artifacts import sha256_tree
from steps.core.storage import ObjectStore, PreconditionFailed


CONTENT_HASH_CHARS = 16  # of an artifact's SHA-256 in its place in the store
ENTRY_PREFIX = "cache/"  # the store's prefixes: cache entries (`<task key>.json`) and artifacts (`<task key>/...`)
ARTIFACT_PREFIX = "artifacts/"


class StoredArtifact(BaseModel):
    """Where an output artifact lives in the store, the hash of its content, the store's listing of it when it was
    stored (`ObjectStore.listing_fingerprint`), and whether it is one file."""

    key: str
    sha256: str
    listing: str | None = None
    file: str | None = None


class CacheEntry(BaseModel):
    """A finished task."""

    task: str
    run: str
    outputs: dict[str, StoredArtifact]


class ArtifactChanged(ValueError):
    """A stored artifact whose bytes no longer hash as stored; it has been removed from the store."""

    def __init__(self, artifact: StoredArtifact, message: str):
        super().__init__(message)
        self.artifact = artifact


def task_key(material: dict[str, Any]) -> str:
    """The hex SHA-256 of a JSON document describing everything a task's result depends on."""
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


class ArtifactCache:
    """Output artifacts and cache entries of local runs."""

    def __init__(self, store: ObjectStore):
        self.store = store

    def check(self, key: str) -> tuple[CacheEntry | None, str | None]:
        """(the usable entry for `key`, None), or (None, why an entry that is there cannot be reused: it is
        unreadable, or an artifact it names is gone or was rewritten since), or (None, None).

        An artifact is compared with the store's listing of it when it was stored (names, sizes, versions), which
        costs one listing and no download. Where the listing differs (a home copied without its files' times),
        the bytes are hashed: the same bytes keep the entry, with the listing recorded anew; other bytes are removed
        from the store (their place is the hash of what was stored, where the rebuilt output goes). Bytes are
        checked against their hash again when a task fetches them."""
        blob = self.store.get(f"{ENTRY_PREFIX}{key}.json")
        if blob is None:
            return None, None
        try:
            entry = CacheEntry.model_validate_json(blob.data)
        except ValueError as error:
            return None, f"its cache entry {self.store.uri}/{ENTRY_PREFIX}{key}.json is unreadable ({error})"
        relisted = False
        for name, artifact in entry.outputs.items():
            found = self.store.listing_fingerprint(artifact.key)
            if found is None:
                return None, f"its output {name!r} of run {entry.run} is gone from the store"
            if found != artifact.listing:
                if self._stored_sha256(artifact) != artifact.sha256:  # removed, so that the rebuild is stored
                    self.store.delete_tree(artifact.key)
                    return None, f"its output {name!r} of run {entry.run} was changed in the store since"
                artifact.listing, relisted = found, True
        if relisted:
            self.record(key, entry)
        return entry, None

    def _stored_sha256(self, artifact: StoredArtifact) -> str:
        with tempfile.TemporaryDirectory(prefix="stellar-check-") as holder:
            copy = Path(holder) / (artifact.file or "artifact")
            self._download(artifact, copy)
            return sha256_tree(copy)

    def save_outputs(self, key: str, task: str, run: str, outputs: dict[str, Path]) -> CacheEntry:
        """Upload a finished task's output directories and record the entry (the entry is written last); return
        the entry the run goes on with. Where another run sharing the store recorded a usable entry for the same
        task meanwhile, that one is kept and returned: both runs then go on from the same outputs, so a rerun of
        either finds its downstream tasks' inputs as they were (with one entry per writer, the last one written
        made the other home's evaluation run again and register its models anew)."""
        stored = {}
        for name, path in outputs.items():
            sha256 = sha256_tree(path)
            artifact_key = f"{ARTIFACT_PREFIX}{key}/{name}/{sha256[:CONTENT_HASH_CHARS]}"
            if path.is_file():
                with tempfile.TemporaryDirectory() as holder:
                    shutil.copy2(path, Path(holder) / path.name)
                    self.store.upload_content(Path(holder), artifact_key)
            else:
                self.store.upload_content(path, artifact_key)
            stored[name] = StoredArtifact(key=artifact_key, sha256=sha256,
                                          listing=self.store.listing_fingerprint(artifact_key),
                                          file=path.name if path.is_file() else None)
        entry = CacheEntry(task=task, run=run, outputs=stored)
        try:
            self.store.put_if_absent(f"{ENTRY_PREFIX}{key}.json", entry.model_dump_json(indent=2).encode())
            return entry
        except PreconditionFailed:  # an entry was there: another run's, or one that could not be used
            earlier, _ = self.check(key)
        if earlier is not None:
            return earlier
        self.record(key, entry)
        return entry

    def record(self, key: str, entry: CacheEntry) -> None:
        """Write (or re-point) a cache entry."""
        self.store.put(f"{ENTRY_PREFIX}{key}.json", entry.model_dump_json(indent=2).encode())

    def fetch(self, artifact: StoredArtifact, dest: Path) -> None:
        """Copy a stored artifact to `dest` (a directory, or a file for one-file artifacts); `dest` must not exist.

        A copy whose bytes do not hash to what was stored is refused (`ArtifactChanged`, naming the artifact), and
        the stored artifact is removed: every cache entry naming it then finds it gone, so it is rebuilt."""
        self._download(artifact, dest)
        found = sha256_tree(dest)
        if found != artifact.sha256:
            if dest.is_dir():
                shutil.rmtree(dest)
            else:
                dest.unlink()
            if self.store.listing_fingerprint(artifact.key) != artifact.listing:  # being rewritten: leave it be
                raise ValueError(f"{self.store.uri}/{artifact.key}: changed while it was read; run again")
            self.store.delete_tree(artifact.key)
            raise ArtifactChanged(artifact, f"{self.store.uri}/{artifact.key}: its bytes changed since it was stored "
                                            f"(sha256 {found[:12]}, stored as {artifact.sha256[:12]}); removed from "
                                            "the store")

    def _download(self, artifact: StoredArtifact, dest: Path) -> None:
        if artifact.file is None:
            self.store.download_dir(artifact.key, dest)
            return
        with tempfile.TemporaryDirectory() as holder:
            self.store.download_dir(artifact.key, Path(holder) / "artifact")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(Path(holder) / "artifact" / artifact.file, dest)
