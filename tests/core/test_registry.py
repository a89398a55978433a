"""The registry keeps versions immutable and alias changes atomic, on a directory and on S3."""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from steps.core.artifacts import ArtifactWriter
from steps.core.registry import (
    COPIES_LOCK,
    PRODUCTION,
    UNSET,
    CorruptRecord,
    ModelRegistry,
    NothingToRollBack,
    RegistryError,
)
from steps.core.storage import S3Store


def make_model(root: Path, content: str) -> Path:
    out = root / f"model-{content}"
    with ArtifactWriter(out, stage="train.test") as writer:
        writer.path("weights.txt").write_text(content)
    return out


@pytest.fixture(params=["local", "s3"])
def registry(request, tmp_path) -> ModelRegistry:
    if request.param == "local":
        return ModelRegistry.open(str(tmp_path / "registry"))
    server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    return ModelRegistry(S3Store(bucket, "registry", endpoint_url=server))


def test_register_is_idempotent_and_numbers_versions(registry, tmp_path):
    first = registry.register("sed", make_model(tmp_path, "a"))
    again = registry.register("sed", make_model(tmp_path, "a"))
    second = registry.register("sed", make_model(tmp_path, "b"))
    assert (first.version, again.version, second.version) == ("1", "1", "2")
    assert [r.version for r in registry.versions("sed")] == ["1", "2"]
    record, path = registry.download("sed", "2", tmp_path / "dl")
    assert (path / "weights.txt").read_text() == "b"


def test_the_same_files_trained_from_other_inputs_are_the_same_version(registry, tmp_path):
    source = make_model(tmp_path / "inputs", "data")
    first = registry.register("sed", make_model(tmp_path, "a"))
    retrained = tmp_path / "retrained"
    with ArtifactWriter(retrained, stage="train.test", inputs={"split": source}) as writer:
        writer.path("weights.txt").write_text("a")
    again = registry.register("sed", retrained, metrics={"n": 2}, verdict={"passed": True},
                              lineage={"evaluation": "e-retrained"})
    assert again.version == first.version == "1" and again.content == first.content is not None
    assert [entry.evaluation for entry in registry.evaluations("sed", "1")] == ["e-retrained"]
    assert registry.latest("sed", "1").evaluated_lineage == {"evaluation": "e-retrained"}  # what that run trained
    with ArtifactWriter(tmp_path / "other", stage="train.test", inputs={"split": source}) as writer:
        writer.path("weights.txt").write_text("b")
    assert registry.register("sed", tmp_path / "other").version == "2"


def test_a_model_whose_files_are_not_those_its_manifest_lists_is_refused(registry, tmp_path):
    import json

    registry.register("sed", make_model(tmp_path, "a"))
    changed = make_model(tmp_path / "changed", "a")
    (changed / "weights.txt").write_text("a, and then some")  # its manifest still lists the first bytes
    unlisted = make_model(tmp_path / "unlisted", "b")
    manifest = json.loads((unlisted / "manifest.json").read_text())
    (unlisted / "manifest.json").write_text(json.dumps({**manifest, "files": []}))
    for model in (changed, unlisted):
        with pytest.raises(ValueError, match=f"{model}: its files are not those its manifest lists"):
            registry.register("sed", model)
    assert [r.version for r in registry.versions("sed")] == ["1"]


def test_alias_moves_and_rolls_back(registry, tmp_path):
    for content in "abc":
        registry.register("sed", make_model(tmp_path, content))
    assert registry.set_alias("sed", PRODUCTION, "1") is None
    assert registry.set_alias("sed", PRODUCTION, "3") == "1"
    assert registry.resolve("sed").version == "3"
    assert registry.rollback("sed") == "1"
    assert registry.summary() == [{"name": "sed", "versions": ["1", "2", "3"], "aliases": {"production": "1"}}]
    assert registry.rollback("sed") is None  # the first promotion undone: nothing is production
    assert registry.summary() == [{"name": "sed", "versions": ["1", "2", "3"], "aliases": {}}]
    with pytest.raises(NothingToRollBack, match=r"sed has no production version: nothing to roll back \(to serve a "
                                                r"version: stellar models promote sed VERSION\)"):
        registry.rollback("sed")
    with pytest.raises(RegistryError, match="no model 'spectral'"):
        registry.rollback("spectral")


