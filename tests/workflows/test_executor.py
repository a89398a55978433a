"""The local executor on small hand-written templates: order, parallelism, artifacts, retries, cache, resume."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from steps.core.registry import PRODUCTION, ModelRegistry
from steps.core.storage import LocalStore, S3Store
from workflows.local.cache import ArtifactCache
from workflows.local.executor import CACHED, FAILED, SKIPPED, SUCCEEDED, LocalExecutor
from workflows.local.expressions import parse_duration, retry_expression_allows
from workflows.local.template import UnsupportedTemplate
from workflows.pipeline import READS_REGISTRY

# A stage that appends its name and start/end times to a journal, copies its input (if any) to its output
# and appends its own name, and fails while a "fail file" holds a positive count (decrementing it).
STAGE = r"""
import json, os, sys, time, pathlib
name, journal, fail_file, out = sys.argv[1:5]
inp = sys.argv[5] if len(sys.argv) > 5 else None
start = time.time()
ff = pathlib.Path(fail_file)
if ff.exists() and int(ff.read_text() or 0) > 0:
    ff.write_text(str(int(ff.read_text()) - 1))
    print(f"{name}: failing on purpose", file=sys.stderr)
    sys.exit(int(os.environ.get("FAIL_CODE", "1")))
time.sleep(float(os.environ.get("STAGE_SECONDS", "0")))
text = "".join(pathlib.Path(p).read_text() for p in (inp.split(",") if inp else []))
pathlib.Path(out).mkdir(parents=True)
(pathlib.Path(out) / "data.txt").write_text(text + name + "\n")
with open(journal, "a") as j:
    j.write(json.dumps({"task": name, "start": start, "end": time.time()}) + "\n")
