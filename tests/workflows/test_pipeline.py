"""The rendered WorkflowTemplate and CronWorkflows: shape, Argo schema (strict), references, golden files."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest
import yaml

from workflows.local.expressions import parse_duration
from workflows.pipeline import RenderOptions, workflow_parameters
from workflows.render import (
    CRON_WORKFLOW_FILE,
    PRUNE_CRON_WORKFLOW_FILE,
    WORKFLOW_TEMPLATE_FILE,
    rendered_documents,
    to_yaml,
)
from workflows.validate import check_references, parse_cron, validate_against_schema

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("STELLAR_UPDATE_GOLDEN") == "1"
EXPECTED_DEPENDS = {
    "ingest-sdss-spectra": None, "ingest-gaia-photometry": None, "ingest-kepler-lightcurves": None,
    "preprocess-spectra": "ingest-sdss-spectra", "preprocess-photometry": "ingest-gaia-photometry",
    "preprocess-lightcurves": "ingest-kepler-lightcurves",
    "split-spectra": "preprocess-spectra", "split-photometry": "preprocess-photometry",
    "split-lightcurves": "preprocess-lightcurves",
    "train-spectral-model": "split-spectra", "train-lightcurve-model": "split-lightcurves",
    "train-sed-model": "split-photometry",
    "evaluate-models": "train-spectral-model && train-lightcurve-model && train-sed-model",
    "promote-models": "evaluate-models", "deploy-api": "promote-models",
}


@pytest.fixture(scope="module")
def documents():
    return rendered_documents()


@pytest.fixture(scope="module")
def template(documents):
    return documents[WORKFLOW_TEMPLATE_FILE]


def containers(template):
    return [t for t in template["spec"]["templates"] if "container" in t]


def test_dag_has_every_task_with_its_dependencies(template):
    dag = next(t for t in template["spec"]["templates"] if t["name"] == template["spec"]["entrypoint"])
    assert {task["name"]: task.get("depends") for task in dag["dag"]["tasks"]} == EXPECTED_DEPENDS


def test_each_stage_runs_its_module_in_its_own_image(template):
    stages = set()
    for spec in containers(template):
        container = spec["container"]
        assert container["command"][:2] == ["python", "-m"]
        module = container["command"][2]
        assert importlib.util.find_spec(module + ".__main__") is not None, f"{module} is not runnable"
        stage = module.split(".")[1]
        stages.add(stage)
        assert re.fullmatch(rf"ghcr\.io/stellar-pipeline/stellar-{stage}:\d+\.\d+\.\d+.*", container["image"])
        assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
        retry = spec["retryStrategy"]
        assert retry["limit"] >= 1 and retry["backoff"]["factor"] >= 2 and retry["backoff"]["duration"]
    assert stages == {"ingest", "preprocess", "split", "train", "evaluate", "promote", "deploy"}


def test_retries_have_time_for_every_attempt_of_a_rollout(template):
    """Argo starts no retry after `maxDuration` from the first attempt, and kills one still running then: a 5 min cap
    meant a rollout that failed by its 600 s wait was never retried, and one that failed fast was killed mid-way."""
    deploy = next(spec for spec in containers(template) if spec["container"]["command"][2] == "steps.deploy")
    retry = deploy["retryStrategy"]
    # an atomic upgrade waits up to deploy-timeout, and its rollback as long again; then Helm's own work
    attempt = 2 * float(workflow_parameters(RenderOptions())["deploy-timeout"]) + 60
    backoff = sum(parse_duration(retry["backoff"]["duration"]) * retry["backoff"]["factor"] ** k
                  for k in range(retry["limit"]))
    assert parse_duration(retry["backoff"]["maxDuration"]) > (retry["limit"] + 1) * attempt + backoff


def test_a_hung_stage_is_stopped_by_a_deadline_before_the_next_weekly_run(template, documents):
    """maxDuration limits only retries: without deadlines a first attempt that never ends holds the run, and with it
    every later start of the Forbid CronWorkflow. Every attempt has one (long enough for a whole rollout, and a
    training attempt longer), a stopped attempt has time for a retry, and the run has one, shorter than the week
    between two scheduled starts."""
    deadlines = {spec["name"]: spec["activeDeadlineSeconds"] for spec in containers(template)}
    assert deadlines["train"] == 7200 and deadlines["deploy"] >= 2 * 600 + 60
    assert set(deadlines.values()) == {3600, 7200}
    for spec in containers(template):
        backoff = spec["retryStrategy"]["backoff"]
        assert parse_duration(backoff["maxDuration"]) >= 2 * spec["activeDeadlineSeconds"], spec["name"]
    run_deadline = template["spec"]["activeDeadlineSeconds"]
    assert max(deadlines.values()) < run_deadline < 7 * 24 * 3600
    prune = documents[PRUNE_CRON_WORKFLOW_FILE]["spec"]["workflowSpec"]["templates"][0]
    assert prune["activeDeadlineSeconds"] == 3600


def test_artifacts_go_through_the_artifact_repository(template):
    assert template["spec"]["artifactRepositoryRef"] == {"configMap": "artifact-repositories", "key": "stellar-minio"}


def test_cron_workflow_runs_the_template_weekly(documents):
    cron = documents[CRON_WORKFLOW_FILE]["spec"]
    assert cron["workflowSpec"]["workflowTemplateRef"]["name"] == "stellar-training"
    assert cron["concurrencyPolicy"] == "Forbid" and cron["startingDeadlineSeconds"] > 0 and cron["timezone"]
    for schedule in cron["schedules"]:
        parse_cron(schedule)


def test_a_runs_artifacts_go_with_its_workflow_and_a_failed_deletion_does_not_hold_it(template):
    assert template["spec"]["artifactGC"] == {"strategy": "OnWorkflowDeletion", "forceFinalizerRemoval": True,
                                              "serviceAccountName": "stellar-artifact-gc"}
    assert template["spec"]["ttlStrategy"]["secondsAfterCompletion"] == 7 * 24 * 3600


def test_a_stages_log_outlives_its_pod_for_the_argo_ui(template):
    """podGC deletes a pod as soon as its stage succeeds, and its log with it: the logs are archived to the
    artifact repository (and deleted with the run's artifacts, by the artifactGC above)."""
    assert template["spec"]["podGC"] == {"strategy": "OnPodSuccess"} and template["spec"]["archiveLogs"] is True


def test_the_prune_cron_workflow_prunes_the_registry_the_runs_promote_into(documents, template):
    """`stellar models prune` on the template's registry, in the promote image, with the stages' S3 credentials and
    retries (exit 2, a bad option or a refusing registry, is not retried)."""
    from workflows.cli import build_parser

    cron = documents[PRUNE_CRON_WORKFLOW_FILE]["spec"]
    for schedule in cron["schedules"]:
        parse_cron(schedule)
    workflow = cron["workflowSpec"]
    parameters = {p["name"]: p["value"] for p in workflow["arguments"]["parameters"]}
    registry = {p["name"]: p["value"] for p in template["spec"]["arguments"]["parameters"]}["registry"]
    assert parameters == {"registry": registry, "keep-versions": "5", "keep-rollbacks": "10"}
    [prune] = workflow["templates"]
    container = prune["container"]
    assert container["image"].split("/")[-1].startswith("stellar-promote:")
    promote = next(t for t in containers(template) if t["name"] == "promote")
    assert container["env"] == promote["container"]["env"] and prune["retryStrategy"] == promote["retryStrategy"]
    assert container["command"] == ["stellar", "models", "prune"]
    args = build_parser().parse_args([*container["command"][1:], *(
        parameters[arg[len("{{workflow.parameters."):-2]] if arg.startswith("{{") else arg
        for arg in container["args"])])
    assert (args.registry, args.keep_versions, args.keep_rollbacks) == (registry, "5", "10")


def test_references_resolve(documents):
    for name, doc in documents.items():
        assert check_references(doc) == [], name


def test_strict_argo_schema(documents, shared_dir):
    schema = shared_dir / "schemas" / "argo-workflows" / "schema.json"
    for name, doc in documents.items():
        assert validate_against_schema(doc, schema) == [], name


def test_strict_schema_catches_a_misspelt_key(template, shared_dir):
    schema = shared_dir / "schemas" / "argo-workflows" / "schema.json"
    broken = yaml.safe_load(to_yaml(template))
    broken["spec"]["templates"][1]["retryStrategy"]["backof"] = broken["spec"]["templates"][1]["retryStrategy"].pop("backoff")
    assert any("backof" in problem for problem in validate_against_schema(broken, schema))


@pytest.mark.parametrize("name", [WORKFLOW_TEMPLATE_FILE, CRON_WORKFLOW_FILE, PRUNE_CRON_WORKFLOW_FILE])
def test_golden(documents, name):
    """Regenerate on purpose with `make golden`; a diff here on accident means the DAG changed."""
    rendered = to_yaml(documents[name])
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        (GOLDEN / name).write_text(rendered)
    assert (GOLDEN / name).read_text() == rendered, f"{name} drifted from tests/workflows/golden (make golden)"


def test_render_options_reach_the_objects():
    options = RenderOptions(image_registry="localhost:5001", image_tag="dev", schedules=("30 2 * * 0",),
                            parameters={"samples": "50"})
    docs = rendered_documents(options)
    template = docs[WORKFLOW_TEMPLATE_FILE]
    assert {c["container"]["image"].rsplit("/", 1)[0] for c in containers(template)} == {"localhost:5001"}
    assert {c["container"]["image"].rsplit(":", 1)[1] for c in containers(template)} == {"dev"}
    assert {p["name"]: p["value"] for p in template["spec"]["arguments"]["parameters"]}["samples"] == "50"
    assert docs[CRON_WORKFLOW_FILE]["spec"]["schedules"] == ["30 2 * * 0"]


def test_unknown_parameter_is_refused():
    with pytest.raises(ValueError, match="unknown workflow parameter.*sampels"):
        rendered_documents(RenderOptions(parameters={"sampels": "5"}))


def test_stellar_render_writes_every_file(tmp_path):
    from workflows.cli import main

    assert main(["render", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [CRON_WORKFLOW_FILE, PRUNE_CRON_WORKFLOW_FILE,
                                                          WORKFLOW_TEMPLATE_FILE]
    assert yaml.safe_load((tmp_path / WORKFLOW_TEMPLATE_FILE).read_text())["metadata"]["name"] == "stellar-training"


def test_stellar_render_takes_several_schedules_as_the_chart_does(tmp_path):
    from workflows.cli import main

    assert main(["render", "--out", str(tmp_path), "--schedule", "0 4 * * 2", "--schedule", "@daily"]) == 0
    cron = yaml.safe_load((tmp_path / CRON_WORKFLOW_FILE).read_text())
    assert cron["spec"]["schedules"] == ["0 4 * * 2", "@daily"]


@pytest.mark.parametrize("command", ["render", "run"])
def test_bad_gates_are_refused_before_anything_runs(tmp_path, capsys, command):
    from workflows.cli import main

    where = ["--out", str(tmp_path / "out")] if command == "render" else ["--home", str(tmp_path / "home")]
    with pytest.raises(SystemExit) as stopped:
        main([command, *where, "-p", "gates=spectral: {absolute: {teff: {rmse_maxx: 3}}}"])
    assert stopped.value.code == 2
    assert "-p gates: invalid gates (YAML text): spectral.absolute.teff.rmse_maxx" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())



def test_bad_paths_and_values_are_refused_with_the_flag_named(tmp_path, capsys):
    """Each mistake exits 2 with a line naming the flag and the input, before any run, file or folder exists."""
    from workflows.cli import main

    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    spectrum = tmp_path / "spec.fits"
    spectrum.write_bytes(b"SIMPLE")
    home = ["--home", str(tmp_path / "home")]
    # a long name: the message passes the 160 columns that the console is given without a terminal
    binary, shapeless = tmp_path / "binary.yaml", tmp_path / f"shapeless-{'x' * 120}.yaml"
    binary.write_bytes(b"\xff\xfe")
    cron = tmp_path / "cron.yaml"
    cron.write_text("kind: CronWorkflow\nspec: {schedules: ['0 3 * * 1'], workflowSpec: {}}\n")
    shapeless.write_text("kind: WorkflowTemplate\n"
                         "spec: {entrypoint: main, templates: [{name: main, dag: {tasks: 5}}]}\n")
    for argv, message in (
            (["run", "--home", str(a_file)], f"--home {a_file}: is a file, not a folder"),
            (["models", "list", "--home", str(a_file)], f"--home {a_file}: is a file, not a folder"),
            (["run", *home, "-p", "samples=abc"], "-p samples: 'abc' is not a whole number"),
            (["run", *home, "-p", "epochs=-1"], "-p epochs: -1: needs at least 1 epoch"),
            (["run", *home, "-p", "test-fraction=2"], "-p test-fraction: 2: must be within (0, 1)"),
            (["run", *home, "-p", "test-fraction=0.5", "-p", "val-fraction=0.5"],
             "-p test-fraction 0.5 and val-fraction 0.5 leave no training rows (their sum must be < 1)"),
            (["run", *home, "-p", "trainer=gpu"], "-p trainer: 'gpu': choose one of auto, baseline, keras"),
            (["run", *home, "-p", "seed=x"], "-p seed: 'x' is not a whole number"),
            (["run", *home, "-p", "spectrum-length=10"], "-p spectrum-length: 10: needs at least 128 pixel"),
            (["run", *home, "-p", "view-length=99999"], "-p view-length: 99999"),
            (["run", *home, "-p", "samples=5"], "-p samples: 5: with test-fraction 0.2 and val-fraction 0.1 the split "
                                                "would expect fewer than 2 objects in a set; draw at least 20"),
            (["run", *home, "-p", "samples=0"], "-p samples: 0: the spectra, photometry, lightcurves sources "
                                                "(synthetic) need at least 1 object"),
            (["run", *home, "--samples", "0", "--photometry-from", str(tmp_path), "--lightcurves-from",
              str(tmp_path)], "--samples: 0: the spectra source (synthetic) need at least 1 object"),
            (["run", *home, "--template", str(tmp_path / "none.yaml")],
             f"--template {tmp_path / 'none.yaml'}: No such file or directory"),
            (["run", *home, "--template", str(spectrum)], f"--template {spectrum}: not a WorkflowTemplate"),
            (["run", *home, "--template", str(binary)], f"--template {binary}: not UTF-8 text"),
            (["run", *home, "--template", str(cron)], f"--template {cron}: a CronWorkflow, not a WorkflowTemplate"),
            (["run", *home, "--template", str(shapeless)],
             f"--template {shapeless}: not a WorkflowTemplate the local executor can read"),
            (["run", *home, "--samples", "50", "-p", "samples=60"], "--samples and -p samples both set samples"),
            (["run", *home, "-p", f"spectra-source={tmp_path / 'nope'}"],
             f"-p spectra-source: source folder '{tmp_path / 'nope'}' does not exist"),
            (["run", *home, "-p", "photometry-source=sdss"],
             "-p photometry-source: source 'sdss' provides no photometry (only spectra)"),
            (["run", *home, "-p", "lightcurves-source=nosuch"], "-p lightcurves-source: unknown source 'nosuch'"),
            (["run", *home, "-p", "nosuch=1"], "stellar run: unknown workflow parameter(s): nosuch; the template"),
            (["run", *home, "--spectra-from", str(spectrum)], f"--spectra-from {spectrum}: is a file; a run replays"),
            (["run", *home, "--spectra-from", str(tmp_path), "-p", "spectra-source=sdss"],
             "--spectra-from and -p spectra-source both set spectra-source; give one"),
            (["render", "--out", str(tmp_path / "out"), "--schedule", "not a cron"], "cron schedule 'not a cron'"),
            (["render", "--out", str(tmp_path / "out"), "--timezone", "Mars/Olympus"], "'Mars/Olympus' is not an IANA"),
            (["render", "--out", str(a_file)], f"--out {a_file}: is a file"),
            (["ingest", "spectra", "--from", str(spectrum), "--out", str(tmp_path / "raw")],
             f"--from {spectrum}: is a file"),
            (["ingest", "spectra", "--from", str(tmp_path / "nowhere"), "--out", str(tmp_path / "raw")],
             f"--from {tmp_path / 'nowhere'}: no such folder"),
            (["ingest", "spectra", "--out", str(a_file)], f"--out {a_file}: is a file"),
            (["ingest", "spectra", "--out", str(a_file / "raw")], f"--out {a_file / 'raw'}: {a_file} is a file"),
            (["ingest", "spectra", "--out", "/proc/raw"], "--out /proc/raw: cannot write in /proc: it takes no new"),
            (["ingest", "spectra", "--from", "nosuchsource", "--out", str(tmp_path / "raw")],
             "stellar ingest: --from nosuchsource: unknown source 'nosuchsource': give one of"),
            (["models", "show", "sed@", *home], "'sed@': nothing after '@'")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert any(message in line for line in err.splitlines()), argv  # on one line, never wrapped
    for argv, message in ((["run", *home, "--samples", "-5"], "-5: needs at least 0 objects"),
                          (["run", *home, "--parallelism", "0"], "0: needs at least 1 task"),
                          (["ingest", "spectra", "--seed", "-1", "--out", str(tmp_path / "raw")],
                           "--seed: -1: a seed is a whole number from 0 to 4294967295"),
                          (["run", *home, "-p", "samples"], "-p 'samples': expected NAME=VALUE")):
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == 2
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "binary.yaml", "cron.yaml", shapeless.name,
                                                          "spec.fits"]

def test_a_registry_that_cannot_be_written_is_one_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    import errno

    from steps.core.registry import ModelRegistry
    from steps.core.storage import LocalStore
    from workflows.cli import main

    model = tmp_path / "model"
    model.mkdir()
    (model / "manifest.json").write_text('{"stage": "train.sed", "code_version": "test", "files": []}')
    registry = ModelRegistry.open(str(tmp_path / "home" / "registry"))
    registry.register("sed", model)
    (model / "manifest.json").write_text('{"stage": "train.sed", "code_version": "other", "files": []}')
    registry.register("sed", model)
    registry.set_alias("sed", "production", "1")
    lock = tmp_path / "home" / "registry" / "sed" / "aliases.json.lock"

    def read_only(self, key):
        raise OSError(errno.EROFS, "Read-only file system", str(lock))

    monkeypatch.setattr(LocalStore, "_locked", read_only)
    for argv in (["promote", "sed", "2"], ["rollback", "sed"]):
        assert main(["models", *argv, "--home", str(tmp_path / "home")]) == 2
        assert capsys.readouterr().err == f"stellar models: {lock}: Read-only file system\n"


def test_models_commands_answer_bad_references_with_a_message(tmp_path, capsys):
    from steps.core.registry import ModelRegistry
    from workflows.cli import main

    model = tmp_path / "model"
    model.mkdir()
    (model / "manifest.json").write_text('{"stage": "train.sed", "code_version": "test", "files": []}')
    registry = ModelRegistry.open(str(tmp_path / "home" / "registry"))
    registry.register("sed", model, verdict={"passed": False, "reasons": ["FAIL teff"]})
    home = ["--home", str(tmp_path / "home")]
    for argv, message in ((["show", "@1"], "model name '' is not a name"),
                          (["show", "../x"], "model name '../x' is not a name"),
                          (["promote", "sed", "../aliases"], "alias '../aliases' is not a name"),
                          (["rollback", "foo"], "no model 'foo'"),
                          (["list", "--registry", "ftp://x"], "ftp://x")):
        assert main(["models", *argv, *home]) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert main(["models", "promote", "sed", "1", *home]) == 1  # refused by the gates: only on purpose
    err = capsys.readouterr().err
    assert "the quality gates refused sed version 1 when last evaluated; production does not move" in err
    assert "  FAIL teff" in err and "stellar models promote sed 1 --force" in err
    assert not registry.aliases("sed")
    assert main(["models", "promote", "sed", "1", "--force", *home]) == 0
    out = capsys.readouterr().out
    assert "sed: production (none) -> 1" in out and "the quality gates refused version 1" in out
    assert main(["models", "promote", "sed", "production", *home]) == 0  # nothing moves: nothing to refuse
    assert "version 1 is already production" in capsys.readouterr().out
    assert main(["models", "rollback", "sed", *home]) == 0  # a first promotion by mistake can be undone
    assert "sed: production rolled back to (none): no version of sed is served" in capsys.readouterr().out
    assert main(["models", "rollback", "sed", *home]) == 1  # a sound request the state refuses: not a usage error
    assert "sed has no production version: nothing to roll back" in capsys.readouterr().err
    assert main(["models", "show", "sed", *home]) == 1
    assert "sed has no production version (never promoted, or rolled back to none); its versions: 1" in \
        capsys.readouterr().err


def test_a_source_name_stays_a_name_where_a_folder_of_that_name_is_here(tmp_path, monkeypatch):
    """`-p spectra-source=sdss` queries SDSS even from a folder that holds `sdss/`; `-p spectra-source=lib` (a
    folder here, no source of that name) is passed on resolved, as the stages see it."""
    from workflows.cli import _is_relative_folder

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sdss").mkdir()
    (tmp_path / "lib").mkdir()
    assert not _is_relative_folder("sdss") and _is_relative_folder("lib")
    assert not _is_relative_folder(str(tmp_path / "lib")) and not _is_relative_folder("s3://bucket/lib")
    assert not _is_relative_folder(None) and not _is_relative_folder("nowhere")
