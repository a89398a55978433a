"""`stellar prune`: old runs, the artifacts only they used and unused registry versions go; what the newest runs,
the aliases and a rollback need stays."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steps.core.artifacts import ArtifactWriter
from steps.core.registry import CANDIDATE, PRODUCTION, ModelRegistry, RolledBack
from steps.core.storage import LocalStore, ObjectStore, S3Store
from workflows.cli import main
from workflows.local.cache import ArtifactCache
from workflows.local.executor import CACHED, SUCCEEDED, LocalExecutor, TaskState
from workflows.run import home_lock

STAGE = ("import sys, pathlib; out = pathlib.Path(sys.argv[1]); out.mkdir(parents=True); "
         "(out / 'x').write_text(sys.argv[2] * 1000)")


def two_task_template() -> dict:
    """`base` (the same in every run, so later runs take it from the cache) -> `make` (one output per `note`)."""
    def container(text: str) -> dict:
        return {"image": "test", "command": ["python", "-c", STAGE], "args": ["{{outputs.artifacts.out.path}}", text]}

    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "WorkflowTemplate", "metadata": {"name": "tiny"},
            "spec": {"entrypoint": "main", "arguments": {"parameters": [{"name": "note", "value": "v1"}]},
                     "templates": [
                         {"name": "main", "dag": {"tasks": [
                             {"name": "base", "template": "base"},
                             {"name": "make", "template": "make", "depends": "base",
                              "arguments": {"artifacts": [
                                  {"name": "base", "from": "{{tasks.base.outputs.artifacts.out}}"}]}}]}},
                         {"name": "base", "outputs": {"artifacts": [{"name": "out", "path": "/out/o"}]},
                          "container": container("b")},
                         {"name": "make", "inputs": {"artifacts": [{"name": "base", "path": "/in/b"}]},
                          "outputs": {"artifacts": [{"name": "out", "path": "/out/o"}]},
                          "container": container("{{workflow.parameters.note}}")}]}}


def run(home: Path, note: str, store: ObjectStore | None = None) -> dict[str, TaskState]:
    """One run of the tiny template on `home` (its artifacts in `store`, default HOME/artifacts); its tasks."""
    executor = LocalExecutor(two_task_template(), ArtifactCache(store or LocalStore(home / "artifacts")),
                             home / "runs", {"note": note})
    result = executor.run()
    assert result.succeeded
    return result.tasks


def prune(home: Path, *options: str) -> int:
    return main(["prune", "--home", str(home), *options])


def files(root: Path) -> dict[str, int]:
    return {str(path.relative_to(root)): path.stat().st_mtime_ns for path in root.rglob("*")
            if path.is_file() and path.name != "run.lock"}


def test_old_runs_and_the_artifacts_only_they_used_go_and_the_newest_run_stays_cached(tmp_path, capsys):
    home = tmp_path / "home"
    first, second, third = (run(home, note) for note in ("v1", "v2", "v3"))
    assert third["base"].status == CACHED  # its entry and artifact were made by the first run, which goes
    assert prune(home, "--keep-runs", "1") == 0
    out = capsys.readouterr().out
    assert "deleted" in out and "run records" in out and "artifacts" in out
    assert [path.name for path in (home / "runs").iterdir()] == [Path(third["make"].log).parents[1].name]
    store = LocalStore(home / "artifacts")
    for old in (first, second):
        assert store.listing_fingerprint(old["make"].outputs["out"].key) is None
        assert store.get(f"cache/{old['make'].key}.json") is None
    assert store.listing_fingerprint(third["base"].outputs["out"].key) is not None
    again = run(home, "v3")
    assert {task.status for task in again.values()} == {CACHED}
    rebuilt = run(home, "v1")  # an old run's inputs: its deleted outputs are made again
    assert (rebuilt["base"].status, rebuilt["make"].status) == (CACHED, SUCCEEDED)


def test_a_dry_run_deletes_nothing_and_a_second_prune_deletes_nothing(tmp_path, capsys):
    home = tmp_path / "home"
    for note in ("v1", "v2"):
        run(home, note)
    before = files(home)
    assert prune(home, "--keep-runs", "1", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "would free" in out and "run records" in out and "make of run" in out
    assert files(home) == before
    assert prune(home, "--keep-runs", "1") == 0
    capsys.readouterr()
    after = files(home)
    assert len(after) < len(before)
    assert prune(home, "--keep-runs", "1") == 0
    assert "nothing to prune" in capsys.readouterr().out
    assert files(home) == after


def test_a_dry_run_lists_a_home_it_cannot_write_and_a_prune_refuses_it(tmp_path, capsys, monkeypatch):
    """A read-only home (a mount) refused even the dry run: its lock and its stores' probe want to write."""
    import os

    home = tmp_path / "home"
    for note in ("v1", "v2"):
        run(home, note)
    before = files(home)
    writable = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: not (mode & os.W_OK and str(path).startswith(
        str(home))) and writable(path, mode, **kw))
    assert prune(home, "--keep-runs", "1", "--dry-run") == 0
    assert "would free" in capsys.readouterr().out
    assert files(home) == before and not (home / "run.lock").exists()
    assert prune(home, "--keep-runs", "1") == 2
    assert capsys.readouterr().err == f"stellar prune: --home {home / 'artifacts'}: the folder is not writable\n"
    assert files(home) == before