"""


def template(tmp_path: Path, retry: dict | None = None, seconds: float = 0.0, fail_code: int = 1,
             reads_registry: bool = False) -> dict:
    """a -> (b, c) -> d, passing a directory artifact along every edge."""
    def container(name: str, inputs: list[str]) -> dict:
        paths = ",".join("{{inputs.artifacts.%s.path}}/data.txt" % i for i in inputs)
        spec = {
            "name": name,
            "inputs": {"parameters": [{"name": "label"}, {"name": "registry"}],
                       "artifacts": [{"name": i, "path": f"/in/{i}"} for i in inputs]},
            "outputs": {"artifacts": [{"name": "out", "path": "/out/out"}]},
            "container": {
                "image": "test", "command": ["python", "-c", STAGE],
                "args": ["{{inputs.parameters.label}}", str(tmp_path / "journal.jsonl"),
                         str(tmp_path / f"fail-{name}"), "{{outputs.artifacts.out.path}}"] + ([paths] if inputs else []),
                "env": [{"name": "STAGE_SECONDS", "value": str(seconds)}, {"name": "FAIL_CODE", "value": str(fail_code)}],
            },
        }
        if retry:
            spec["retryStrategy"] = retry
        if reads_registry:
            spec["metadata"] = {"annotations": {READS_REGISTRY: "registry"}}
        return spec

    def task(name: str, upstream: list[str]) -> dict:
        spec = {"name": name, "template": name,
                "arguments": {"parameters": [{"name": "label", "value": "{{workflow.parameters.prefix}}" + name},
                                             {"name": "registry", "value": "{{workflow.parameters.registry}}"}],
                              "artifacts": [{"name": u, "from": "{{tasks.%s.outputs.artifacts.out}}" % u}
                                            for u in upstream]}}
        if upstream:
            spec["depends"] = " && ".join(upstream)
        return spec

    graph = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "WorkflowTemplate", "metadata": {"name": "diamond"},
            "spec": {"entrypoint": "main",
                     "arguments": {"parameters": [{"name": "prefix", "value": "t-"},
                                                  {"name": "registry", "value": str(tmp_path / "registry")}]},
                     "templates": [{"name": "main", "dag": {"tasks": [task(n, u) for n, u in graph.items()]}},
                                   *(container(n, u) for n, u in graph.items())]}}


def journal(tmp_path: Path) -> list[dict]:
    path = tmp_path / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run(tmp_path: Path, doc: dict, store=None, **kwargs):
    delays: list[float] = []
    executor = LocalExecutor(doc, ArtifactCache(store or LocalStore(tmp_path / "artifacts")), tmp_path / "runs",
                             sleep=delays.append, **kwargs)
    result = executor.run()
    return result, delays, executor


def read_output(executor: LocalExecutor, result, task: str, tmp_path: Path) -> str:
    target = tmp_path / f"fetched-{task}-{time.monotonic_ns()}"
    executor.cache.fetch(result.tasks[task].outputs["out"], target)
    return (target / "data.txt").read_text()


def test_runs_in_dependency_order_and_passes_artifacts(tmp_path):
    result, _, executor = run(tmp_path, template(tmp_path), parallelism=2)
    assert result.succeeded
    order = [entry["task"] for entry in journal(tmp_path)]
    assert order[0] == "t-a" and order[-1] == "t-d"
    assert read_output(executor, result, "d", tmp_path) == "t-a\nt-b\nt-a\nt-c\nt-d\n"
    assert json.loads((result.run_dir / "run.json").read_text())["tasks"]["d"]["status"] == SUCCEEDED


def test_independent_tasks_overlap_only_with_parallelism(tmp_path):
    def overlap(entries):
        b, c = (next(e for e in entries if e["task"] == name) for name in ("t-b", "t-c"))
        return min(b["end"], c["end"]) - max(b["start"], c["start"])

    run(tmp_path / "p2", template(tmp_path / "p2", seconds=1.0), parallelism=2)
    run(tmp_path / "p1", template(tmp_path / "p1", seconds=1.0), parallelism=1)
    assert overlap(journal(tmp_path / "p2")) > 0.5
    assert overlap(journal(tmp_path / "p1")) < 0


def test_retries_with_exponential_backoff_and_logs_each_attempt(tmp_path):
    (tmp_path / "fail-b").write_text("2")
    retry = {"limit": 3, "retryPolicy": "OnFailure", "backoff": {"duration": "2s", "factor": 3, "maxDuration": "1m"}}
    result, delays, _ = run(tmp_path, template(tmp_path, retry=retry))
    assert result.succeeded
    assert result.tasks["b"].attempts == 3
    assert delays == [2.0, 6.0]
    log = Path(result.tasks["b"].log).read_text()
    assert log.count("=== attempt") == 3 and "failing on purpose" in log


def test_a_task_not_started_says_whether_its_upstream_failed_or_the_dag_stopped(tmp_path):
    """b fails at once while c runs for a second; e, which needs only c, is then never started, as Argo's fail-fast
    DAG starts no task after a failure; d's upstream failed."""
    (tmp_path / "fail-b").write_text("1")
    doc = template(tmp_path, seconds=1.0)
    dag = doc["spec"]["templates"][0]["dag"]["tasks"]
    b = next(task for task in dag if task["name"] == "b")  # e runs b's template on c's output
    dag.append({**b, "name": "e", "depends": "c", "arguments": {
        **b["arguments"], "artifacts": [{"name": "a", "from": "{{tasks.c.outputs.artifacts.out}}"}]}})
    result, _, _ = run(tmp_path, doc)
    assert result.tasks["b"].status == FAILED and result.tasks["c"].status == SUCCEEDED
    assert result.tasks["e"].status == SKIPPED and result.tasks["e"].message == (
        "not started: b failed, and no task starts after a failure (as Argo's DAG fail-fast does); its inputs are "
        "ready: run again to go on")
    assert result.tasks["d"].message == "not started: an upstream task failed or did not run (b)"


def test_real_backoff_waits(tmp_path):
    (tmp_path / "fail-a").write_text("1")
    retry = {"limit": 1, "backoff": {"duration": "1s", "factor": 2}}
    executor = LocalExecutor(template(tmp_path, retry=retry), ArtifactCache(LocalStore(tmp_path / "art")),
                             tmp_path / "runs")
    started = time.monotonic()
    assert executor.run().succeeded
    assert time.monotonic() - started >= 1.0


def test_retry_limit_and_expression_stop_retries(tmp_path):
    (tmp_path / "fail-b").write_text("9")
    retry = {"limit": 2, "retryPolicy": "Always", "backoff": {"duration": "1s", "factor": 2}}
    result, delays, _ = run(tmp_path, template(tmp_path, retry=retry))
    assert result.tasks["b"].status == FAILED and result.tasks["b"].attempts == 3
    assert "retry limit reached" in result.tasks["b"].message
    assert result.tasks["d"].status == SKIPPED

    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "fail-b").write_text("9")
    retry = {**retry, "expression": "asInt(lastRetry.exitCode) != 2"}
    result, delays, _ = run(tmp_path / "x", template(tmp_path / "x", retry=retry, fail_code=2))
    assert result.tasks["b"].attempts == 1 and delays == []
    assert "does not retry" in result.tasks["b"].message


def _stage_processes(tmp_path: Path) -> list[int]:
    """PIDs of the stage processes still running for this test's templates (they name its journal)."""
    return _processes_naming(str(tmp_path / "journal.jsonl"))


