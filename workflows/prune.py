"""`stellar prune`: keep a home's newest runs and the registry versions still of use, and delete the rest.

What goes, while no run holds the home (`run.home_lock`, which prune holds throughout):

- run records: `runs/<run>/` (record and logs) of every run but the newest `--keep-runs`;
- cache entries and artifacts that this home's run records name and no kept run needs: an entry stays while a kept
  run's record names its key or a kept run wrote it (a registry reader's entry, filed again under the aliases its
  run left), and every artifact that a remaining entry or a kept record names stays, so a kept run's inputs are
  still a cache hit. What no record of this home names (another home's, on a shared `--artifact-store`) stays;
- registry versions of each model that no alias points at, that none of the newest `--keep-rollbacks` rollbacks of
  production can restore, that no one rolled back by hand and that are not among its newest `--keep-versions`; the
  kept reports that only they named; their copies in `serving/`.

The store's entries go before the run records that name them, so a prune stopped halfway leaves nothing that a later
prune cannot find.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from steps.core.space import human_bytes

if TYPE_CHECKING:  # every `stellar` command builds the parser that names prune: no pyarrow at start-up for it
    from steps.core.registry import ModelRegistry
    from steps.core.storage import ObjectStore
    from workflows.runs_cli import RunRecord

DEFAULT_KEEP_RUNS = 10
DEFAULT_KEEP_VERSIONS = 5
DEFAULT_KEEP_ROLLBACKS = 10  # of production: ten weeks of weekly promotions
RUN_RECORDS, CACHE_ENTRIES, ARTIFACTS, VERSIONS, REPORTS, SERVING = (
    "run records", "cache entries", "artifacts", "registry versions", "reports", "serving copies")
KINDS = (RUN_RECORDS, CACHE_ENTRIES, ARTIFACTS, VERSIONS, REPORTS, SERVING)


@dataclass(frozen=True)
class Keep:
    """How much a prune keeps: run records, newest versions of each model, rollbacks of production."""

    runs: int
    versions: int
    rollbacks: int


@dataclass(frozen=True)
class Doomed:
    """One thing a prune deletes: its kind, what it is (shown), where it is (a path, a store key or a model
    version) and its size in bytes."""

    kind: str
    what: str
    where: str
    size: int


def add_prune_command(sub: argparse._SubParsersAction, add_home) -> None:
    """Add `prune` to the `stellar` parser."""
    prune = sub.add_parser("prune", help="delete old runs, the artifacts only they used, and unused model versions",
                           description=__doc__.split("\n\n")[0])
    add_home(prune)
    prune.add_argument("--keep-runs", default=str(DEFAULT_KEEP_RUNS), metavar="N",
                       help=f"run records to keep, newest first (default {DEFAULT_KEEP_RUNS})")
    _add_registry_options(prune)
    prune.add_argument("--artifact-store", help="the runs' artifact store, as given to stellar run (default "
                                                "HOME/artifacts)")
    prune.add_argument("--s3-endpoint", help="S3 endpoint URL (MinIO, moto, ...) for s3:// stores")
    prune.add_argument("--registry", help="registry URI (default HOME/registry)")
    prune.set_defaults(handler=prune_command)


def add_models_prune_command(models_sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `prune` to `stellar models`: the registry part of `stellar prune` alone, for a registry that no home's
    runs fill (a cluster's, where Argo deletes each run's artifacts with its workflow)."""
    prune = models_sub.add_parser(
        "prune", help="delete the versions that no alias, rollback or --keep-versions holds",
        description="Delete the model versions that no alias points at, that none of the newest --keep-rollbacks "
                    "rollbacks of production can restore, that no one rolled back by hand and that are not among "
                    "the newest --keep-versions, with the reports only they name (the registry part of "
                    "`stellar prune`; the S3 endpoint comes from AWS_ENDPOINT_URL).")
    _add_registry_options(prune)
    prune.set_defaults(handler=models_prune_command)
    return prune


