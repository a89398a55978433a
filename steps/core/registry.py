"""The model registry: immutable versions and named aliases (`candidate`, `production`) on an object store.

Layout under the registry's root (a directory by default, an S3 prefix in a cluster):

    <model>/blobs/<sha256>/...      the model directory, stored by content hash (written once, never changed)
    <model>/versions/<n>.json       a version record: which blob, metrics, verdict, lineage; created exclusively
    <model>/evaluations/<n>/<e>.json  every evaluation of version n (metrics, verdict), by evaluation hash e
    <model>/aliases.json            alias -> version, plus each alias's history for rollback; changed by ETag swap
    reports/<e>/report.html, plots/ the report of evaluation e (each version it judged names it in its lineage)

Registering the same model twice returns the existing version (re-runs are idempotent) and records the new
evaluation beside it: a weekly retrain that reproduces a version's bytes under other data or gates is judged anew,
and `latest` shows that judgement. Two writers can never take the same version number or lose each other's alias
change. Model names, versions and aliases are checked, so that no reference reaches outside its model's keys.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError

from steps.core.artifacts import (
    MANIFEST,
    Manifest,
    checked_content_hash,
    listed_content_hash,
    manifest_hash,
    read_manifest,
)
from steps.core.storage import ObjectStore, PreconditionFailed, file_lock, open_store

PRODUCTION = "production"
UNSET = ""  # in an alias's history: it pointed at no version
CANDIDATE = "candidate"
ANY = object()
_SWAP_ATTEMPTS = 50
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
REPORTS = "reports"  # the evaluations' reports, shared by the models they judged
REPORT_PARTS = ("report.html", "report.md", "plots")  # what of an evaluation artifact is its report
COPIES_LOCK = ".copies.lock"  # in a folder of local copies (`download`): held while one is checked or made
Record = TypeVar("Record", bound=BaseModel)


class RegistryError(LookupError):
    """A name, version or alias that the registry does not hold, or an alias change that lost a race."""


class CorruptRecord(RegistryError):
    """A stored registry record that is not one (cut short, edited by hand): named with its key, never parsed on."""


class NothingToRollBack(RegistryError):
    """A rollback of an alias that no earlier change is left to undo: the request is sound, the state refuses it."""


class RolledBack(RegistryError):
    """An automatic promotion of a version that someone rolled the alias back from."""


class VersionRecord(BaseModel):
    """One immutable model version."""

    name: str
    version: str
    blob: str = Field(description="sha256 of the model artifact's manifest; names the stored model directory")
    content: str | None = Field(default=None, description="`content_hash` of the model's files: a model trained "
                                "again to the same bytes is this version (None: from the stored manifest's list)")
    created_at: str
    metrics: dict[str, Any] = Field(default_factory=dict)
    verdict: dict[str, Any] = Field(default_factory=dict)
    lineage: dict[str, Any] = Field(default_factory=dict)
    evaluated_at: str | None = Field(default=None, description="when `metrics` and `verdict` were measured, where "
                                     "the version was evaluated again after it was registered")
    evaluated_lineage: dict[str, Any] | None = Field(default=None, description="where the version was evaluated "
                                                     "again: the lineage of what that run trained (the same files, "
                                                     "perhaps from other inputs)")


class Evaluation(BaseModel):
    """One evaluation of a registered version: what a run measured and decided."""

    evaluation: str
    evaluated_at: str
    metrics: dict[str, Any] = Field(default_factory=dict)
    verdict: dict[str, Any] = Field(default_factory=dict)
    lineage: dict[str, Any] = Field(default_factory=dict)


class AliasState(BaseModel):
    """Every alias of one model, per alias the versions it pointed to before (newest last; `UNSET` where it pointed
    nowhere, a string so that registries written before still read alike), the versions a rollback moved it
    away from (a person's decision, which an automatic promotion does not undo), and the versions deleted by
    `delete_versions` (no alias may point at them again)."""

    aliases: dict[str, str] = Field(default_factory=dict)
    history: dict[str, list[str]] = Field(default_factory=dict)
    rolled_back: dict[str, list[str]] = Field(default_factory=dict)
    pruned: list[str] = Field(default_factory=list)

    def held(self, rollbacks: int | None = None) -> set[str]:
        """The versions that must not be deleted: every alias's, every one the newest `rollbacks` rollbacks of
        production could restore (None: its whole history; each rollback restores the newest entry), and every one
        rolled back by hand (its record is what keeps a retrain reproducing it from being promoted again
        automatically)."""
        history = self.history.get(PRODUCTION, [])
        restorable = history if rollbacks is None else history[max(0, len(history) - rollbacks):]
        return {*self.aliases.values(), *(version for version in restorable if version != UNSET),
                *(version for versions in self.rolled_back.values() for version in versions)}


class ModelRegistry:
    """Versions and aliases of every model, on any `ObjectStore`."""

    def __init__(self, store: ObjectStore):
        self.store = store

    @classmethod
    def open(cls, uri: str, endpoint_url: str | None = None) -> "ModelRegistry":
        """Open the registry at a directory path or `s3://bucket/prefix`."""
        return cls(open_store(uri, endpoint_url))

    def _parsed(self, kind: type[Record], key: str, data: bytes) -> Record:
        """The record stored at `key`; CorruptRecord names the key and what is wrong where the bytes are not one."""
        try:
            return kind.model_validate_json(data)
        except ValidationError as error:
            problem = error.errors()[0]
            place = ".".join(str(part) for part in problem.get("loc", ()))
            where = f"{place}: " if place else ""
            raise CorruptRecord(f"{self.store.uri.rstrip('/')}/{key}: not a readable {kind.__name__} record "
                                f"({where}{problem['msg']}); restore it from a backup") from None

    def _record(self, kind: type[Record], key: str) -> Record | None:
        """The record stored at `key`, None where there is none."""
        blob = self.store.get(key)
        return None if blob is None else self._parsed(kind, key, blob.data)

    def names(self) -> list[str]:
        """Every model with at least one version."""
        return sorted({parts[0] for parts in (key.split("/") for key in self.store.list(""))
                       if len(parts) == 3 and parts[1] == "versions" and parts[2].endswith(".json")})

    def versions(self, name: str) -> list[VersionRecord]:
        """Every version of `name`, oldest first."""
        _check("model name", name)
        records = [self._record(VersionRecord, key) for key in self.store.list(f"{name}/versions/")
                   if key.endswith(".json")]  # None: deleted (by a prune) since the listing
        return sorted((record for record in records if record), key=lambda record: int(record.version))

    def _numbers(self, name: str) -> list[str]:
        """The version numbers of `name`, from the store's listing alone (no record is read)."""
        _check("model name", name)
        keys = self.store.list(f"{name}/versions/")
        return sorted((key.rsplit("/", 1)[-1][:-5] for key in keys if key.endswith(".json")), key=int)

    def _missing(self, name: str, what: str) -> RegistryError:
        """The error for a lookup that failed: no such model (naming the models there are), or `what`."""
        numbers = self._numbers(name)
        if not numbers:
            return RegistryError(f"no model {name!r} in {self.store.uri} (models: {', '.join(self.names()) or 'none'})")
        return RegistryError(f"{what} (versions: {', '.join(numbers)})")

    def get_version(self, name: str, version: str) -> VersionRecord:
        """One version's record; RegistryError names the versions there are when it is missing."""
        _check("model name", name)
        if not version.isdigit():
            raise self._missing(name, f"model {name!r} has no version {version!r}: versions are numbers")
        record = self._record(VersionRecord, f"{name}/versions/{version}.json")
        if record is None:
            raise self._missing(name, f"model {name!r} has no version {version!r}")
        return record

    def resolve(self, name: str, ref: str = PRODUCTION) -> VersionRecord:
        """A version by number or by alias."""
        if ref.isdigit():
            return self.get_version(name, ref)
        _check("model name", name)
        _check("alias", ref)
        state = self.alias_state(name)
        if ref not in state.aliases:
            raise self._missing(name, f"model {name!r} has no alias {ref!r} (aliases: "
                                      f"{', '.join(sorted(state.aliases)) or 'none'})")
        return self.get_version(name, state.aliases[ref])

    def register(self, name: str, model_dir: Path, metrics: dict | None = None, verdict: dict | None = None,
                 lineage: dict | None = None) -> VersionRecord:
        """Store a model directory as a new immutable version, or return the version that already holds the same
        files (whatever inputs a run trained them from, so that a rollback holds against a retrain that reproduces
        the model); either way, record this evaluation of it (`lineage["evaluation"]` names it) when metrics or a
        verdict are given."""
        blob, content = manifest_hash(model_dir), checked_content_hash(model_dir)
        pruned = set(self.alias_state(name).pruned)  # being deleted by `stellar prune`: not a version to return
        for record in self.versions(name):
            if record.version in pruned:
                continue
            if record.blob == blob or (content is not None and self._content(record) == content):
                if record.blob == blob:
                    self._ensure_files(name, blob, model_dir)
                self._record_evaluation(record, metrics, verdict, lineage)
                return record
        self._ensure_files(name, blob, model_dir)
        number = max((int(record.version) for record in self.versions(name)), default=0) + 1
        while True:
            record = VersionRecord(name=name, version=str(number), blob=blob, content=content,
                                   created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                   metrics=metrics or {}, verdict=verdict or {}, lineage=lineage or {})
            try:
                self.store.put_if_absent(f"{name}/versions/{number}.json",
                                         record.model_dump_json(indent=2).encode())
            except PreconditionFailed:
                number += 1
                continue
            self._ensure_files(name, blob, model_dir)  # a prune of a version of the same bytes may have just gone
            self._record_evaluation(record, metrics, verdict, lineage)
            return record

    def _ensure_files(self, name: str, blob: str, model_dir: Path) -> None:
        """Upload a version's files unless they are there. A prune deletes a deleted version's files when no record
        names them: a retrain reproducing those bytes while it does so may find them there and then gone, and is
        checked again after its record is written; a version whose files went is mended by the next registration
        of the same bytes."""
        blob_key = f"{name}/blobs/{blob}"
        if not self.store.exists(f"{blob_key}/{MANIFEST}"):
            self.store.upload_dir(Path(model_dir), blob_key)

    def _content(self, record: VersionRecord) -> str | None:
        """A version's `content_hash`: recorded, or (for a version registered before it was) from its manifest."""
        if record.content is not None:
            return record.content
        stored = self.store.get(f"{record.name}/blobs/{record.blob}/{MANIFEST}")
        try:
            return listed_content_hash(Manifest.model_validate_json(stored.data)) if stored is not None else None
        except ValueError:  # a manifest this code cannot read describes no files to compare
            return None

    def register_evaluated(self, name: str, model_dir: Path, evaluation: Path | None,
                           metrics: dict[str, Any] | None = None, verdict: dict[str, Any] | None = None
                           ) -> VersionRecord:
        """`register` with its lineage (the model's manifest hash and inputs, and the evaluation's hash) and that
        evaluation's metrics and verdict of the model; `evaluation` None: a model registered without one."""
        lineage = {"model": manifest_hash(model_dir), "inputs": read_manifest(model_dir).inputs}
        if evaluation is not None:
            lineage["evaluation"] = manifest_hash(evaluation)
            report = self.keep_report(evaluation)
            if report is not None:
                lineage["report"] = report
        return self.register(name, model_dir, metrics=metrics, verdict=verdict, lineage=lineage)

    def keep_report(self, evaluation: Path) -> str | None:
        """Copy an evaluation's report (page, Markdown summary, plots) into the registry, once per evaluation, so
        that the versions it judged point to it after the run's artifacts are gone; the key of its page (None:
        the evaluation has no report)."""
        if not (evaluation / REPORT_PARTS[0]).is_file():
            return None
        prefix = f"{REPORTS}/{manifest_hash(evaluation)}"
        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(scratch) / "report"
            copy.mkdir()
            for part in REPORT_PARTS:
                source = evaluation / part
                if source.is_dir():
                    shutil.copytree(source, copy / part)
                elif source.is_file():
                    shutil.copy2(source, copy / part)
            self.store.upload_content(copy, prefix)
        return f"{prefix}/{REPORT_PARTS[0]}"

    def report_location(self, record: VersionRecord) -> str | None:
        """Where the report of a version's latest evaluation is (a path or an s3:// URI), if it was kept."""
        key = (record.evaluated_lineage or record.lineage or {}).get("report")
        return f"{self.store.uri.rstrip('/')}/{key}" if key else None

    def _record_evaluation(self, record: VersionRecord, metrics: dict | None, verdict: dict | None,
                           lineage: dict | None) -> None:
        if not (metrics or verdict):
            return
        evaluation = (lineage or {}).get("evaluation") or hashlib.sha256(
            repr((metrics, verdict)).encode()).hexdigest()
        now = datetime.now(timezone.utc).isoformat(timespec="microseconds")  # orders two evaluations in one second
        entry = Evaluation(evaluation=evaluation, evaluated_at=now, metrics=metrics or {}, verdict=verdict or {},
                           lineage=lineage or {})
        try:  # the same evaluation recorded twice (a retried promotion) keeps its first record
            self.store.put_if_absent(f"{record.name}/evaluations/{record.version}/{evaluation}.json",
                                     entry.model_dump_json(indent=2).encode())
        except PreconditionFailed:
            pass

    def evaluations(self, name: str, version: str) -> list[Evaluation]:
        """Every evaluation recorded for a version, oldest first."""
        _check("model name", name)
        _check("version", version)
        entries = [self._record(Evaluation, key) for key in self.store.list(f"{name}/evaluations/{version}/")
                   if key.endswith(".json")]
        return sorted((entry for entry in entries if entry), key=lambda entry: entry.evaluated_at)

    def latest(self, name: str, ref: str = PRODUCTION) -> VersionRecord:
        """A version (by number or alias) with the metrics and verdict of its latest evaluation."""
        record = self.resolve(name, ref)
        entries = self.evaluations(name, record.version)
        if not entries:
            return record
        return record.model_copy(update={"metrics": entries[-1].metrics, "verdict": entries[-1].verdict,
                                         "evaluated_at": entries[-1].evaluated_at,
                                         "evaluated_lineage": (entries[-1].lineage or None)
                                         if entries[-1].lineage != record.lineage else None})

    def download(self, name: str, ref: str, dest: Path) -> tuple[VersionRecord, Path]:
        """Copy a version's model directory to `dest/<name>-<version>-<blob>` (re-used when already there).

        The blob (the content hash) is in the name: a version number alone names another model in another registry,
        or in one reset since, and a copy kept under it would be served in its place. The copy is made beside the
        target and moved there only once its files hash as registered: an interrupted copy is never re-used, and
        stored files changed in place are a RegistryError naming them, not a model served. A copy whose files
        changed since it was made (a disk error, a hand edit) is made again. One process at a time checks and makes
        the copies of `dest` (`COPIES_LOCK`): the API's workers load the same copy at once, and none may find it
        half made or take it away from another."""
        record = self.resolve(name, ref)
        target = Path(dest) / f"{name}-{record.version}-{record.blob[:16]}"
        with file_lock(Path(dest) / COPIES_LOCK, unless_read_only=True):
            if (target / MANIFEST).is_file() and self._intact(target, record):
                return record, target
            blob_key = f"{name}/blobs/{record.blob}"
            target.parent.mkdir(parents=True, exist_ok=True)
            holder = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial"))
            partial = holder / "model"
            try:
                self.store.download_dir(blob_key, partial)
                if not self._intact(partial, record):
                    raise RegistryError(f"{name} version {record.version}: the files stored in {self.store.uri}/"
                                        f"{blob_key} are not those registered (changed or removed since); register "
                                        "the model again")
                if target.exists():  # a copy that changed, or one left unfinished by older code: set aside whole
                    target.rename(holder / "stale")
                partial.rename(target)
            finally:
                shutil.rmtree(holder, ignore_errors=True)
        return record, target

    def _intact(self, model_dir: Path, record: VersionRecord) -> bool:
        """Whether a copy of a version's files holds what was registered: its manifest, and the files it lists."""
        try:
            return manifest_hash(model_dir) == record.blob and checked_content_hash(model_dir) == self._content(record)
        except (OSError, ValueError):
            return False

    def alias_state(self, name: str) -> AliasState:
        """The aliases of `name` (empty when none were ever set)."""
        return self._record(AliasState, f"{name}/aliases.json") or AliasState()

    def alias_unset(self, name: str, alias: str = PRODUCTION) -> bool:
        """True when `name`'s alias record was read and holds no `alias` (never set, or rolled back to none), as
        opposed to a registry that cannot be read now, or a model with no alias record at all."""
        _check("model name", name)
        state = self._record(AliasState, f"{name}/aliases.json")
        return state is not None and alias not in state.aliases

    def aliases(self, name: str) -> dict[str, str]:
        """alias -> version for `name`."""
        return dict(self.alias_state(name).aliases)

    def set_alias(self, name: str, alias: str, version: str, expected: Any = ANY,
                  automatic: bool = False) -> str | None:
        """Point `alias` at `version` atomically; return the version it pointed to before.

        With `expected` (a version, or None for "unset"), the change happens only if the alias still points
        there: a decision taken against one production version is never applied over another. Setting an alias
        to where it already points is a no-op, so a retried promotion succeeds again. An `automatic` change (a
        pipeline's promotion) of a version someone rolled the alias back from is `RolledBack`, decided in the same
        swap; a change by hand points the alias there again and clears that record.
        """
        _check("alias", alias)
        self.get_version(name, version)
        key = f"{name}/aliases.json"
        for attempt in range(_SWAP_ATTEMPTS):
            blob = self.store.get(key)
            state = self._parsed(AliasState, key, blob.data) if blob else AliasState()
            previous = state.aliases.get(alias)
            if previous == version:
                return previous
            if expected is not ANY and previous != expected:
                raise RegistryError(f"{name}:{alias} is now {previous!r}, not {expected!r}; not changed")
            if version in state.pruned:
                raise RegistryError(f"{name} version {version} was deleted (stellar prune); not changed")
            if automatic and version in state.rolled_back.get(alias, []):
                raise RolledBack(f"version {version} was rolled back from {alias} by hand; promote it by hand to "
                                 f"serve it again (stellar models promote {name} {version})")
            state.history.setdefault(alias, []).append(UNSET if previous is None else previous)
            state.aliases[alias] = version
            if version in state.rolled_back.get(alias, []):
                state.rolled_back[alias].remove(version)
            try:
                self.store.put_if_match(key, state.model_dump_json(indent=2).encode(), blob.etag if blob else None)
                return previous
            except PreconditionFailed:
                time.sleep(min(0.01 * 2 ** attempt, 0.2))
        raise RegistryError(f"{name}:{alias}: gave up after {_SWAP_ATTEMPTS} concurrent changes")

    def rollback(self, name: str, alias: str = PRODUCTION) -> str | None:
        """Move `alias` back to the version it pointed to before; return that version (None: the alias was unset
        before, and is unset again, so a first promotion can be undone). The version it leaves is recorded as rolled
        back (`AliasState.rolled_back`) until someone points the alias at it again."""
        _check("model name", name)
        _check("alias", alias)
        key = f"{name}/aliases.json"
        for attempt in range(_SWAP_ATTEMPTS):
            blob = self.store.get(key)
            state = self._parsed(AliasState, key, blob.data) if blob else AliasState()
            history = state.history.get(alias, [])
            passed_over = False
            while history and history[-1] in state.pruned:  # deleted (beyond `stellar prune --keep-rollbacks`)
                history.pop()
                passed_over = True
            if alias not in state.aliases:
                if not self._numbers(name):
                    raise self._missing(name, "")  # no such model: the error names the models there are
                raise NothingToRollBack(f"{name} has no {alias} version: nothing to roll back (to serve a version: "
                                        f"stellar models promote {name} VERSION)")
            if not history or (passed_over and history[-1] == UNSET and alias == PRODUCTION):  # nothing served
                deleted = " (the versions before were deleted by stellar prune)" if passed_over else ""
                raise NothingToRollBack(f"{name}:{alias} is version {state.aliases[alias]}, and no earlier change of "
                                        f"it is left to undo{deleted} (to serve another version: stellar models "
                                        f"promote {name} VERSION)")
            withdrawn = state.aliases[alias]
            if withdrawn not in state.rolled_back.setdefault(alias, []):
                state.rolled_back[alias].append(withdrawn)
            restored = history.pop()
            if restored == UNSET:
                del state.aliases[alias]
            else:
                state.aliases[alias] = restored
                if restored in state.rolled_back[alias]:  # a person points it there again
                    state.rolled_back[alias].remove(restored)
            try:
                self.store.put_if_match(key, state.model_dump_json(indent=2).encode(), blob.etag)
                return restored or None
            except PreconditionFailed:
                time.sleep(min(0.01 * 2 ** attempt, 0.2))
        raise RegistryError(f"{name}:{alias}: gave up after {_SWAP_ATTEMPTS} concurrent changes")

    def fingerprint(self) -> str:
        """A hash of every model's aliases: it changes whenever a promotion or rollback happens, and not when
        versions no alias holds are deleted (a pruned home's next run still finds its registry readers cached)."""
        digest = hashlib.sha256()
        for key in self.store.list(""):
            if key.endswith("/aliases.json"):
                state = self._record(AliasState, key)
                if state and (state.aliases or state.history or state.rolled_back):
                    digest.update(key.encode() + b"\0" + state.model_dump_json(exclude={"pruned"}).encode())
        return digest.hexdigest()

    def reports(self, record: VersionRecord) -> set[str]:
        """The keys of the kept reports (`REPORTS/<evaluation>`) that a version's record or evaluations name."""
        lineages = [record.lineage, *(entry.lineage for entry in self.evaluations(record.name, record.version))]
        return {lineage["report"].rsplit("/", 1)[0] for lineage in lineages if lineage.get("report")}

    @staticmethod
    def version_parts(record: VersionRecord, with_files: bool = True) -> list[str]:
        """The keys and prefixes that hold a version: its record, its evaluations and (`with_files`) its model
        files, which other versions of the same bytes share."""
        name, version = record.name, record.version
        return [f"{name}/versions/{version}.json", f"{name}/evaluations/{version}/",
                *([f"{name}/blobs/{record.blob}/"] if with_files else [])]

    def delete_versions(self, name: str, versions: set[str], rollbacks: int | None = None) -> list[VersionRecord]:
        """Delete these versions of `name` (record, evaluations, model files), but for the newest and any that
        `AliasState.held` holds (with `rollbacks`) when the deletion is decided; return the deleted ones' records.

        The decision is an alias-record swap that lists them as `pruned`, which `set_alias` refuses: a promotion
        racing with it either lands first (the version is then held and kept) or finds it pruned, so no alias
        ever points at a deleted version (a rollback of another alias than production passes over it). The record
        goes first, so that a retrain reproducing the model never finds a half-deleted version; its files go last,
        unless another version's record names them."""
        every = self.versions(name)
        newest = every[-1:]  # kept: a new version's number is the newest's plus one, never a deleted one's
        records = {record.version: record for record in every if record.version in versions and record not in newest}
        key = f"{name}/aliases.json"
        for attempt in range(_SWAP_ATTEMPTS):
            blob = self.store.get(key)
            state = self._parsed(AliasState, key, blob.data) if blob else AliasState()
            doomed = sorted(set(records) - state.held(rollbacks), key=int)
            if not doomed:
                return []
            state.pruned = sorted({*state.pruned, *doomed}, key=int)
            try:
                self.store.put_if_match(key, state.model_dump_json(indent=2).encode(), blob.etag if blob else None)
                break
            except PreconditionFailed:
                time.sleep(min(0.01 * 2 ** attempt, 0.2))
        else:
            raise RegistryError(f"{name}: versions not deleted: gave up after {_SWAP_ATTEMPTS} concurrent changes")
        for version in doomed:
            record_key, evaluations, _ = self.version_parts(records[version])
            self.store.delete(record_key)
            self.store.delete_tree(evaluations)
        named = {record.blob for record in self.versions(name)}
        for version in doomed:
            if records[version].blob not in named:
                self.store.delete_tree(self.version_parts(records[version])[-1])
        return [records[version] for version in doomed]

    def summary(self) -> list[dict[str, Any]]:
        """`[{"name", "versions", "aliases"}]` for every model: what `stellar models list --json` prints."""
        return [{"name": name, "versions": [record.version for record in self.versions(name)],
                 "aliases": self.aliases(name)} for name in self.names()]


def _check(what: str, value: str) -> None:
    """RegistryError unless `value` is a plain name (letters, digits, `_.-`; no path separators)."""
    if not _NAME.fullmatch(value or ""):
        raise RegistryError(f"{what} {value!r} is not a name: letters, digits, '_', '.' and '-' only, starting with a "
                            "letter or digit")