def test_a_version_a_rollback_returns_to_is_no_longer_marked_rolled_back(registry, tmp_path):
    """Rolling back to a version is a person pointing production there again: it used to stay marked, and the next
    automatic promotion of it was refused."""
    for content in "ab":
        registry.register("sed", make_model(tmp_path, content))
    registry.set_alias("sed", PRODUCTION, "1", automatic=True)
    registry.set_alias("sed", PRODUCTION, "2", automatic=True)
    registry.set_alias("sed", PRODUCTION, "1")
    assert registry.rollback("sed") == "2" and registry.rollback("sed") == "1"
    assert registry.alias_state("sed").rolled_back == {PRODUCTION: ["2"]}
    registry.set_alias("sed", PRODUCTION, "2")
    assert registry.set_alias("sed", PRODUCTION, "1", automatic=True) == "2"


def test_the_alias_record_reads_as_before(registry, tmp_path):
    """The unset state is a string in the history, so code that reads a list of versions still reads the file."""
    registry.register("sed", make_model(tmp_path, "a"))
    registry.set_alias("sed", PRODUCTION, "1")
    history = json.loads(registry.store.get("sed/aliases.json").data)["history"]
    assert history == {PRODUCTION: [""]} and all(isinstance(v, str) for v in history[PRODUCTION])


def test_a_rollback_after_a_round_trip_says_nothing_is_left_to_undo(registry, tmp_path):
    """Before, the history held no unset alias: the message said production had never pointed elsewhere, though
    it had a moment before."""
    for content in "ab":
        registry.register("sed", make_model(tmp_path, content))
    registry.set_alias("sed", PRODUCTION, "2")
    state = registry.alias_state("sed")
    state.history[PRODUCTION].clear()  # as a registry written before unset aliases were kept in the history
    registry.store.put("sed/aliases.json", state.model_dump_json().encode())
    registry.set_alias("sed", PRODUCTION, "1")
    assert registry.rollback("sed") == "2"
    with pytest.raises(NothingToRollBack, match=r"sed:production is version 2, and no earlier change of it is left "
                                                r"to undo"):
        registry.rollback("sed")


def test_expected_alias_guards_stale_decisions(registry, tmp_path):
    registry.register("sed", make_model(tmp_path, "a"))
    registry.register("sed", make_model(tmp_path, "b"))
    registry.set_alias("sed", PRODUCTION, "1")
    with pytest.raises(RegistryError, match="is now '1'"):
        registry.set_alias("sed", PRODUCTION, "2", expected=None)
    assert registry.resolve("sed").version == "1"


def test_unknown_names_are_explained(registry, tmp_path):
    registry.register("sed", make_model(tmp_path, "a"))
    with pytest.raises(RegistryError, match="no version '7' \\(versions: 1\\)"):
        registry.get_version("sed", "7")
    with pytest.raises(RegistryError, match="no alias 'production'"):
        registry.resolve("sed")


def test_a_version_evaluated_again_shows_its_latest_verdict(registry, tmp_path):
    model = make_model(tmp_path, "a")
    first = registry.register("sed", model, metrics={"n": 1}, verdict={"passed": True, "reasons": ["PASS old"]},
                              lineage={"evaluation": "e2"})
    again = registry.register("sed", model, metrics={"n": 2}, verdict={"passed": False, "reasons": ["FAIL new"]},
                              lineage={"evaluation": "e1"})  # later, whatever its hash
    registry.register("sed", model, metrics={"n": 3}, verdict={"passed": True}, lineage={"evaluation": "e2"})
    assert first.version == again.version == "1"
    assert [entry.evaluation for entry in registry.evaluations("sed", "1")] == ["e2", "e1"]  # e2 kept its record
    latest = registry.latest("sed", "1")
    assert latest.verdict == {"passed": False, "reasons": ["FAIL new"]} and latest.metrics == {"n": 2}
    assert latest.evaluated_at is not None
    assert registry.get_version("sed", "1").verdict["reasons"] == ["PASS old"]  # the record itself is immutable