def test_an_attempt_past_its_templates_deadline_is_stopped_and_retried(tmp_path):
    """a hangs (5 s) past its template's activeDeadlineSeconds (1 s): each attempt is stopped, as Kubernetes stops
    a pod past its deadline, and retried as its retryStrategy says; the run fails well before a would have ended."""
    doc = template(tmp_path, retry={"limit": 1, "retryPolicy": "Always"}, seconds=5.0)
    next(t for t in doc["spec"]["templates"] if t["name"] == "a")["activeDeadlineSeconds"] = 1
    started = time.monotonic()
    result, _, _ = run(tmp_path, doc)
    assert time.monotonic() - started < 4.5
    a = result.tasks["a"]
    assert a.status == FAILED and a.attempts == 2
    assert a.message.startswith("a: stopped past its deadline (activeDeadlineSeconds 1 s) (attempt 2 of 2; ")
    assert Path(a.log).read_text().count("=== attempt") == 2
    assert result.tasks["d"].status == SKIPPED and journal(tmp_path) == []
    assert _stage_processes(tmp_path) == []


PAST_DEADLINE_2S = ("the run passed its deadline (the workflow's activeDeadlineSeconds, 2 s): run it again to go on "
                    "from the cache")


def test_a_run_past_the_workflows_deadline_stops_every_stage_and_starts_nothing(tmp_path):
    """The workflow's activeDeadlineSeconds (2 s) passes while b and c run (3 s each): both are stopped, d never
    starts, each says why, and the run is recorded as failed (not interrupted)."""
    doc = template(tmp_path, seconds=3.0)
    doc["spec"]["activeDeadlineSeconds"] = 2
    next(t for t in doc["spec"]["templates"] if t["name"] == "a")["container"]["env"][0]["value"] = "0"
    started = time.monotonic()
    result, _, _ = run(tmp_path, doc, parallelism=2)
    assert time.monotonic() - started < 2.9
    past = PAST_DEADLINE_2S
    assert result.tasks["a"].status == SUCCEEDED
    assert [(result.tasks[t].status, result.tasks[t].message) for t in "bc"] == [(FAILED, f"stopped: {past}")] * 2
    assert (result.tasks["d"].status, result.tasks["d"].message) == (SKIPPED, f"not started: {past}")
    assert Path(result.tasks["b"].log).read_text().endswith(f"=== stopped: {past}\n")
    assert json.loads((result.run_dir / "run.json").read_text())["state"] == "failed"
    assert [entry["task"] for entry in journal(tmp_path)] == ["t-a"]
    assert _stage_processes(tmp_path) == []


def test_a_run_whose_deadline_passes_between_two_tasks_is_recorded_failed(tmp_path):
    """The run's deadline passes as a finishes, before b and c start: nothing runs to fail, but the run stopped
    with three tasks not run, and is recorded as failed, not succeeded."""
    doc = template(tmp_path)
    doc["spec"]["activeDeadlineSeconds"] = 3600

    def expire_after_a(state) -> None:
        if state.name == "a" and state.status == SUCCEEDED:
            executor._expire()  # as the deadline's timer would, at that moment

    executor = LocalExecutor(doc, ArtifactCache(LocalStore(tmp_path / "artifacts")), tmp_path / "runs",
                             on_change=expire_after_a)
    result = executor.run()
    assert [result.tasks[t].status for t in "abcd"] == [SUCCEEDED, SKIPPED, SKIPPED, SKIPPED]
    assert result.tasks["b"].message.startswith("not started: the run passed its deadline")
    assert json.loads((result.run_dir / "run.json").read_text())["state"] == "failed" and not result.succeeded


@pytest.mark.parametrize("where, value", [(where, value) for where in ("workflow", "template")
                                           for value in (0, "1h", True)] + [("workflow", "2")])
def test_a_deadline_that_is_not_whole_seconds_is_refused_before_the_run_naming_it(tmp_path, where, value):
    """Argo takes a template's activeDeadlineSeconds as a number or a string (an expression), a workflow's as an
    integer only; either is checked before anything runs."""
    doc = template(tmp_path)
    (doc["spec"] if where == "workflow" else doc["spec"]["templates"][1])["activeDeadlineSeconds"] = value
    kind = "an integer" if where == "workflow" else "a whole number of"
    name = "the workflow" if where == "workflow" else "template 'a'"
    with pytest.raises(UnsupportedTemplate, match=re.escape(f"{name}: activeDeadlineSeconds {value!r} is not {kind}")):
        run(tmp_path, doc)
    assert journal(tmp_path) == [] and not (tmp_path / "runs").exists()