def _add_registry_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--keep-versions", default=str(DEFAULT_KEEP_VERSIONS), metavar="K",
                         help="newest versions of each model to keep besides those an alias or a rollback of "
                              f"production holds (default {DEFAULT_KEEP_VERSIONS})")
    command.add_argument("--keep-rollbacks", default=str(DEFAULT_KEEP_ROLLBACKS), metavar="R",
                         help="rollbacks of production that `stellar models rollback` can still make, each "
                              f"restoring the version before (default {DEFAULT_KEEP_ROLLBACKS})")
    command.add_argument("--dry-run", action="store_true", help="list what would go and the bytes it would free")


def prune_command(args: argparse.Namespace) -> int:
    """Run `stellar prune`; return the exit status (2: bad input; 1: a run holds the home, or a store or registry
    that did not answer or lost a race: trying again may work)."""
    from steps.core.storage import StoreUnreachable
    from workflows.cli import home_dir
    from workflows.run import HomeBusy, home_lock

    home = home_dir(args.home)
    try:
        keep = Keep(_at_least_one("--keep-runs", args.keep_runs, "run"), *_registry_keep(args))
        if not home.is_dir():
            raise ValueError(f"--home {home}: no such folder")
        store = _existing_store("--artifact-store " if args.artifact_store else "--home ",
                                args.artifact_store or str(home / "artifacts"), args.s3_endpoint, args.dry_run)
        registry = _existing_store("--registry " if args.registry else "--home ",
                                   args.registry or str(home / "registry"), args.s3_endpoint, args.dry_run)
    except ValueError as error:
        print(f"stellar prune: {error}", file=sys.stderr)
        return 1 if isinstance(error, StoreUnreachable) else 2
    # A dry run deletes nothing: on a home it cannot write (a read-only mount) it lists without the home's lock
    read_only = args.dry_run and not os.access(home, os.W_OK)
    try:
        with contextlib.nullcontext() if read_only else home_lock(home, "prune", doing="stellar"):
            return _reported("stellar prune", lambda: _prune(home, store, _open_registry(registry), keep,
                                                             args.dry_run))
    except HomeBusy as error:
        print(f"stellar prune: {error}", file=sys.stderr)
        return 1


def models_prune_command(args: argparse.Namespace) -> int:
    """Run `stellar models prune`; return the exit status (2: bad input or a registry that refuses; 1: a registry
    that did not answer, or a model whose versions a race kept from deleting: trying again may work). Copies in
    HOME/serving go too where the registry is the home's (no --registry)."""
    from steps.core.storage import StoreUnreachable
    from workflows.cli import home_dir

    home = home_dir(args.home)
    option, uri = ("--registry ", args.registry) if args.registry else ("--home ", str(home / "registry"))
    try:
        keep = Keep(0, *_registry_keep(args))
        store = _existing_store(option, uri, None, args.dry_run)
        if store is None:
            raise ValueError(f"{option}{args.registry or home}: no such registry folder"
                             + ("" if args.registry else f" ({uri})"))
    except ValueError as error:
        print(f"stellar models prune: {error}", file=sys.stderr)
        return 1 if isinstance(error, StoreUnreachable) else 2
    serving = None if args.registry else home / "serving"
    return _reported("stellar models prune", lambda: _prune_registry(_open_registry(store), keep, serving,
                                                                     args.dry_run))


def _registry_keep(args: argparse.Namespace) -> tuple[int, int]:
    return (_at_least_one("--keep-versions", args.keep_versions, "version"),
            _at_least_one("--keep-rollbacks", args.keep_rollbacks, "rollback"))