@pytest.mark.parametrize("call, message", [
    (lambda r: r.resolve("", "1"), "model name '' is not a name"),
    (lambda r: r.resolve("../x", "1"), "model name '../x' is not a name"),
    (lambda r: r.resolve("sed", "../aliases"), "alias '../aliases' is not a name"),
    (lambda r: r.set_alias("sed", PRODUCTION, "../aliases"), "versions are numbers"),
    (lambda r: r.resolve("nosuch", "1"), "no model 'nosuch' in .* \\(models: sed\\)"),
    (lambda r: r.rollback("nosuch"), "no model 'nosuch'"),
])
def test_references_outside_a_models_keys_are_refused_by_name(registry, tmp_path, call, message):
    registry.register("sed", make_model(tmp_path, "a"))
    with pytest.raises(RegistryError, match=message):
        call(registry)


def test_a_folder_above_the_registry_lists_no_phantom_model(tmp_path):
    ModelRegistry.open(str(tmp_path / "registry")).register("sed", make_model(tmp_path, "a"))
    assert ModelRegistry.open(str(tmp_path)).names() == []


def test_fingerprint_changes_with_aliases_only(registry, tmp_path):
    before = registry.fingerprint()
    registry.register("sed", make_model(tmp_path, "a"))
    assert registry.fingerprint() == before
    registry.set_alias("sed", PRODUCTION, "1")
    assert registry.fingerprint() != before


def test_concurrent_promotions_lose_no_history(registry, tmp_path):
    versions = [registry.register("sed", make_model(tmp_path, str(i))).version for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda v: registry.set_alias("sed", PRODUCTION, v), versions))
    state = registry.alias_state("sed")
    # Every change was applied exactly once: the unset alias and the seven replaced versions are in the history,
    # none lost.
    history = state.history[PRODUCTION]
    assert history[0] == UNSET and sorted(history[1:] + [state.aliases[PRODUCTION]], key=int) == versions


def _register_in_process(args):
    root, content = args
    registry = ModelRegistry.open(root)
    return registry.register("sed", make_model(Path(root).parent / "models", content)).version


def test_concurrent_registrations_from_processes_get_distinct_versions(tmp_path):
    root = str(tmp_path / "registry")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        versions = pool.map(_register_in_process, [(root, f"m{i}") for i in range(8)])
    assert sorted(versions, key=int) == [str(i) for i in range(1, 9)]


def test_a_local_copy_is_never_taken_for_another_registrys_version_of_the_same_number(tmp_path):
    serving = tmp_path / "serving"  # one home's copies, shared by the registries it is pointed at
    first, other = ModelRegistry.open(str(tmp_path / "first")), ModelRegistry.open(str(tmp_path / "other"))
    first.register("sed", make_model(tmp_path / "a", "old model"))
    other.register("sed", make_model(tmp_path / "b", "new model"))
    assert (first.download("sed", "1", serving)[1] / "weights.txt").read_text() == "old model"
    assert (other.download("sed", "1", serving)[1] / "weights.txt").read_text() == "new model"


def test_stored_files_changed_in_place_are_refused_and_no_copy_is_left(tmp_path):
    registry = ModelRegistry.open(str(tmp_path / "registry"))
    record = registry.register("sed", make_model(tmp_path, "good"))
    stored = tmp_path / "registry" / "sed" / "blobs" / record.blob / "weights.txt"
    stored.write_text("edited")
    serving = tmp_path / "serving"
    with pytest.raises(RegistryError, match=r"sed version 1: the files stored in .* are not those registered"):
        registry.download("sed", "1", serving)
    assert [path.name for path in serving.iterdir()] == [COPIES_LOCK]  # neither the copy nor its partial download
    stored.write_text("good")
    (serving / f"sed-1-{record.blob[:16]}").mkdir()  # a copy an interrupted download left, without its manifest
    assert (registry.download("sed", "1", serving)[1] / "weights.txt").read_text() == "good"


def test_a_local_copy_changed_since_it_was_made_is_made_again(tmp_path):
    """A serving copy cut short (a disk error, a hand edit) was loaded as it was, and failed until removed by hand."""
    registry = ModelRegistry.open(str(tmp_path / "registry"))
    registry.register("sed", make_model(tmp_path, "good"))
    _, copy = registry.download("sed", "1", tmp_path / "serving")
    (copy / "weights.txt").write_text("go")
    assert registry.download("sed", "1", tmp_path / "serving")[1] == copy
    assert (copy / "weights.txt").read_text() == "good"