def test_a_retry_is_stopped_when_the_backoffs_max_duration_since_the_first_attempt_passes(tmp_path):
    """Argo gives a retry (not the first attempt) until maxDuration after the first attempt's start: a runs 10 s on
    its retry, which is stopped 3 s after the first attempt began, and not retried again."""
    (tmp_path / "fail-a").write_text("1")
    retry = {"limit": 2, "retryPolicy": "Always", "backoff": {"duration": "1s", "maxDuration": "3s"}}
    started = time.monotonic()
    result, delays, _ = run(tmp_path, template(tmp_path, retry=retry, seconds=10.0))
    assert time.monotonic() - started < 6 and delays == [1.0]
    a = result.tasks["a"]
    assert (a.status, a.attempts) == (FAILED, 2)
    assert a.message == ("a: stopped past its retries' time (backoff maxDuration, from the first attempt's start) "
                         "(attempt 2 of 3; no retry: backoff maxDuration reached)")
    assert "=== stopped: past its retries' time" in Path(a.log).read_text()
    assert _stage_processes(tmp_path) == []


def test_a_task_queued_when_the_run_passes_its_deadline_does_not_start(tmp_path):
    """With parallelism 1, c waits in the pool while b runs; the run's deadline passes: b is stopped, and c does not
    start then (it would only be stopped at once), but is skipped, saying why."""
    doc = template(tmp_path, seconds=3.0)
    doc["spec"]["activeDeadlineSeconds"] = 2
    next(t for t in doc["spec"]["templates"] if t["name"] == "a")["container"]["env"][0]["value"] = "0"
    result, _, _ = run(tmp_path, doc, parallelism=1)
    past = PAST_DEADLINE_2S
    assert (result.tasks["b"].status, result.tasks["b"].message) == (FAILED, f"stopped: {past}")
    assert [(result.tasks[t].status, result.tasks[t].message, result.tasks[t].attempts) for t in "cd"] == [
        (SKIPPED, f"not started: {past}", 0)] * 2
    assert not Path(result.tasks["c"].log).exists()


# prints "ignoring" (a line the attempt's header, which quotes the code, does not hold) once SIGTERM is ignored
IGNORES_SIGTERM = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                   "print('ignor' + 'ing', flush=True); time.sleep(60)")


def _stage_running(doc: dict, name: str, code: str, marker: str) -> dict:
    spec = next(t for t in doc["spec"]["templates"] if t["name"] == name)
    spec["container"]["command"], spec["container"]["args"] = ["python", "-c", code, marker], []
    return spec


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the processes in /proc")
def test_a_stopped_run_kills_a_stage_that_ignores_sigterm_after_the_grace_period(tmp_path, monkeypatch):
    """Ctrl-C (`cancel`) on a stage that ignores SIGTERM: SIGKILL follows after the grace period, as when a pod is
    deleted, rather than the run waiting for the attempt's deadline (an hour)."""
    import threading

    from workflows.local import executor as executor_module

    monkeypatch.setattr(executor_module, "GRACE_SECONDS", 1.0)
    marker = f"{tmp_path}-ignores-sigterm"
    doc = template(tmp_path)
    _stage_running(doc, "a", IGNORES_SIGTERM, marker)["activeDeadlineSeconds"] = 3600
    executor = LocalExecutor(doc, ArtifactCache(LocalStore(tmp_path / "art")), tmp_path / "runs")
    runner = threading.Thread(target=executor.run)
    runner.start()
    log, deadline = tmp_path / "runs" / executor.run_id / "logs" / "a.log", time.time() + 30
    while time.time() < deadline and "ignoring" not in (log.read_text().splitlines() if log.exists() else []):
        time.sleep(0.05)
    executor.cancel()
    runner.join(15)
    stuck = runner.is_alive()
    for pid in _processes_naming(marker):
        os.kill(pid, signal.SIGKILL)
    runner.join()
    assert not stuck, "the run waited for the stage past the grace period"
    assert executor.states["a"].status == FAILED
    assert executor.states["a"].message == "interrupted: the run was stopped while it ran"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the processes in /proc")
def test_no_process_of_an_attempt_stopped_at_its_deadline_outlives_it(tmp_path):
    """The stage ends on SIGTERM, but a child it started ignores it: the child is killed with the attempt, as the
    processes of a container end with its main one, rather than run on beside the retry."""
    marker = f"{tmp_path}-child-ignores-sigterm"
    child = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', %r, %r]); time.sleep(60)" % (
        IGNORES_SIGTERM, marker)
    doc = template(tmp_path)
    _stage_running(doc, "a", child, marker)["activeDeadlineSeconds"] = 1
    result, _, _ = run(tmp_path, doc)
    left = _processes_naming(marker)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert result.tasks["a"].message.startswith("a: stopped past its deadline (activeDeadlineSeconds 1 s)")
    assert left == []