def _reported(command: str, action) -> int:
    """`action()`'s exit status, or one line where a folder or an S3 store refuses (exit 2) or an S3 store did not
    answer (exit 1, which a retry may cure): what was deleted before it stays deleted."""
    from botocore.exceptions import BotoCoreError, ClientError

    from steps.core.registry import CorruptRecord
    from steps.core.storage import transient_s3_error

    try:
        return action()
    except CorruptRecord as error:  # a registry record that does not parse: named, nothing more is deleted
        print(f"{command}: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a read-only home or registry
        where = f" {error.filename}:" if error.filename else ""
        print(f"{command}:{where} {error.strerror or error}", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError) as error:  # AccessDenied (2), or no connection, a 5xx, throttling (1)
        print(f"{command}: S3: {error}", file=sys.stderr)
        return 1 if transient_s3_error(error) else 2


def _at_least_one(option: str, text: str, what: str) -> int:
    from workflows.training_cli import at_least

    try:
        return at_least(1, what)(text)
    except argparse.ArgumentTypeError as error:
        raise ValueError(f"{option} {error}") from None


def _open_registry(store: ObjectStore | None) -> ModelRegistry | None:
    from steps.core.registry import ModelRegistry

    return ModelRegistry(store) if store else None


def _existing_store(option: str, uri: str, s3_endpoint: str | None, dry_run: bool = False) -> ObjectStore | None:
    """The store at `uri`, checked as `stellar run` checks it (for a `dry_run`, which writes nothing, only opened);
    None for a folder that is not there (nothing to prune, and nothing is made)."""
    from workflows.run import usable_store

    if "://" not in uri and not Path(uri).expanduser().is_dir():
        return None
    return usable_store(option, uri, s3_endpoint, probe=not dry_run)


def _prune(home: Path, store: ObjectStore | None, registry: ModelRegistry | None, keep: Keep,
           dry_run: bool) -> int:
    from workflows.runs_cli import read_runs

    records = read_runs(home)
    kept = records[:keep.runs]
    doomed = [Doomed(RUN_RECORDS, record.run, str(record.path.parent), _folder_size(record.path.parent))
              for record in records[keep.runs:]]
    try:
        doomed += store_plan(store, records, kept)
    except ValueError as error:
        print(f"stellar prune: {error}", file=sys.stderr)
        return 2
    if registry is not None:
        doomed += registry_plan(registry, keep, home / "serving")
    return _carry_out(doomed, store, registry, keep, dry_run, home, "stellar prune")


def _prune_registry(registry: ModelRegistry, keep: Keep, serving: Path | None, dry_run: bool) -> int:
    return _carry_out(registry_plan(registry, keep, serving), None, registry, keep, dry_run, registry.store.uri,
                      "stellar models prune")


def _carry_out(doomed: list[Doomed], store: ObjectStore | None, registry: ModelRegistry | None, keep: Keep,
               dry_run: bool, where: Path | str, command: str) -> int:
    """List what `doomed` holds (a dry run) or delete it, and print the totals under `where`; exit status 1 where a
    model's versions could not be deleted (its aliases kept changing), which a later prune can do."""
    if dry_run:
        _print_items(doomed, where)
        _print_totals(doomed, where, "would free" if doomed else "nothing to prune")
        return 0
    done, failed = _delete(doomed, store, registry, keep.rollbacks, command)
    _print_totals(done, where, "deleted" if done else "nothing to prune")
    return 1 if failed else 0


def store_plan(store: ObjectStore | None, records: list[RunRecord], kept: list[RunRecord]) -> list[Doomed]:
    """The cache entries and artifacts of `store` that the home's `records` name and that no `kept` record needs.
    ValueError where the kept runs' artifacts are not in it: a store other than theirs, whose records would go and
    leave their entries where no later prune finds them."""
    from workflows.local.cache import ARTIFACT_PREFIX, ENTRY_PREFIX, CacheEntry

    ours_runs, kept_runs = {record.run for record in records}, {record.run for record in kept}
    ours_keys, kept_keys = _task_keys(records), _task_keys(kept)
    ours_artifacts, kept_artifacts = _artifacts_named(records), _artifacts_named(kept)
    if kept_artifacts and (store is None or not any(store.listing_fingerprint(key) for key in kept_artifacts)):
        where = store.uri if store else "HOME/artifacts (no such folder)"
        raise ValueError(f"none of the artifacts the kept runs' records name is in {where}: give --artifact-store "
                         "(and --s3-endpoint) as given to stellar run")
    if store is None:
        return []
    doomed = []
    for path, size in store.sizes(ENTRY_PREFIX).items():
        blob = store.get(path) if path.endswith(".json") else None
        if blob is None:
            continue
        key = path.removeprefix(ENTRY_PREFIX).removesuffix(".json")
        try:
            entry = CacheEntry.model_validate_json(blob.data)
        except ValueError:  # unreadable: of use to no run
            entry = None
        outputs = {artifact.key for artifact in entry.outputs.values()} if entry else set()
        run = entry.run if entry else None
        made_here = run in ours_runs if entry else key in ours_keys  # another home's entry stays: its runs need it
        if made_here and not (key in kept_keys or run in kept_runs):
            doomed.append(Doomed(CACHE_ENTRIES, f"{entry.task} of run {run}" if entry else f"{path} (unreadable)",
                                 path, size))
            ours_artifacts |= outputs
        else:
            kept_artifacts |= outputs
    named, artifacts = ours_artifacts | kept_artifacts, defaultdict(int)
    for path, size in store.sizes(ARTIFACT_PREFIX).items():
        parts = path.split("/")
        if any(part.startswith(".") for part in parts):  # staged by an upload in progress (`LocalStore._staged`)
            continue
        prefixes = ["/".join(parts[:end]) for end in range(2, len(parts))]
        artifacts[next((prefix for prefix in prefixes if prefix in named), "/".join(parts[:4]))] += size
    ours = {prefix for prefix in artifacts if prefix.split("/")[1] in ours_keys or prefix in ours_artifacts}
    return sorted(doomed, key=lambda item: item.what) + [
        Doomed(ARTIFACTS, prefix, prefix, size) for prefix, size in sorted(artifacts.items())
        if prefix in ours and prefix not in kept_artifacts]


def _task_keys(records: list[RunRecord]) -> set[str]:
    return {task["key"] for record in records for task in record.tasks.values()
            if isinstance(task, dict) and task.get("key")}


def _artifacts_named(records: list[RunRecord]) -> set[str]:
    return {artifact["key"] for record in records for task in record.tasks.values() if isinstance(task, dict)
            for artifact in (task.get("outputs") or {}).values() if isinstance(artifact, dict) and "key" in artifact}


def registry_plan(registry: ModelRegistry, keep: Keep, serving: Path | None) -> list[Doomed]:
    """The versions of each model that no alias, none of the newest `keep.rollbacks` rollbacks of production and no
    rollback by hand holds, but for the newest `keep.versions`; the reports only they name; their copies in
    `serving`. A version an earlier prune stopped halfway through deleting goes too."""
    doomed, kept_reports, their_reports, pruned = [], set(), set(), set()
    for name in registry.names():
        state = registry.alias_state(name)
        records = registry.versions(name)
        staying = (state.held(keep.rollbacks) | {record.version for record in records[-keep.versions:]}) - set(
            state.pruned)
        kept_blobs = {record.blob for record in records if record.version in staying}
        for record in records:
            if record.version in staying:
                kept_reports |= registry.reports(record)
                continue
            their_reports |= registry.reports(record)
            parts = registry.version_parts(record, with_files=record.blob not in kept_blobs)
            doomed.append(Doomed(VERSIONS, f"{name} version {record.version}", f"{name}@{record.version}",
                                 sum(sum(registry.store.sizes(part).values()) for part in parts)))
            pruned.add((name, record.version, record.blob))
    doomed += [Doomed(REPORTS, prefix, prefix, sum(registry.store.sizes(f"{prefix}/").values()))
               for prefix in sorted(their_reports - kept_reports)]
    return doomed + serving_plan(serving, pruned)


def serving_plan(serving: Path | None, pruned: set[tuple[str, str, str]]) -> list[Doomed]:
    """The local copies (`ModelRegistry.download`'s `<name>-<version>-<blob[:16]>`) of deleted versions (`pruned`:
    (name, version, blob); the blob tells this registry's version from another registry's of the same number)."""
    if serving is None or not serving.is_dir():
        return []
    return [Doomed(SERVING, copy.name, str(copy), _folder_size(copy)) for copy in sorted(serving.iterdir())
            if copy.is_dir() and _served_version(copy) in _copy_names(pruned)]


def _copy_names(versions: set[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
    return {(name, version, blob[:16]) for name, version, blob in versions}


def _served_version(copy: Path) -> tuple[str, str, str] | None:
    parts = copy.name.rsplit("-", 2)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None


def _delete(doomed: list[Doomed], store: ObjectStore | None, registry: ModelRegistry | None,
            rollbacks: int, command: str) -> tuple[list[Doomed], set[str]]:
    """Delete what the plan lists, the store's entries before the run records that name them; return what was
    deleted, and the models whose versions could not be. A version an alias (or one of the newest `rollbacks`
    rollbacks) holds by now stays, with its reports and serving copies."""
    from steps.core.registry import RegistryError

    done = []
    for item in doomed:
        if item.kind == CACHE_ENTRIES:
            store.delete(item.where)
        elif item.kind == ARTIFACTS:
            store.delete_tree(item.where)
        else:
            continue
        done.append(item)
    versions = defaultdict(set)
    for item in doomed:
        if item.kind == VERSIONS:
            name, version = item.where.split("@")
            versions[name].add(version)
    deleted, failed = set(), set()
    for name, numbers in versions.items():
        try:
            deleted |= {f"{name}@{record.version}" for record in registry.delete_versions(name, numbers, rollbacks)}
        except RegistryError as error:
            failed.add(name)
            print(f"{command}: {error}", file=sys.stderr)
    for item in doomed:
        if item.kind == VERSIONS and item.where not in deleted and item.where.split("@")[0] not in failed:
            print(f"{command}: {item.what} kept: an alias or a rollback of production holds it now", file=sys.stderr)
    done += [item for item in doomed if item.kind == VERSIONS and item.where in deleted]
    if any(item.kind in (REPORTS, SERVING) for item in doomed):
        names = registry.names()
        named = set().union(*(registry.reports(record) for name in names for record in registry.versions(name)))
        pruned = {(name, version) for name in names for version in registry.alias_state(name).pruned}
        for item in doomed:
            if item.kind == REPORTS and item.where not in named:
                registry.store.delete_tree(item.where)
                done.append(item)
            elif item.kind == SERVING and _served_version(Path(item.where))[:2] in pruned:
                shutil.rmtree(item.where, ignore_errors=True)
                done.append(item)
    for item in doomed:
        if item.kind == RUN_RECORDS:
            shutil.rmtree(item.where, ignore_errors=True)
            done.append(item)
    return done, failed


def _folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _print_items(doomed: list[Doomed], where: Path | str) -> None:
    if doomed:
        print(f"{where}: a prune would delete")
        _print_table(("kind", "what", "size"), [(item.kind, item.what, human_bytes(item.size)) for item in doomed])


def _print_totals(items: list[Doomed], where: Path | str, verb: str) -> None:
    """Counts and bytes per kind, as a table, or one line when there is nothing."""
    if not items:
        print(f"{where}: {verb}")
        return
    print(f"{where}: {verb} {human_bytes(sum(item.size for item in items))}")
    kinds = [[item for item in items if item.kind == kind] for kind in KINDS]
    _print_table(("kind", "count", "size"), [(of_kind[0].kind, str(len(of_kind)),
                                              human_bytes(sum(item.size for item in of_kind)))
                                             for of_kind in kinds if of_kind])


def _print_table(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A rich table, sizes and counts right-aligned; whole lines when piped."""
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in columns:
        table.add_column(column, justify="right" if column in ("count", "size") else "left")
    for row in rows:
        table.add_row(*row)
    Console(width=None if sys.stdout.isatty() else 160).print(table)
