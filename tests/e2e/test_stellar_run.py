"""`stellar run` end to end: a complete run, a cached re-run, a killed run resumed, a failing run explained."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TASKS = 15


def production(stellar, home: Path) -> dict[str, str]:
    listing = stellar("models", "list", "--json", "--home", str(home))
    assert listing.returncode == 0, listing.stderr
    return {model["name"]: model["aliases"].get("production") for model in json.loads(listing.stdout)}


def last_run(home: Path) -> dict:
    runs = sorted((home / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    return json.loads((runs[-1] / "run.json").read_text())


def test_complete_run_promotes_all_three_models(stellar, pipeline_home):
    assert set(production(stellar, pipeline_home)) == {"spectral", "lightcurve", "sed"}
    assert all(production(stellar, pipeline_home).values())
    record = last_run(pipeline_home)
    assert len(record["tasks"]) == TASKS
    assert {task["status"] for task in record["tasks"].values()} == {"succeeded"}
    assert json.loads((pipeline_home / "registry" / "serving.json").read_text())["models"]["sed"]["version"]
    shown = stellar("models", "show", "spectral", "--home", str(pipeline_home))
    report = Path(json.loads(shown.stdout)["report"])  # kept in the registry: the run's artifacts may go
    assert report.is_file() and report.is_relative_to(pipeline_home / "registry")
    assert (report.parent / "plots").is_dir()


def test_identical_rerun_is_all_cached_without_tensorflow(pipeline_home):
    code = ("import sys\nfrom workflows.cli import main\n"
            f"rc = main(['run', '--home', {str(pipeline_home)!r}, '--samples', '100'])\n"
            "assert 'tensorflow' not in sys.modules, 'the cached path imported TensorFlow'\n"
            "sys.exit(rc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert {task["status"] for task in last_run(pipeline_home)["tasks"].values()} == {"cached"}
    assert "Models in production" in result.stdout
    assert "nothing changed: this run's evaluation, promotion and deploy are run stellar-training-" in result.stdout
    assert " promoted" not in result.stdout  # this run promoted nothing
    lines = result.stdout.splitlines()
    report = Path(lines[lines.index("Evaluation report (metrics, plots, the gates' verdict):") + 1].strip())
    assert report.name == "report.html" and report.is_file() and report.is_relative_to(pipeline_home)


def test_a_deploy_record_whose_bytes_changed_is_an_error_not_a_traceback(stellar, pipeline_home, tmp_path):
    import os
    import shutil

    home = tmp_path / "home"
    shutil.copytree(pipeline_home, home)
    assert stellar("run", "--home", str(home), "--samples", "100").returncode == 0  # its own paths, cached
    assert last_run(home)["tasks"]["ingest-sdss-spectra"]["message"] == (  # the copy re-runs what names its path
        f"ran again: argument --cache changed ({pipeline_home / 'raw-cache'} -> {home / 'raw-cache'})")
    deployed = home / "artifacts" / last_run(home)["tasks"]["deploy-api"]["outputs"]["deployment"]["key"]
    record = deployed / "deployment.json"
    status = record.stat()
    record.write_text("{" + " " * (status.st_size - 2) + "}")
    os.utime(record, ns=(status.st_atime_ns, status.st_mtime_ns))
    result = stellar("run", "--home", str(home), "--samples", "100")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "the deploy record cannot be read" in result.stderr and "its bytes changed" in result.stderr
    again = stellar("run", "--home", str(home), "--samples", "100")  # the record was removed: deploy runs again
    assert again.returncode == 0, again.stderr[-2000:]
    assert last_run(home)["tasks"]["deploy-api"]["status"] == "succeeded"


def test_new_spectra_retrain_only_the_spectral_model(stellar, pipeline_home, tmp_path):
    import shutil

    home = tmp_path / "home"
    shutil.copytree(pipeline_home, home)
    result = stellar("run", "--home", str(home), "--samples", "100", "-p", "spectrum-length=512")
    assert result.returncode == 0, result.stderr
    statuses = {name: task["status"] for name, task in last_run(home)["tasks"].items()}
    assert statuses["preprocess-spectra"] == statuses["split-spectra"] == "succeeded"
    assert statuses["train-spectral-model"] == statuses["evaluate-models"] == "succeeded"
    assert {statuses[task] for task in ("split-photometry", "split-lightcurves", "train-sed-model",
                                        "train-lightcurve-model")} == {"cached"}


def test_promotion_between_runs_is_seen_by_registry_readers(stellar, pipeline_home, tmp_path):
    """A changed alias changes what evaluate/promote/deploy read, so they run again; the rest stays cached."""
    import shutil

    from steps.core.artifacts import ArtifactWriter
    from steps.core.registry import ModelRegistry

    home = tmp_path / "home"
    shutil.copytree(pipeline_home, home)
    registry = ModelRegistry.open(str(home / "registry"))
    _, served = registry.download("sed", "production", tmp_path / "dl")
    with ArtifactWriter(tmp_path / "other", stage="train.sed") as writer:
        for path in served.iterdir():
            if path.is_dir():
                shutil.copytree(path, writer.path(path.name))
            elif path.name != "manifest.json":
                shutil.copy2(path, writer.path(path.name))
        writer.path("note.txt").write_text("a hand-made second version")
    other = registry.register("sed", tmp_path / "other")
    assert stellar("models", "promote", "sed", other.version, "--home", str(home)).returncode == 0

    result = stellar("run", "--home", str(home), "--samples", "100")
    assert result.returncode == 0, result.stderr
    statuses = {name: task["status"] for name, task in last_run(home)["tasks"].items()}
    assert statuses["train-sed-model"] == "cached"
    assert {statuses[name] for name in ("evaluate-models", "promote-models", "deploy-api")} == {"succeeded"}


def test_a_model_the_gates_refuse_is_not_promoted_and_the_run_says_why(stellar, pipeline_home, tmp_path):
    """The issue's acceptance: a worse model is refused with the reasons printed, production does not move, and the
    run succeeds. Gates no spectral model can pass stand in for a worse model (training stays cached)."""
    import shutil

    import yaml

    from steps.evaluate.gates import default_gates_text

    home = tmp_path / "home"
    shutil.copytree(pipeline_home, home)
    before = production(stellar, home)
    gates = yaml.safe_load(default_gates_text())
    gates["spectral"]["absolute"]["teff"] = {"robust_sigma_max": 0.001}
    gates_file = tmp_path / "strict.yaml"
    gates_file.write_text(yaml.safe_dump(gates))
    result = stellar("run", "--home", str(home), "--samples", "100", "-p", f"gates={gates_file}")
    assert result.returncode == 0, result.stderr
    assert production(stellar, home) == before
    lines = result.stdout.splitlines()
    refused = next(i for i, line in enumerate(lines) if line.strip().startswith("spectral:"))
    assert "refused by the quality gates" in lines[refused]
    assert lines[refused + 1].strip().startswith("FAIL spectral teff robust_sigma =")
    assert "needs <= 0.001" in lines[refused + 1]
    assert not any(line.strip().startswith(("PASS", "NOTE")) for line in lines)
    listing = stellar("runs", "list", "--json", "--home", str(home))  # the run's record keeps the outcome
    spectral = json.loads(listing.stdout)[0]["models"]["spectral"]
    assert spectral["promotion"] == "refused" and spectral["version"] == before["spectral"]
    shown = stellar("runs", "show", "--home", str(home)).stdout
    assert "refused by the quality gates" in shown and "needs <= 0.001" in shown


def test_killed_run_resumes_without_rerunning_finished_tasks(tmp_path):
    home = tmp_path / "home"
    process = subprocess.Popen([sys.executable, "-m", "workflows.cli", "run", "--home", str(home), "--samples",
                                "40", "-p", "trainer=baseline"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache = home / "artifacts" / "cache"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(cache.glob("*.json"))) < 4:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = {json.loads(p.read_text())["task"] for p in cache.glob("*.json")}
    assert len(finished) >= 4, "the run was killed before any task finished"
    assert list((home / "runs").glob("*/work")), "the killed run left no work folder"
    resumed = subprocess.run([sys.executable, "-m", "workflows.cli", "run", "--home", str(home), "--samples", "40",
                              "-p", "trainer=baseline"],
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    statuses = {name: task["status"] for name, task in last_run(home)["tasks"].items()}
    assert finished <= {name for name, status in statuses.items() if status == "cached"}
    killed = [run for run in (home / "runs").iterdir() if run.name != last_run(home)["run"]]
    assert killed and all((run / "run.json").is_file() and not (run / "work").exists() for run in killed)
    assert any(status == "succeeded" for status in statuses.values())


def test_failing_task_is_named_with_its_log_tail(stellar, tmp_path):
    folder = tmp_path / "spectra"  # a folder of one file that is not FITS: ingest quarantines all of it and fails
    folder.mkdir()
    (folder / "a.fits").write_text("not FITS")
    result = stellar("run", "--home", str(tmp_path / "home"), "--samples", "20", "--spectra-from", str(folder))
    assert result.returncode == 1
    assert "task ingest-sdss-spectra failed" in result.stderr
    assert "a.fits: unreadable FITS" in result.stderr  # the stage's own message, from the log tail
    record = last_run(tmp_path / "home")
    assert record["tasks"]["ingest-sdss-spectra"]["attempts"] == 1  # exit status 2: bad input is not retried
    assert record["tasks"]["preprocess-spectra"]["status"] == "skipped"


def test_unknown_parameter_is_refused_before_anything_runs(stellar, tmp_path):
    result = stellar("run", "--home", str(tmp_path), "-p", "sampels=5")
    assert result.returncode == 2
    assert "sampels" in result.stderr and not (tmp_path / "runs").exists()


def test_run_through_a_real_s3_server(stellar, tmp_path, s3_server, s3_bucket):
    env = {**os.environ}
    result = subprocess.run(
        [sys.executable, "-m", "workflows.cli", "run", "--home", str(tmp_path), "--samples", "30",
         "--artifact-store", f"s3://{s3_bucket}/stellar", "--s3-endpoint", s3_server,
         "-p", f"registry=s3://{s3_bucket}/registry", "-p", "trainer=baseline"],
        capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    import boto3

    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3_server).list_objects_v2(
        Bucket=s3_bucket, MaxKeys=1000)["Contents"]]
    assert any(k.startswith("stellar/artifacts/") for k in keys)
    assert any(k.startswith("registry/sed/versions/") for k in keys)
    assert not (tmp_path / "artifacts").exists()


def _processes_naming(text: str) -> list[str]:
    """Command lines of this machine's processes that mention `text`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in command:
            found.append(command)
    return found


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_interrupted_run_stops_its_tasks_records_them_and_says_how_to_resume(tmp_path, stop):
    home = tmp_path / "home"
    # as from a terminal: a test run started in the background (`pytest &` in a script) ignores SIGINT, and under
    # `nohup` SIGHUP; a child would inherit that
    process = subprocess.Popen(
        [sys.executable, "-m", "workflows.cli", "run", "--home", str(home), "--samples", "40",
         "-p", "trainer=baseline"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: [signal.signal(number, signal.SIG_DFL) for number in (signal.SIGINT, signal.SIGHUP)])
    logs = home / "runs"
    deadline = time.time() + 120  # a preprocessing stage running (seconds long: an ingest may end before the signal)
    while time.time() < deadline and not any("steps.preprocess" in command for command in _processes_naming(str(logs))):
        time.sleep(0.02)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "run the same command again to resume" in stderr
    assert not _processes_naming(str(home / "runs"))  # no stage process outlives the run
    record = json.loads(next(logs.glob("*/run.json")).read_text())
    statuses = {task["status"] for task in record["tasks"].values()}
    assert statuses <= {"succeeded", "cached", "failed", "skipped"} and "skipped" in statuses, statuses
    assert any(task["message"] == "interrupted: the run was stopped while it ran" for task in record["tasks"].values())
    assert all(task["message"] == "not started: the run was interrupted"
               for task in record["tasks"].values() if task["status"] == "skipped")


def test_a_second_run_on_a_busy_home_is_refused_naming_the_first(tmp_path, capsys):
    from workflows.run import home_lock, run_pipeline

    home = tmp_path / "home"
    home.mkdir()
    with home_lock(home, "stellar-training-first"):
        assert run_pipeline(home, {"samples": "40"}) == 1
    said = capsys.readouterr().err
    assert f"{home} is in use by run stellar-training-first (pid " in said
    assert "tasks, parallelism" not in said  # no header naming a run that never starts
    assert not (home / "runs").exists()


def test_the_summary_says_why_a_candidate_was_not_promoted():
    """Failed gates head a refusal as the gates'; a candidate that passed but was rolled back by hand (or whose
    production moved during the run) is "not promoted", with that reason; passed gates and notes are not printed."""
    from workflows.run import promotion_lines

    gates = {"version": "1", "candidate": "2", "promotion": "refused",
             "reasons": ["PASS spectral teff robust_sigma = 13 (absolute: needs <= 400)", "NOTE x",
                         "FAIL spectral teff robust_sigma = 13 (absolute: needs <= 0.001)"]}
    assert promotion_lines("spectral", gates) == [
        "  spectral: version 1; candidate 2 refused by the quality gates (all its checks: stellar models show "
        "spectral@2)", "    FAIL spectral teff robust_sigma = 13 (absolute: needs <= 0.001)"]
    itself = {**gates, "candidate": "1"}  # the retrain reproduced production, which fails gates made stricter since
    assert promotion_lines("spectral", itself)[0] == (
        "  spectral: version 1; production version 1 itself, retrained the same, fails the current gates (all its "
        "checks: stellar models show spectral@1); it stays served, as nothing passed them to replace it")
    by_hand = {"version": "1", "candidate": "2", "promotion": "refused",
               "reasons": ["PASS sed teff rmse = 1", "sed version 2 was rolled back from production by hand"]}
    assert promotion_lines("sed", by_hand)[0].startswith("  sed: version 1; candidate 2 not promoted")
    assert promotion_lines("sed", by_hand)[1:] == ["    sed version 2 was rolled back from production by hand"]
    baseline = {"version": "2", "candidate": "1", "promotion": "promoted", "baseline_version": "2",
                "reasons": ["FAIL sed teff robust_sigma = 131 vs 33 of the NumPy baseline", "baseline: PASS sed x"]}
    assert promotion_lines("sed", baseline)[1:] == ["    FAIL sed teff robust_sigma = 131 vs 33 of the NumPy baseline"]
    assert "its NumPy baseline was promoted as version 2" in promotion_lines("sed", baseline)[0]
    # the baseline passed too, but was rolled back by hand since: the summary must not say it was promoted
    rolled_back = {**baseline, "version": None, "promotion": "refused",
                   "reasons": [*baseline["reasons"], "version 2 was rolled back from production by hand"]}
    first, *why = promotion_lines("sed", rolled_back)
    assert first.startswith("  sed: no production version; candidate 1 refused by the quality gates, and as there was "
                            "no production version yet, its NumPy baseline (version 2) passed them but was not "
                            "promoted")
    assert why[-1] == "    version 2 was rolled back from production by hand"
    assert promotion_lines("lightcurve", {"version": "1", "candidate": "1", "promotion": "promoted"}) == [
        "  lightcurve: version 1; candidate 1 promoted"]