def test_rerun_is_fully_cached(tmp_path):
    first, _, _ = run(tmp_path, template(tmp_path))
    executed = len(journal(tmp_path))
    second, _, _ = run(tmp_path, template(tmp_path))
    assert first.succeeded and second.succeeded
    assert {state.status for state in second.tasks.values()} == {CACHED}
    assert len(journal(tmp_path)) == executed == 4


def test_a_change_reruns_only_what_it_reaches(tmp_path):
    run(tmp_path, template(tmp_path))
    doc = template(tmp_path)
    doc["spec"]["templates"][3]["container"]["env"][0]["value"] = "0.01"  # c's command, not its output, changes
    result, _, _ = run(tmp_path, doc)
    statuses = {name: state.status for name, state in result.tasks.items()}
    assert statuses == {"a": CACHED, "b": CACHED, "c": SUCCEEDED, "d": CACHED}  # d's inputs hash the same

    assert result.tasks["c"].message == "ran again: environment variable STAGE_SECONDS changed"

    doc["spec"]["templates"][0]["dag"]["tasks"][2]["arguments"]["parameters"][0]["value"] = "other-c"
    result, _, _ = run(tmp_path, doc)
    statuses = {name: state.status for name, state in result.tasks.items()}
    assert statuses == {"a": CACHED, "b": CACHED, "c": SUCCEEDED, "d": SUCCEEDED}
    assert result.tasks["c"].message == "ran again: argument #1 changed (t-c -> other-c)"
    assert result.tasks["d"].message == "ran again: its input 'c' changed"


def test_a_stored_output_changed_since_is_rebuilt_not_reused(tmp_path):
    first, _, executor = run(tmp_path, template(tmp_path))
    stored = first.tasks["b"].outputs["out"]
    good = read_output(executor, first, "b", tmp_path)
    (tmp_path / "artifacts" / stored.key / "data.txt").write_text("ten rows of something else\n")
    again, _, executor = run(tmp_path, template(tmp_path))
    statuses = {name: state.status for name, state in again.tasks.items()}
    assert statuses == {"a": CACHED, "b": SUCCEEDED, "c": CACHED, "d": CACHED}  # b's rebuild hashes as before
    assert "ran again: its output 'out' of run" in again.tasks["b"].message
    assert "was changed in the store since" in again.tasks["b"].message
    assert "not taken from the cache" in Path(again.tasks["b"].log).read_text()
    assert read_output(executor, again, "b", tmp_path) == good
    third, _, _ = run(tmp_path, template(tmp_path))
    assert {state.status for state in third.tasks.values()} == {CACHED}


def test_outputs_listed_anew_but_with_the_same_bytes_are_reused(tmp_path):
    """A home copied without its files' times (`cp -r`): the bytes are hashed once, and the entry kept."""
    import os

    first, _, _ = run(tmp_path, template(tmp_path))
    for path in (tmp_path / "artifacts" / "artifacts").rglob("*"):
        if path.is_file():
            os.utime(path, (1_800_000_000, 1_800_000_000))
    again, _, _ = run(tmp_path, template(tmp_path))
    assert {state.status for state in again.tasks.values()} == {CACHED}
    entry = json.loads((tmp_path / "artifacts" / "cache" / f"{first.tasks['a'].key}.json").read_text())
    assert entry["outputs"]["out"]["listing"] != first.tasks["a"].outputs["out"].listing  # recorded anew


def test_an_unreadable_cache_entry_or_a_lost_output_runs_the_task_again(tmp_path):
    first, _, _ = run(tmp_path, template(tmp_path))
    (tmp_path / "artifacts" / "cache" / f"{first.tasks['a'].key}.json").write_text('{"task": "a", "ru')
    shutil.rmtree(tmp_path / "artifacts" / first.tasks["c"].outputs["out"].key)
    again, _, _ = run(tmp_path, template(tmp_path))
    assert {name: state.status for name, state in again.tasks.items()} == {
        "a": SUCCEEDED, "b": CACHED, "c": SUCCEEDED, "d": CACHED}
    assert "cache entry" in again.tasks["a"].message and "is unreadable" in again.tasks["a"].message
    assert "is gone from" in again.tasks["c"].message