def _load_copy(root: str, serving: str, barrier, answers) -> None:
    """One API worker: the production copy, then its files read for a while (as a model loads)."""
    import time

    barrier.wait()
    try:
        _, copy = ModelRegistry.open(root).download("sed", "1", Path(serving))
        until = time.monotonic() + 0.3
        while time.monotonic() < until:
            assert len((copy / "weights.txt").read_bytes()) == 4 << 20
        answers.put("loaded")
    except Exception as error:  # noqa: BLE001 - what a worker met is the test's finding
        answers.put(repr(error))


def test_workers_loading_a_changed_copy_at_once_all_load_it(tmp_path):
    """Each worker that found the copy changed deleted and re-made it while the others were reading it."""
    model = tmp_path / "model"
    with ArtifactWriter(model, stage="train.test") as writer:
        writer.path("weights.txt").write_bytes(bytes(4 << 20))
    registry = ModelRegistry.open(str(tmp_path / "registry"))
    registry.register("sed", model)
    _, copy = registry.download("sed", "1", tmp_path / "serving")
    (copy / "weights.txt").write_bytes(bytes(100))
    context = multiprocessing.get_context("spawn")
    barrier, answers = context.Barrier(4), context.Queue()
    workers = [context.Process(target=_load_copy, args=(str(tmp_path / "registry"), str(tmp_path / "serving"),
                                                         barrier, answers)) for _ in range(4)]
    for worker in workers:
        worker.start()
    assert sorted(answers.get(timeout=120) for _ in workers) == ["loaded"] * 4
    for worker in workers:
        worker.join(timeout=60)


@pytest.mark.parametrize("key, damage", [("sed/aliases.json", b"{garbage"), ("sed/versions/1.json", b'{"x":'),
                                         ("sed/versions/1.json", b'{"name": "sed"}')])
def test_a_record_that_does_not_parse_is_named_with_what_is_wrong(registry, tmp_path, key, damage):
    record = registry.register("sed", make_model(tmp_path, "a"))
    registry.set_alias("sed", PRODUCTION, record.version)
    registry.store.put(key, damage)
    calls = [lambda: registry.resolve("sed"), registry.summary, lambda: registry.set_alias("sed", "candidate", "1")]
    if key.endswith("aliases.json"):
        calls += [lambda: registry.rollback("sed"), registry.fingerprint]
    for call in calls:
        with pytest.raises(CorruptRecord) as raised:
            call()
        message = str(raised.value)
        assert message.startswith(f"{registry.store.uri.rstrip('/')}/{key}: not a readable ")
        assert "pydantic" not in message and "\n" not in message


def test_a_folder_registry_is_readable_by_other_users_as_its_umask_allows(tmp_path, monkeypatch):
    """A serving pod may run as another user than the workflow that wrote the registry: nothing in it may be left
    owner-only by the temporary files and folders it is written through, nor by a model folder that was private."""
    from steps.core import permissions

    monkeypatch.setattr(permissions, "UMASK", 0o022)
    private = make_model(tmp_path, "a")
    for entry in [private, *private.rglob("*")]:
        entry.chmod(0o700 if entry.is_dir() else 0o600)
    registry = ModelRegistry.open(str(tmp_path / "registry"))
    registry.register("sed", private)
    registry.set_alias("sed", PRODUCTION, "1")
    registry.download("sed", "1", tmp_path / "copy")
    entries = [*(tmp_path / "registry").rglob("*"), *(tmp_path / "copy").rglob("*")]
    assert any(entry.name == "aliases.json" for entry in entries)
    assert any(entry.name == "weights.txt" and "blobs" in entry.parts for entry in entries)
    unreadable = [str(entry) for entry in entries if not entry.name.endswith(".lock")
                  and entry.stat().st_mode & 0o044 != 0o044]
    assert unreadable == []


