"""`stellar runs list` and `stellar runs show`: a home's runs from their run.json records, each with its state."""

from __future__ import annotations

import json
from pathlib import Path

from steps.core.storage import LocalStore
from workflows.cli import main
from workflows.local.cache import ArtifactCache
from workflows.local.executor import LocalExecutor
from workflows.run import file_models, home_lock

STAGE = ("import sys, pathlib; out = pathlib.Path(sys.argv[1]); out.mkdir(parents=True); "
         "(out / 'x').write_text('x')")


def one_task_template() -> dict:
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "WorkflowTemplate", "metadata": {"name": "tiny"},
            "spec": {"entrypoint": "main", "arguments": {"parameters": [{"name": "note", "value": "v1"}]},
                     "templates": [{"name": "main", "dag": {"tasks": [{"name": "make", "template": "make"}]}},
                                   {"name": "make", "outputs": {"artifacts": [{"name": "out", "path": "/out/o"}]},
                                    "container": {"image": "test", "command": ["python", "-c", STAGE],
                                                  "args": ["{{outputs.artifacts.out.path}}"]}}]}}


def record(home: Path, run: str, started: float, statuses: dict[str, tuple[str, str]], state: str | None) -> None:
    folder = home / "runs" / run
    folder.mkdir(parents=True)
    tasks = {name: {"name": name, "status": status, "attempts": 1, "started": started, "finished": started + 2,
                    "message": message} for name, (status, message) in statuses.items()}
    (folder / "run.json").write_text(json.dumps({"run": run, "state": state, "started": started,
                                                 "finished": started + 3, "parameters": {"samples": "64"},
                                                 "tasks": tasks}))


def listed(home: Path, capsys) -> dict[str, dict]:
    assert main(["runs", "list", "--home", str(home), "--json"]) == 0
    return {run["run"]: run for run in json.loads(capsys.readouterr().out)}


def test_a_real_run_is_listed_and_shown(tmp_path, capsys):
    home = tmp_path / "home"
    executor = LocalExecutor(one_task_template(), ArtifactCache(LocalStore(home / "artifacts")), home / "runs")
    assert executor.run().succeeded
    runs = listed(home, capsys)
    assert list(runs) == [executor.run_id]
    assert runs[executor.run_id]["state"] == "succeeded" and runs[executor.run_id]["tasks"] == {"succeeded": 1}
    assert runs[executor.run_id]["duration_s"] >= 0
    assert main(["runs", "show", "--home", str(home)]) == 0
    shown = capsys.readouterr().out
    assert f"run {executor.run_id}: succeeded" in shown and "note = v1" in shown and "make" in shown


def test_each_state_is_told_apart_and_the_newest_comes_first(tmp_path, capsys):
    """The state a run recorded at its end; a record still running is `running` while its run holds the home's
    lock and `killed` once nothing does; a record of an older version (no state) is judged by its tasks."""
    home = tmp_path / "home"
    record(home, "r-old", 50.0, {"a": ("failed", "a: exit status 1")}, None)
    record(home, "r-ok", 100.0, {"a": ("succeeded", ""), "b": ("cached", "from run r-0")}, "succeeded")
    record(home, "r-failed", 200.0, {"a": ("failed", "a: exit status 1"), "b": ("skipped", "not started")}, "failed")
    record(home, "r-stopped", 300.0, {"a": ("failed", "interrupted: the run was stopped while it ran"),
                                      "b": ("skipped", "not started: the run was interrupted")}, "interrupted")
    record(home, "r-killed", 400.0, {"a": ("running", "attempt 1 of 3"), "b": ("pending", "")}, "running")
    record(home, "r-live", 500.0, {"a": ("running", "attempt 1 of 3"), "b": ("pending", "")}, "running")
    (home / "runs" / "r-cut").mkdir()
    (home / "runs" / "r-cut" / "run.json").write_text('{"run": "r-cut", "tasks": {')
    with home_lock(home, "r-live"):
        runs = listed(home, capsys)
    assert list(runs) == ["r-live", "r-killed", "r-stopped", "r-failed", "r-ok", "r-old"]
    assert [runs[run]["state"] for run in runs] == [
        "running", "killed", "interrupted", "failed", "succeeded", "failed"]
    assert listed(home, capsys)["r-live"]["state"] == "killed"  # the lock went with its process
    assert runs["r-ok"]["tasks"] == {"succeeded": 1, "cached": 1}
    assert main(["runs", "show", "killed", "--home", str(home)]) == 0
    out, err = capsys.readouterr()
    assert "run r-killed: killed" in out and "r-cut" in err and "unreadable, passed over" in err
    log = home / "runs" / "r-failed" / "a.log"
    log.write_text("".join(f"line {i}\n" for i in range(40)) + "ValueError: bad input\n")
    data = json.loads((home / "runs" / "r-failed" / "run.json").read_text())
    data["tasks"]["a"]["log"] = str(log)
    (home / "runs" / "r-failed" / "run.json").write_text(json.dumps(data))
    assert main(["runs", "show", "r-failed", "--home", str(home)]) == 0
    out = capsys.readouterr().out  # the failed task's log tail, as `stellar run` printed it when it failed
    assert f"task a failed: a: exit status 1\n--- last 30 lines of {log} ---\nline 11\n" in out
    assert out.rstrip().endswith(f"ValueError: bad input\nlogs: {home / 'runs' / 'r-failed' / 'logs'}")