def test_bytes_changed_unseen_by_the_listing_are_caught_when_fetched_and_rebuilt_in_the_run(tmp_path):
    """The same size and mtime pass the cheap check on lookup; the consumer's fetch hashes the bytes, refuses
    them, and removes the stored artifact; the task that made it runs again, then the consumer, in the same run."""
    import os

    first, _, _ = run(tmp_path, template(tmp_path))
    stored = tmp_path / "artifacts" / first.tasks["a"].outputs["out"].key / "data.txt"
    status = stored.stat()
    stored.write_text("X" * status.st_size)
    os.utime(stored, ns=(status.st_atime_ns, status.st_mtime_ns))
    doc = template(tmp_path)
    doc["spec"]["templates"][3]["container"]["env"][0]["value"] = "0.01"  # c runs again and fetches a's output
    second, _, executor = run(tmp_path, doc)
    assert {name: state.status for name, state in second.tasks.items()} == {
        "a": SUCCEEDED, "b": CACHED, "c": SUCCEEDED, "d": CACHED}
    assert second.tasks["a"].message.startswith("ran again: c found that its stored output changed (")
    assert "its bytes changed since it was stored" in second.tasks["a"].message and second.tasks["c"].attempts == 1
    assert "its bytes changed since it was stored" in Path(second.tasks["c"].log).read_text()
    assert read_output(executor, second, "a", tmp_path) == "t-a\n"
    assert [entry["task"] for entry in journal(tmp_path)][-2:] == ["t-a", "t-c"]


def test_failed_run_resumes_from_the_failed_task(tmp_path):
    (tmp_path / "fail-c").write_text("1")
    first, _, _ = run(tmp_path, template(tmp_path), parallelism=1)
    assert first.tasks["c"].status == FAILED and first.tasks["d"].status == SKIPPED
    second, _, _ = run(tmp_path, template(tmp_path), parallelism=1)
    statuses = {name: state.status for name, state in second.tasks.items()}
    assert statuses == {"a": CACHED, "b": CACHED, "c": SUCCEEDED, "d": SUCCEEDED}


def test_artifacts_through_a_real_s3_server(tmp_path, s3_server, s3_bucket):
    store = S3Store(s3_bucket, "runs", endpoint_url=s3_server)
    result, _, executor = run(tmp_path, template(tmp_path), store=store)
    assert result.succeeded
    assert any(key.startswith("artifacts/") for key in store.list(""))
    assert read_output(executor, result, "d", tmp_path).endswith("t-d\n")
    download = store.download_dir
    store.download_dir = lambda *args: pytest.fail("a fully cached run downloaded an artifact")
    again, _, _ = run(tmp_path, template(tmp_path), store=store)
    assert {state.status for state in again.tasks.values()} == {CACHED}
    store.download_dir = download
    changed = again.tasks["c"].outputs["out"]
    store.put(f"{changed.key}/data.txt", b"changed in the bucket\n")
    third, _, _ = run(tmp_path, template(tmp_path), store=store)
    assert {name: state.status for name, state in third.tasks.items()} == {
        "a": CACHED, "b": CACHED, "c": SUCCEEDED, "d": CACHED}
    assert "was changed in the store since" in third.tasks["c"].message


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_two_runs_sharing_a_store_each_read_what_their_own_producer_made(tmp_path, backend, request):
    """Two homes given one --artifact-store ran the same task at once: the second upload replaced the first, and the
    first run's consumer failed with "changed while it was read" (both `stellar run`s failed this way). Each copy
    now has a place of its own, by the hash of its bytes, and what a reader fetched is what was stored there."""
    if backend == "s3":
        store = S3Store(request.getfixturevalue("s3_bucket"), "shared",
                        endpoint_url=request.getfixturevalue("s3_server"))
    else:
        store = LocalStore(tmp_path / "shared")
    made = {}
    for home, text in (("first", "trained one way\n"), ("second", "trained another way\n")):
        (tmp_path / home / "model").mkdir(parents=True)
        (tmp_path / home / "model" / "weights.txt").write_text(text)
        made[home] = ArtifactCache(store).save_outputs("same-key", "train", home, {"model": tmp_path / home / "model"})
    # the second upload went to a place of its own (before, it replaced the first run's bytes under its reader);
    # the second run goes on with the first one's outputs, so both homes' downstream tasks see the same inputs
    for home in ("first", "second"):
        ArtifactCache(store).fetch(made[home].outputs["model"], tmp_path / home / "fetched")
        assert (tmp_path / home / "fetched" / "weights.txt").read_text() == "trained one way\n"
    assert made["second"] == made["first"] and ArtifactCache(store).check("same-key")[0].run == "first"
    (tmp_path / "third" / "model").mkdir(parents=True)
    (tmp_path / "third" / "model" / "weights.txt").write_text("trained a third way\n")
    assert ArtifactCache(store).save_outputs("same-key", "train", "third",
                                             {"model": tmp_path / "third" / "model"}).run == "first"