def test_a_version_points_to_its_evaluation_s_report_kept_in_the_registry(registry, tmp_path):
    """`stellar models show` must find the report after the run's artifacts are gone: the registry keeps a copy,
    once per evaluation, and the versions it judged name it."""
    evaluation = tmp_path / "evaluation"
    with ArtifactWriter(evaluation, stage="evaluate") as writer:
        writer.path("report.html").write_text("<html>report</html>")
        writer.path("report.md").write_text("# report")
        writer.path("plots").mkdir()
        writer.path("plots/sed_teff.png").write_bytes(b"\x89PNG")
        writer.path("predictions").mkdir()
        writer.path("predictions/sed.parquet").write_bytes(b"not kept")
    first = registry.register_evaluated("sed", make_model(tmp_path, "a"), evaluation)
    other = registry.register_evaluated("spectral", make_model(tmp_path, "b"), evaluation)
    location = registry.report_location(registry.latest("sed", first.version))
    assert location == registry.report_location(registry.latest("spectral", other.version))
    key = location[len(registry.store.uri) + 1:]
    folder = key.rsplit("/", 1)[0]
    assert registry.store.get(key).data == b"<html>report</html>"
    assert registry.store.list(folder + "/") == [f"{folder}/plots/sed_teff.png", f"{folder}/report.html",
                                                 f"{folder}/report.md"]
    assert registry.names() == ["sed", "spectral"]  # the reports folder is no model
    assert registry.report_location(registry.register_evaluated("sed", make_model(tmp_path, "c"), None)) is None


def test_deleted_versions_go_with_their_files_and_rollbacks_still_reach_every_held_version(registry, tmp_path):
    for content in "abcde":
        registry.register("sed", make_model(tmp_path, content), metrics={"n": 1}, verdict={"passed": True},
                          lineage={"evaluation": f"e-{content}"})
    for version in ("1", "2", "3", "4"):
        registry.set_alias("sed", "candidate", version)
    for version in ("2", "3"):
        registry.set_alias("sed", PRODUCTION, version)
    before, blob = registry.fingerprint(), registry.get_version("sed", "1").blob
    deleted = registry.delete_versions("sed", {"1", "2", "3", "4"})  # 2 is in production's history, 3 and 4 aliased
    assert [record.version for record in deleted] == ["1"]
    assert [record.version for record in registry.versions("sed")] == ["2", "3", "4", "5"]
    assert not registry.store.list(f"sed/blobs/{blob}/") and not registry.store.list("sed/evaluations/1/")
    assert registry.fingerprint() == before  # a pruned home's registry readers stay cached
    with pytest.raises(RegistryError, match="no version '1'"):
        registry.set_alias("sed", PRODUCTION, "1")
    assert registry.rollback("sed") == "2" and registry.rollback("sed") is None
    assert registry.rollback("sed", "candidate") == "3" and registry.rollback("sed", "candidate") == "2"
    assert registry.rollback("sed", "candidate") is None  # passing over version 1, deleted
    assert registry.delete_versions("sed", {"1", "5"}) == []  # the newest stays: no number is given twice


def test_a_promotion_racing_with_a_deletion_is_never_left_on_a_deleted_version(registry, tmp_path):
    """Either the promotion lands first, and the version is kept, or the deletion does, and the promotion is
    refused, even where it had read the version's record before (a crashed deletion leaves its record, too)."""
    for content in "abc":
        registry.register("sed", make_model(tmp_path, content))
    swap = registry.store.put_if_match

    def promotion_first(key, data, etag):
        registry.store.put_if_match = swap
        registry.set_alias("sed", PRODUCTION, "1")
        swap(key, data, etag)

    registry.store.put_if_match = promotion_first
    assert [record.version for record in registry.delete_versions("sed", {"1", "2"})] == ["2"]
    assert registry.aliases("sed") == {PRODUCTION: "1"} and registry.get_version("sed", "1")
    state = registry.alias_state("sed")
    registry.store.put("sed/aliases.json", state.model_copy(update={"pruned": ["2", "3"]}).model_dump_json().encode())
    with pytest.raises(RegistryError, match="version 3 was deleted"):
        registry.set_alias("sed", PRODUCTION, "3")
    assert registry.aliases("sed") == {PRODUCTION: "1"}


def test_a_version_whose_files_a_racing_prune_deleted_is_mended_by_registering_its_bytes_again(registry, tmp_path):
    """A retrain reproducing a version being pruned can find its files there and then gone: registering the same
    bytes again (next week's retrain) uploads them, and the version downloads."""
    model = make_model(tmp_path, "a")
    record = registry.register("m", model)
    registry.store.delete_tree(f"m/blobs/{record.blob}/")
    with pytest.raises(Exception):
        registry.download("m", record.version, tmp_path / "broken")
    assert registry.register("m", model).version == record.version
    _, copy = registry.download("m", record.version, tmp_path / "mended")
    assert (copy / "weights.txt").read_text() == "a"