def test_what_another_home_sharing_the_store_made_stays(tmp_path):
    shared = LocalStore(tmp_path / "shared")
    run(tmp_path / "a", "a1", shared)
    other = run(tmp_path / "b", "b1", shared)
    run(tmp_path / "a", "a2", shared)
    assert prune(tmp_path / "a", "--keep-runs", "1", "--artifact-store", str(tmp_path / "shared")) == 0
    again = run(tmp_path / "b", "b1", shared)
    assert {task.status for task in again.values()} == {CACHED}
    assert again["make"].outputs == other["make"].outputs


def test_an_s3_artifact_store_is_pruned_alike(tmp_path, s3_server, s3_bucket, capsys):
    store = S3Store(s3_bucket, "stellar", endpoint_url=s3_server)
    home = tmp_path / "home"
    old, new = run(home, "v1", store), run(home, "v2", store)
    options = ["--artifact-store", f"s3://{s3_bucket}/stellar", "--s3-endpoint", s3_server]
    assert prune(home, "--keep-runs", "1", *options) == 0
    assert "deleted" in capsys.readouterr().out
    assert store.listing_fingerprint(old["make"].outputs["out"].key) is None
    assert store.get(f"cache/{old['make'].key}.json") is None
    assert prune(home, "--keep-runs", "1", *options) == 0
    assert "nothing to prune" in capsys.readouterr().out
    assert new["make"].outputs["out"].key in {"/".join(key.split("/")[:4]) for key in store.list("artifacts/")}
    assert {task.status for task in run(home, "v2", store).values()} == {CACHED}


def test_another_artifact_store_than_the_runs_is_refused_before_anything_goes(tmp_path, capsys):
    home = tmp_path / "home"
    for note in ("v1", "v2"):
        run(home, note)
    before = files(home)
    (tmp_path / "elsewhere").mkdir()
    assert prune(home, "--keep-runs", "1", "--artifact-store", str(tmp_path / "elsewhere")) == 2
    assert "give --artifact-store" in capsys.readouterr().err
    assert files(home) == before


def make_model(root: Path, content: str) -> Path:
    with ArtifactWriter(root / f"model-{content}", stage="train.test") as writer:
        writer.path("weights.txt").write_text(content * 1000)
    return root / f"model-{content}"


def test_aliased_and_rollback_versions_stay_and_rollback_still_works(tmp_path, capsys):
    """Of six versions: production 5 (promoted over 2 over 4, so both stay for rollbacks), candidate 6 (the newest
    too); 1 and 3 go, with the report only they named and their serving copies."""
    home = tmp_path / "home"
    registry = ModelRegistry.open(str(home / "registry"))
    for number, content in enumerate("abcdef", start=1):
        report = "reports/only-old" if number in (1, 3) else "reports/shared"
        registry.register("sed", make_model(tmp_path, content), lineage={"report": f"{report}/report.html"})
    for report in ("reports/only-old", "reports/shared"):
        registry.store.put(f"{report}/report.html", b"<html></html>")
    for version in ("4", "2", "5"):
        registry.set_alias("sed", PRODUCTION, version)
    registry.set_alias("sed", "candidate", "6")
    for version in ("1", "5"):
        registry.download("sed", version, home / "serving")
    assert prune(home, "--keep-versions", "1", "--dry-run") == 0
    assert "sed version 1" in capsys.readouterr().out and len(registry.versions("sed")) == 6
    assert prune(home, "--keep-versions", "1") == 0
    assert "registry versions" in capsys.readouterr().out
    assert [record.version for record in registry.versions("sed")] == ["2", "4", "5", "6"]
    assert registry.store.list("reports/only-old/") == [] and registry.store.list("reports/shared/")
    assert [copy.name.split("-")[1] for copy in (home / "serving").iterdir() if copy.is_dir()] == ["5"]
    assert prune(home, "--keep-versions", "1") == 0
    assert "nothing to prune" in capsys.readouterr().out
    for restored in ("2", "4"):
        assert main(["models", "rollback", "sed", "--home", str(home)]) == 0
        assert capsys.readouterr().out.strip() == f"sed: production rolled back to {restored}"
        registry.download("sed", PRODUCTION, tmp_path / "served")