def test_registry_readers_rerun_after_an_alias_change(tmp_path):
    from steps.core.artifacts import ArtifactWriter

    doc = template(tmp_path, reads_registry=True)
    run(tmp_path, doc)
    again, _, _ = run(tmp_path, doc)
    assert {state.status for state in again.tasks.values()} == {CACHED}
    registry = ModelRegistry.open(str(tmp_path / "registry"))
    with ArtifactWriter(tmp_path / "m", stage="train.test") as writer:
        writer.path("w").write_text("w")
    registry.set_alias("sed", PRODUCTION, registry.register("sed", tmp_path / "m").version)
    after, _, _ = run(tmp_path, doc)
    assert {state.status for state in after.tasks.values()} == {SUCCEEDED}
    assert after.tasks["a"].message == (
        "ran again: the registry's aliases changed since (a promotion, a rollback or a new candidate)")


def test_missing_output_is_an_error(tmp_path):
    doc = template(tmp_path)
    doc["spec"]["templates"][1]["outputs"]["artifacts"].append({"name": "extra", "path": "/out/extra"})
    result, _, _ = run(tmp_path, doc)
    assert result.tasks["a"].status == FAILED
    assert "output artifact 'extra' was not written" in result.tasks["a"].message


def test_unknown_parameter_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown workflow parameter.*nope"):
        LocalExecutor(template(tmp_path), ArtifactCache(LocalStore(tmp_path)), tmp_path, parameters={"nope": "1"})


@pytest.mark.parametrize("expression, code, expected", [
    ("asInt(lastRetry.exitCode) != 2", 1, True),
    ("asInt(lastRetry.exitCode) != 2", 2, False),
    ("lastRetry.status == 'Error' || asInt(lastRetry.exitCode) == 137", 137, True),
    ("!(asInt(lastRetry.exitCode) in [2, 3])", 3, False),
])
def test_retry_expressions(expression, code, expected):
    assert retry_expression_allows(expression, code, "Failed", 1.0) is expected


def test_retry_expression_refuses_arbitrary_code():
    with pytest.raises(ValueError, match="not supported"):
        retry_expression_allows("__import__('os').system('true')", 1, "Failed", 1.0)