def test_an_unknown_or_ambiguous_run_exits_2_naming_the_runs_there_are(tmp_path, capsys):
    home = tmp_path / "home"
    assert main(["runs", "show", "--home", str(home)]) == 2
    assert f"no runs in {home / 'runs'}" in capsys.readouterr().err
    record(home, "r-1a", 100.0, {"a": ("succeeded", "")}, "succeeded")
    record(home, "r-2a", 200.0, {"a": ("succeeded", "")}, "succeeded")
    assert main(["runs", "show", "nope", "--home", str(home)]) == 2
    assert "'nope' is no run of this home (the newest are: r-2a, r-1a)" in capsys.readouterr().err
    assert main(["runs", "show", "a", "--home", str(home)]) == 2
    assert "'a' matches several runs (they are: r-2a, r-1a)" in capsys.readouterr().err
    assert main(["runs", "show", "1a", "--home", str(home), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run"] == "r-1a"


def test_what_became_of_each_model_is_listed_and_shown(tmp_path, capsys):
    home = tmp_path / "home"
    record(home, "r-1", 100.0, {"deploy-api": ("succeeded", "")}, "succeeded")
    path = home / "runs" / "r-1" / "run.json"
    models = {"sed": {"version": "2", "candidate": "1", "promotion": "promoted", "baseline_version": "2",
                      "reasons": ["PASS sed logg rmse = 0.1", "FAIL sed teff robust_sigma = 76 vs 21.3 of the NumPy "
                                  "baseline: needs <= 21.3"]},
              "spectral": {"version": "1", "candidate": "3", "promotion": "refused",
                           "reasons": ["FAIL spectral teff robust_sigma = 500 (absolute: needs <= 400)"]}}
    file_models(path.parent, models)
    listing = listed(home, capsys)["r-1"]
    assert listing["models"]["spectral"] == {"version": "1", "candidate": "3", "promotion": "refused"}
    assert main(["runs", "list", "--home", str(home)]) == 0
    table = capsys.readouterr().out
    assert "spectral: candidate 3 refused; serving v1" in table
    assert "sed: candidate 1 refused, baseline v2 promoted" in table
    assert main(["runs", "show", "--home", str(home)]) == 0
    shown = capsys.readouterr().out
    assert "spectral: version 1; candidate 3 refused by the quality gates" in shown
    assert "FAIL spectral teff robust_sigma = 500" in shown and "PASS" not in shown


def test_the_list_keeps_run_ids_whole_and_show_takes_their_start(tmp_path, capsys):
    """Piped to a log, the table cut ids to 'stellar-training-20261129-120531-…', which `runs show` did not take."""
    home = tmp_path / "home"
    run = "stellar-training-20261129-120531-c5f7c"
    record(home, run, 100.0, {"deploy-api": ("succeeded", "")}, "succeeded")
    file_models(home / "runs" / run, {name: {"version": "12", "candidate": "13", "promotion": "refused",
                                             "baseline_version": "14"} for name in ("spectral", "lightcurve", "sed")})
    assert main(["runs", "list", "--home", str(home)]) == 0
    assert run in capsys.readouterr().out
    assert main(["runs", "show", "stellar-training-20261129-120531", "--home", str(home)]) == 0
    assert f"run {run}: succeeded" in capsys.readouterr().out


def test_a_failed_tasks_own_error_lines_are_shown_above_other_programs_noise(tmp_path):
    """The last attempt's `ERROR stellar.*` lines, where the stage reported its failure itself: TensorFlow's
    stderr lines after them no longer push them out of the shown tail; a crash still shows its traceback."""
    from workflows.run import log_tail

    log = tmp_path / "train.log"
    noise_lines = [f"E0000 node_def_util.cc:682] NodeDef mentions attribute {i}\n" for i in range(40)]
    noise = "".join(noise_lines)
    first = "=== attempt 1: python -m steps.train\n14:00:01 ERROR stellar.train: an older attempt's error\n"
    last = ("=== attempt 2: python -m steps.train\n14:00:02 INFO stellar.train: training\n" + "".join(noise_lines[:3])
            + "14:00:09 ERROR stellar.stage: no space left to write /out\n" + noise)
    log.write_text(first + last)
    assert log_tail(log) == f"--- the stage's errors (the whole log: {log}) ---\n" \
                            "14:00:09 ERROR stellar.stage: no space left to write /out\n"
    log.write_text(last + "Traceback (most recent call last):\n  File x\nOSError: boom\n")
    assert log_tail(log).startswith(f"--- last 30 lines of {log} ---\n") and log_tail(log).endswith("OSError: boom\n")