def test_a_run_holding_the_home_refuses_the_prune(tmp_path, capsys):
    home = tmp_path / "home"
    for note in ("v1", "v2"):
        run(home, note)
    before = files(home)
    with home_lock(home, "stellar-training-now"):
        assert prune(home, "--keep-runs", "1") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and "in use by run stellar-training-now" in err[0]
    assert files(home) == before


@pytest.mark.parametrize("options, message", [
    (["--keep-runs", "0"], "--keep-runs 0: needs at least 1 run"),
    (["--keep-runs", "-3"], "--keep-runs -3: needs at least 1 run"),
    (["--keep-versions", "0"], "--keep-versions 0: needs at least 1 version"),
    (["--keep-runs", "two"], "--keep-runs 'two'"),
    (["--keep-rollbacks", "0"], "--keep-rollbacks 0: needs at least 1 rollback"),
])
def test_bad_options_refuse_with_one_line_and_delete_nothing(tmp_path, capsys, options, message):
    home = tmp_path / "home"
    run(home, "v1")
    before = files(home)
    assert prune(home, *options) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"stellar prune: {message}")
    assert files(home) == before


def test_a_home_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    for note in ("v1", "v2"):
        run(home, note)

    def read_only(self, key):
        raise OSError(13, "Permission denied", str(self.root / key))

    monkeypatch.setattr(LocalStore, "delete", read_only)
    assert prune(home, "--keep-runs", "1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"stellar prune: {home}/artifacts/cache/")
    assert err[0].endswith(".json: Permission denied")
    assert len(list((home / "runs").iterdir())) == 2  # the records go last: none went


def test_a_home_that_does_not_exist_is_refused_and_not_made(tmp_path, capsys):
    assert prune(tmp_path / "nowhere") == 2
    assert capsys.readouterr().err.strip() == f"stellar prune: --home {tmp_path / 'nowhere'}: no such folder"
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.slow
def test_a_pruned_pipeline_home_reruns_its_newest_run_from_the_cache(tmp_path, stellar):
    """Two real runs (the NumPy baselines, 64 objects); with one run and one version kept, the newest run's inputs
    are still a cache hit (its registry readers included), and production still rolls back."""
    home = str(tmp_path / "home")
    cheap = ["--home", home, "-p", "trainer=baseline", "--samples", "64"]
    for seed in ("1", "7"):
        assert stellar("run", *cheap, "-p", f"seed={seed}").returncode == 0
    held = {name: ModelRegistry.open(f"{home}/registry").alias_state(name).held()
            for name in ModelRegistry.open(f"{home}/registry").names()}
    result = stellar("prune", "--home", home, "--keep-runs", "1", "--keep-versions", "1")
    assert result.returncode == 0, result.stderr
    assert "run records" in result.stdout and "artifacts" in result.stdout
    registry = ModelRegistry.open(f"{home}/registry")
    for name, versions in held.items():
        assert versions <= {record.version for record in registry.versions(name)}
    again = stellar("run", *cheap, "-p", "seed=7")
    assert again.returncode == 0, again.stderr
    runs = json.loads(stellar("runs", "list", "--home", home, "--json").stdout)
    assert [run["tasks"] for run in runs][0] == {"cached": 15}
    for name in held:
        history = registry.alias_state(name).history.get(PRODUCTION, [])
        rollback = stellar("models", "rollback", name, "--home", home)
        assert rollback.returncode == (0 if history else 1), rollback.stderr  # 1: no earlier change to undo
        if history and history[-1]:  # else back to no production version
            assert registry.get_version(name, registry.aliases(name)[PRODUCTION]).version == history[-1]


def test_an_entry_another_home_made_stays_though_an_old_run_here_used_it(tmp_path):
    """Home B made the entry and A's old run took it from the cache: pruning A leaves it, so B's rerun is cached."""
    shared = LocalStore(tmp_path / "shared")
    made = run(tmp_path / "b", "v1", shared)
    run(tmp_path / "a", "v1", shared)
    run(tmp_path / "a", "v2", shared)
    assert prune(tmp_path / "a", "--keep-runs", "1", "--artifact-store", str(tmp_path / "shared")) == 0
    assert shared.listing_fingerprint(made["make"].outputs["out"].key) is not None
    assert {task.status for task in run(tmp_path / "b", "v1", shared).values()} == {CACHED}


def test_models_prune_prunes_an_s3_registry_with_no_home(tmp_path, s3_server, s3_bucket, capsys, monkeypatch):
    """`stellar models prune`, as the cluster's prune CronWorkflow runs it: the registry alone, on S3 (the endpoint
    from AWS_ENDPOINT_URL, as the workflow's pods have it); nothing of a home is deleted or made."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.chdir(tmp_path)
    uri = f"s3://{s3_bucket}/registry"
    registry = ModelRegistry.open(uri)
    for content in "abcd":
        registry.register("sed", make_model(tmp_path, content))
    for version in ("3", "2"):
        registry.set_alias("sed", PRODUCTION, version)
    _, copy = registry.download("sed", "1", tmp_path / ".stellar" / "serving")  # another registry's home, by default
    prune_registry = ["models", "prune", "--registry", uri, "--keep-versions", "1", "--keep-rollbacks", "1"]
    assert main([*prune_registry, "--dry-run"]) == 0
    assert "sed version 1" in capsys.readouterr().out and len(registry.versions("sed")) == 4
    assert main(prune_registry) == 0
    assert f"{uri}: deleted" in capsys.readouterr().out
    assert [record.version for record in registry.versions("sed")] == ["2", "3", "4"]
    assert main(prune_registry) == 0
    assert capsys.readouterr().out.strip() == f"{uri}: nothing to prune"
    assert registry.rollback("sed") == "3"
    assert copy.is_dir()  # --registry given: the default home's copies are not this registry's to prune
    assert sorted(path.name for path in tmp_path.iterdir()) == [".stellar", "model-a", "model-b", "model-c",
                                                                "model-d"]


@pytest.mark.parametrize("options, message", [
    (["--keep-versions", "0"], "--keep-versions 0: needs at least 1 version"),
    (["--keep-rollbacks", "x"], "--keep-rollbacks 'x'"),
])
def test_models_prune_refuses_bad_options_with_one_line(tmp_path, capsys, options, message):
    registry = ModelRegistry.open(str(tmp_path / "registry"))
    for content in "ab":
        registry.register("sed", make_model(tmp_path, content))
    assert main(["models", "prune", "--registry", str(tmp_path / "registry"), *options]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"stellar models prune: {message}")
    assert len(registry.versions("sed")) == 2


def test_models_prune_exits_1_where_trying_again_may_work(tmp_path, capsys, monkeypatch):
    """A registry that does not answer, or a model whose aliases kept changing while it was pruned: exit 1, which
    the CronWorkflow's retries (all but exit 2) try again; one line each."""
    from steps.core.registry import RegistryError

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # the discard port: nothing answers
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert main(["models", "prune", "--registry", "s3://bucket/registry"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot connect to the S3 endpoint http://127.0.0.1:9" in err[0]
    registry = ModelRegistry.open(str(tmp_path / "registry"))
    for content in "abc":
        registry.register("sed", make_model(tmp_path, content))

    def busy(self, name, numbers, rollbacks):
        raise RegistryError(f"{name}: gave up after 8 concurrent changes of aliases.json")

    monkeypatch.setattr(ModelRegistry, "delete_versions", busy)
    assert main(["models", "prune", "--registry", str(tmp_path / "registry"), "--keep-versions", "1"]) == 1
    assert capsys.readouterr().err.strip() == "stellar models prune: sed: gave up after 8 concurrent changes of " \
                                              "aliases.json"
    assert len(registry.versions("sed")) == 3


def test_only_server_and_connection_errors_of_s3_are_worth_trying_again():
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError

    from steps.core.storage import transient_s3_error

    def answered(status: int, code: str) -> ClientError:
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "ListObjectsV2")

    assert transient_s3_error(answered(503, "SlowDown")) and transient_s3_error(answered(500, "InternalError"))
    assert transient_s3_error(EndpointConnectionError(endpoint_url="http://x"))
    assert transient_s3_error(ReadTimeoutError(endpoint_url="http://x"))
    assert not transient_s3_error(answered(403, "AccessDenied"))
    assert not transient_s3_error(answered(404, "NoSuchBucket"))
    assert not transient_s3_error(NoCredentialsError())


def test_models_prune_of_a_registry_record_that_does_not_parse_names_it_in_one_line(tmp_path, capsys):
    registry = ModelRegistry.open(str(tmp_path / "registry"))
    registry.store.put("sed/versions/1.json", b'{"x":')
    assert main(["models", "prune", "--registry", str(tmp_path / "registry")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"stellar models prune: {tmp_path / 'registry' / 'sed' / 'versions' / '1.json'}: not a ")
    assert len(error.splitlines()) == 1


def test_models_prune_of_a_registry_that_is_not_there_says_so_and_makes_nothing(tmp_path, capsys):
    assert main(["models", "prune", "--home", str(tmp_path / "home")]) == 2
    assert capsys.readouterr().err.strip() == (f"stellar models prune: --home {tmp_path}/home: no such registry "
                                               f"folder ({tmp_path}/home/registry)")
    assert main(["models", "prune", "--registry", str(tmp_path / "typo")]) == 2
    assert capsys.readouterr().err.strip() == (f"stellar models prune: --registry {tmp_path}/typo: no such "
                                               "registry folder")
    assert list(tmp_path.iterdir()) == []


def test_a_version_rolled_back_by_hand_stays_so_a_retrain_reproducing_it_is_not_promoted_again(tmp_path, capsys):
    home = tmp_path / "home"
    registry = ModelRegistry.open(str(home / "registry"))
    models = {c: make_model(tmp_path, c) for c in "abcdef"}
    for c in "abc":
        registry.register("sed", models[c])
    registry.set_alias("sed", PRODUCTION, "1")
    registry.set_alias("sed", PRODUCTION, "2", automatic=True)
    assert registry.rollback("sed") == "1"
    for c in "def":
        registry.register("sed", models[c])
    assert prune(home, "--keep-versions", "1") == 0
    assert "2" in [record.version for record in registry.versions("sed")]
    again = registry.register("sed", models["b"])  # next week's retrain reproduces version 2's files
    assert again.version == "2"
    with pytest.raises(RolledBack):
        registry.set_alias("sed", PRODUCTION, again.version, automatic=True)


def test_a_prune_stopped_after_deciding_leaves_no_version_a_retrain_could_land_on(tmp_path, capsys, monkeypatch):
    """Versions listed as pruned whose records could not be deleted are passed over: a retrain reproducing one
    registers a new version, which the candidate alias can take."""
    home = tmp_path / "home"
    registry = ModelRegistry.open(str(home / "registry"))
    models = {c: make_model(tmp_path, c) for c in "abc"}
    for c in "abc":
        registry.register("sed", models[c])
    real = LocalStore.delete

    def read_only_records(self, key):
        if "/versions/" in key:
            raise OSError(30, "Read-only file system", str(self.root / key))
        return real(self, key)

    monkeypatch.setattr(LocalStore, "delete", read_only_records)
    assert prune(home, "--keep-versions", "1") == 2
    monkeypatch.setattr(LocalStore, "delete", real)
    assert registry.alias_state("sed").pruned == ["1", "2"]
    record = registry.register("sed", models["a"])
    assert record.version == "4"
    registry.set_alias("sed", CANDIDATE, record.version)


def test_keep_rollbacks_bounds_the_production_history_a_prune_keeps(tmp_path, capsys):
    """Weekly promotions make production's history grow for ever; `--keep-rollbacks R` keeps the versions the
    newest R rollbacks restore, and a rollback past them says nothing is left to undo."""
    from steps.core.registry import NothingToRollBack

    home = tmp_path / "home"
    registry = ModelRegistry.open(str(home / "registry"))
    for c in "abcdef":
        registry.set_alias("sed", PRODUCTION, registry.register("sed", make_model(tmp_path, c)).version)
    assert registry.alias_state("sed").history[PRODUCTION] == ["", "1", "2", "3", "4", "5"]
    assert prune(home, "--keep-versions", "1", "--keep-rollbacks", "2") == 0
    assert [record.version for record in registry.versions("sed")] == ["4", "5", "6"]
    assert registry.rollback("sed") == "5" and registry.rollback("sed") == "4"
    with pytest.raises(NothingToRollBack, match="no earlier change of it is left to undo"):
        registry.rollback("sed")