@pytest.mark.parametrize("text, seconds", [("15s", 15), ("1m30s", 90), ("500ms", 0.5), ("2h", 7200), (10, 10)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_a_read_location_is_hashed_or_read_afresh(tmp_path):
    from workflows.pipeline import PURE_SOURCES, READS_LOCATION

    def doc_reading(location: str) -> dict:
        doc = template(tmp_path)
        doc["spec"]["arguments"]["parameters"][1]["value"] = location
        doc["spec"]["templates"][1]["metadata"] = {"annotations": {READS_LOCATION: "registry",
                                                                   PURE_SOURCES: "pure-name"}}
        return doc

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "star.fits").write_text("one")
    run(tmp_path, doc_reading(str(folder)))
    assert run(tmp_path, doc_reading(str(folder)))[0].tasks["a"].status == CACHED
    (folder / "star.fits").write_text("two")
    changed, _, _ = run(tmp_path, doc_reading(str(folder)))
    assert changed.tasks["a"].status == SUCCEEDED and changed.tasks["d"].status == CACHED  # same output
    run(tmp_path, doc_reading("pure-name"))
    assert run(tmp_path, doc_reading("pure-name"))[0].tasks["a"].status == CACHED
    live, _, _ = run(tmp_path, doc_reading("s3://archive/prefix"))
    again, _, _ = run(tmp_path, doc_reading("s3://archive/prefix"))
    assert live.tasks["a"].status == again.tasks["a"].status == SUCCEEDED


def test_cancel_ends_a_backoff_wait(tmp_path):
    import threading

    from workflows.local.executor import RETRYING

    (tmp_path / "fail-a").write_text("1")
    retry = {"limit": 2, "backoff": {"duration": "60s", "factor": 2}}
    waiting = threading.Event()
    executor = LocalExecutor(template(tmp_path, retry=retry), ArtifactCache(LocalStore(tmp_path / "art")),
                             tmp_path / "runs", on_change=lambda s: s.status == RETRYING and waiting.set())
    runner = threading.Thread(target=executor.run)
    started = time.monotonic()
    runner.start()
    assert waiting.wait(60)
    executor.cancel()
    runner.join(30)
    assert not runner.is_alive() and time.monotonic() - started < 30
    assert executor.states["a"].status == FAILED
    assert executor.states["a"].message == "interrupted: the run was stopped while it waited to retry"


def _processes_naming(text: str) -> list[int]:
    """Pids of this machine's processes whose command line mentions `text`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(cmdline.parent.name))
        except (OSError, ValueError):
            continue
    return found


def _kill_and_expect_no_stage(executor: subprocess.Popen, marker: str) -> None:
    """SIGKILL the executor; within 20 s no process naming `marker` may be left."""
    executor.kill()
    executor.wait()
    deadline = time.time() + 20
    while time.time() < deadline and _processes_naming(marker):
        time.sleep(0.1)
    assert not _processes_naming(marker), "the stage runs on after its executor was killed"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's (prctl)")
def test_a_stage_does_not_outlive_an_executor_killed_outright(tmp_path):
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps(template(tmp_path, seconds=120)))
    runner = ("import json, sys; from pathlib import Path; from steps.core.storage import LocalStore; "
              "from workflows.local.cache import ArtifactCache; from workflows.local.executor import LocalExecutor; "
              "LocalExecutor(json.loads(Path(sys.argv[1]).read_text()), "
              "ArtifactCache(LocalStore(Path(sys.argv[2]))), Path(sys.argv[3])).run()")
    executor = subprocess.Popen([sys.executable, "-c", runner, str(doc), str(tmp_path / "art"), str(tmp_path / "runs")])
    marker = str(tmp_path / "journal.jsonl")
    deadline = time.time() + 60
    while time.time() < deadline and not _processes_naming(marker):
        time.sleep(0.05)
    assert _processes_naming(marker), "the stage never started"
    _kill_and_expect_no_stage(executor, marker)


SUPERVISED = "import sys; from workflows.local.launch import main; sys.exit(main(sys.argv[1:], exec_command=False))"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the processes in /proc")
def test_where_the_kernel_cannot_tie_a_stage_to_the_run_the_launcher_supervises_it(tmp_path):
    """Off Linux the launcher stays as the stage's parent: the stage's exit status and signal come through it, and a
    killed executor is noticed within a poll and the stage stopped."""
    def launched(*command: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", SUPERVISED, str(os.getpid()), *command],
                                start_new_session=True)

    assert launched(sys.executable, "-c", "raise SystemExit(3)").wait(timeout=30) == 3
    stopped = launched(sys.executable, "-c", "import time; time.sleep(60)")
    time.sleep(1.0)
    os.killpg(stopped.pid, signal.SIGTERM)  # as the executor stops a run
    assert stopped.wait(timeout=30) == -signal.SIGTERM

    marker = str(tmp_path / "supervised-stage")
    executor = subprocess.Popen([sys.executable, "-c", (
        "import os, subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', {SUPERVISED!r}, str(os.getpid()), sys.executable, '-c', "
        f"'import time; time.sleep(120)', {marker!r}], start_new_session=True); time.sleep(120)")])
    deadline = time.time() + 30
    while time.time() < deadline and len(_processes_naming(marker)) < 3:  # the executor, the launcher, the stage
        time.sleep(0.05)
    assert len(_processes_naming(marker)) == 3, "the launcher and its stage never started"
    _kill_and_expect_no_stage(executor, marker)


def test_a_missing_executable_is_an_error_naming_it(tmp_path):
    doc = template(tmp_path)
    doc["spec"]["templates"][1]["container"]["command"] = ["no-such-stage-binary"]
    result, _, _ = run(tmp_path, doc)
    assert result.tasks["a"].status == FAILED
    assert "could not start no-such-stage-binary: no such executable" in result.tasks["a"].message


def test_a_run_record_that_cannot_be_written_is_said_once_and_the_run_goes_on(tmp_path, capsys):
    """On a full disk the record's rewrite raised out of the scheduler: a traceback, and the run left 'killed'."""
    executor = LocalExecutor(template(tmp_path), ArtifactCache(LocalStore(tmp_path / "art")), tmp_path / "runs")
    (executor.run_dir / "run.tmp").mkdir(parents=True)  # where the record is written before its rename
    assert executor.run().succeeded
    err = capsys.readouterr().err
    assert err.count("run.json cannot be written (Is a directory); the run goes on") == 1


def test_a_store_without_space_fails_the_task_in_one_line_not_shutils_tuples(tmp_path, monkeypatch):
    """A copy into the artifact store that runs out of space: shutil.copytree reports every file's failure as a
    (source, target, error) tuple; the task's message says where and what frees space, once."""
    target = tmp_path / "artifacts" / "artifacts" / "x" / "data.txt"

    def full(*args, **kwargs):
        raise shutil.Error([(str(tmp_path / "work" / "data.txt"), str(target), "[Errno 28] No space left on device")])

    monkeypatch.setattr(ArtifactCache, "save_outputs", full)
    result, _, _ = run(tmp_path, template(tmp_path))
    message = result.tasks["a"].message
    assert result.tasks["a"].status == FAILED
    assert message.startswith(f"a: no space left to write {target} (") and "free of" in message
    assert "stellar prune" in message and "[(" not in message and "Errno" not in message
