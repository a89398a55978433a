"""Run a rendered WorkflowTemplate on this machine, as Argo would run it in a cluster.

Tasks start when their `depends` have succeeded, up to `parallelism` at once. Each task's container command runs
as a local process (`python` is this interpreter) with its parameters substituted and its input artifacts
copied from the artifact store into a scratch directory; its declared outputs go back to the store. A task's
`retryStrategy` (limit, policy, expression, exponential backoff) is honoured, and so are deadlines as Kubernetes
and Argo keep them (`activeDeadlineSeconds`): an attempt still running after its template's is stopped (SIGTERM,
then SIGKILL after the pod's grace period) and may be retried; once the workflow's passes, every running stage is
stopped that way and nothing more starts. Every finished task is cached
under the hash of what decides its result, so a re-run skips what is done and a failed run resumes where it
stopped. Like Argo's DAG (failFast), no new task starts after a failure; running ones finish. An input artifact
whose stored bytes no longer hash as stored (changed in the store behind the cache's back) is removed, and the task
that made it runs again once in this run before its consumer does.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from steps.core.artifacts import sha256_tree
from steps.core.registry import ModelRegistry
from steps.core.space import failed_path, no_space, out_of_space
from steps.core.version import command_code_version
from workflows.local import launch
from workflows.local.cache import ArtifactCache, ArtifactChanged, CacheEntry, StoredArtifact, task_key
from workflows.local.changes import READ_AFRESH, RUN_RECORD, describe_change, last_materials, write_run_record
from workflows.local.expressions import parse_duration, retry_expression_allows, substitute
from workflows.local.template import Task, UnsupportedTemplate, Workflow, deadline_seconds, load_workflow
from workflows.pipeline import PURE_SOURCES, READS_LOCATION, READS_REGISTRY

PENDING, RUNNING, RETRYING, SUCCEEDED, CACHED, FAILED, SKIPPED = (
    "pending", "running", "retrying", "succeeded", "cached", "failed", "skipped")
_PATH_TAGS = ("inputs.artifacts.", "outputs.artifacts.")
INTERRUPTED_WHILE_RUNNING = "interrupted: the run was stopped while it ran"
INTERRUPTED_WHILE_WAITING = "interrupted: the run was stopped while it waited to retry"
CACHED_FROM = "from run "  # a cached task's note, then the run that made its outputs
ATTEMPT_HEADER = "=== attempt "  # starts each attempt's part of a task's log
RETRY_WAIT_CANCELLED = -2  # TaskFailed's exit code when the run is stopped during a backoff wait
# Exit statuses of a stage the run's stop ended: killed by the SIGTERM `cancel` sends (or a shell's 128 + 15 for it),
# or by the SIGKILL that follows it after the grace period. A task that failed otherwise as the run was being stopped
# keeps its own reason.
STOPPED_BY_US = (-signal.SIGTERM, 128 + signal.SIGTERM, -signal.SIGKILL)
GRACE_SECONDS = 30.0  # a pod's default terminationGracePeriodSeconds: from SIGTERM to SIGKILL


@dataclass
class TaskState:
    """What the executor knows about one task, for the progress display, the final table and run.json."""

    name: str
    status: str = PENDING
    attempts: int = 0
    started: float | None = None
    finished: float | None = None
    key: str = ""
    message: str = ""
    log: str = ""
    outputs: dict[str, StoredArtifact] = field(default_factory=dict)
    material: dict[str, Any] = field(default_factory=dict)  # what its key hashes (`changes`)

    @property
    def duration(self) -> float | None:
        """Seconds from first start to finish (or until now while running)."""
        if self.started is None:
            return None
        return (self.finished or time.time()) - self.started


@dataclass
class RunResult:
    """The outcome of one run."""

    run_id: str
    run_dir: Path
    tasks: dict[str, TaskState]
    parameters: dict[str, str]

    @property
    def succeeded(self) -> bool:
        """True when every task succeeded or came from the cache."""
        return all(state.status in (SUCCEEDED, CACHED) for state in self.tasks.values())

    @property
    def failed_tasks(self) -> list[TaskState]:
        """The tasks that failed, in DAG order."""
        return [state for state in self.tasks.values() if state.status == FAILED]


class TaskFailed(Exception):
    """A task's last attempt failed; `error` tells Argo's Error (infrastructure) from Failed (exit status)."""

    def __init__(self, message: str, exit_code: int, error: bool = False):
        super().__init__(message)
        self.exit_code = exit_code
        self.error = error


def refuse_unknown_parameters(workflow: Workflow, parameters: dict[str, str]) -> None:
    """Refuse a parameter the template does not declare (`UnsupportedTemplate` naming it and the declared ones)."""
    unknown = set(parameters) - set(workflow.parameters)
    if unknown:
        raise UnsupportedTemplate(f"unknown workflow parameter(s): {', '.join(sorted(unknown))}; the template "
                                  f"declares: {', '.join(workflow.parameters)}")


class LocalExecutor:
    """Runs one WorkflowTemplate document against an artifact cache; see the module docstring."""

    def __init__(self, doc: dict[str, Any], cache: ArtifactCache, runs_dir: Path,
                 parameters: dict[str, str] | None = None, parallelism: int | None = None,
                 on_change: Callable[[TaskState], None] | None = None,
                 sleep: Callable[[float], None] | None = None):
        self.workflow = load_workflow(doc)
        refuse_unknown_parameters(self.workflow, parameters or {})
        self.parameters = {**self.workflow.parameters, **(parameters or {})}
        self.cache = cache
        self.parallelism = max(1, parallelism or os.cpu_count() or 1)
        self.run_id = f"{self.workflow.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:5]}"
        self.run_dir = Path(runs_dir) / self.run_id
        self._last_materials = last_materials(Path(runs_dir))  # to say why a task runs again
        self.states = {name: TaskState(name) for name in self.workflow.tasks}
        self.on_change = on_change or (lambda state: None)
        self._lock = threading.Lock()
        self._processes: dict[str, subprocess.Popen] = {}
        self._cancelled = threading.Event()
        self._expired = False  # the workflow's activeDeadlineSeconds passed (and `cancel` stopped the run)
        self._record_unwritable = False  # said once
        self.sleep = sleep or self._cancelled.wait  # a backoff wait ends early when the run is cancelled
        self._registry_keys: list[tuple[str, dict[str, Any], str]] = []
        self.started: float | None = None
        self.finished: float | None = None
        self.outcome = "running"  # then succeeded, failed or interrupted (`run.json`'s `state`)
        self._rebuilt: dict[str, str] = {}  # task run again in this run because a stored output changed -> why

    # -- scheduling ---------------------------------------------------------------------------------------------

    def run(self) -> RunResult:
        """Run every task (or take it from the cache); return when all are done or a failure stops the DAG. On
        KeyboardInterrupt every stage process is stopped and the run recorded before it is raised again."""
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        self._write_record()
        futures: dict[Future, str] = {}
        failed = interrupted = False
        prefix = f"task-{self.run_id}"
        deadline = self.workflow.deadline_seconds
        timer = threading.Timer(deadline, self._expire) if deadline else None
        if timer:
            timer.daemon = True
            timer.start()
        with ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix=prefix) as pool:
            try:
                while True:
                    if not failed and not self._cancelled.is_set():
                        for name in self._ready(set(futures.values())):
                            futures[pool.submit(self._run_task, self.workflow.tasks[name])] = name
                    if not futures:
                        break
                    done, _ = wait(futures, return_when=FIRST_COMPLETED)
                    for future in done:
                        futures.pop(future)
                        if self.states[future.result()].status == FAILED:
                            failed = True
                        self._write_record()
            except KeyboardInterrupt:
                self.cancel()
                pool.shutdown(wait=False, cancel_futures=True)  # queued tasks never start
                interrupted = True
            finally:
                if timer:
                    timer.cancel()
        for thread in threading.enumerate():  # a signal inside `submit` can leave a worker the pool does not join
            if thread.name.startswith(prefix) and thread is not threading.current_thread():
                thread.join()
        for name, state in self.states.items():  # the pool has shut down: no stage process is left running
            if state.status == PENDING:
                state.status = SKIPPED
                state.message = "not started: " + self._why_not_started(name, interrupted)
                self.on_change(state)
        self.finished = time.time()
        failed_any = any(state.status == FAILED for state in self.states.values())
        # a deadline that passed between two tasks stops the run with none failed: it did not succeed all the same
        self.outcome = "interrupted" if interrupted else "failed" if failed_any or self._expired else "succeeded"
        self._write_record()
        if interrupted:
            raise KeyboardInterrupt
        return RunResult(self.run_id, self.run_dir, self.states, self.parameters)

    def _why_not_started(self, name: str, interrupted: bool) -> str:
        if interrupted:
            return "the run was interrupted"
        if self._expired:
            return self._past_deadline()
        if self._cancelled.is_set():
            return "the run was stopped"
        upstream = [up for up in self.workflow.tasks[name].depends
                    if self.states[up].status not in (SUCCEEDED, CACHED)]
        if upstream:
            return f"an upstream task failed or did not run ({', '.join(sorted(upstream))})"
        failed = sorted(other for other, state in self.states.items() if state.status == FAILED)
        return (f"{', '.join(failed)} failed, and no task starts after a failure (as Argo's DAG fail-fast "
                "does); its inputs are ready: run again to go on")

    def _ready(self, submitted: set[str]) -> list[str]:
        return [name for name, task in self.workflow.tasks.items()
                if self.states[name].status == PENDING and name not in submitted
                and all(self.states[up].status in (SUCCEEDED, CACHED) for up in task.depends)]

    def cancel(self) -> None:
        """Stop: no new attempts, and every running stage process group is terminated (SIGTERM), and killed
        (SIGKILL) if still running after the grace period, as Kubernetes stops a pod (`argo stop`, a deadline)."""
        first = not self._cancelled.is_set()
        self._cancelled.set()
        self._signal_all(signal.SIGTERM)
        if first:
            killer = threading.Timer(GRACE_SECONDS, self._signal_all, args=(signal.SIGKILL,))
            killer.daemon = True
            killer.start()

    def _signal_all(self, signum: int) -> None:
        with self._lock:
            for process in self._processes.values():
                try:
                    os.killpg(process.pid, signum)
                except ProcessLookupError:
                    pass

    def _expire(self) -> None:
        """The workflow's deadline passed: stop the run as `cancel` does."""
        self._expired = True
        self.cancel()

    def _past_deadline(self) -> str:
        return (f"the run passed its deadline (the workflow's activeDeadlineSeconds, {self.workflow.deadline_seconds}"
                " s): run it again to go on from the cache")

    # -- one task -----------------------------------------------------------------------------------------------

    def _run_task(self, task: Task) -> str:
        state = self.states[task.name]
        state.log = str(self.run_dir / "logs" / f"{task.name}.log")
        try:
            inputs, material, scope = self._resolve(task)
            state.key, state.material = task_key(material), material
            entry, unusable = self.cache.check(state.key)
            if entry is not None:
                state.status, state.outputs = CACHED, entry.outputs
                state.message = f"{CACHED_FROM}{entry.run}"
            elif self._cancelled.is_set():  # queued in the pool when the run was stopped: it does not start
                return task.name  # pending: the run says why it was not started
            else:
                if unusable:
                    self._log(state, f"=== not taken from the cache: {unusable}\n")
                state.started = time.time()
                state.outputs = self._attempts(task, state, inputs, scope)
                state.status = SUCCEEDED
                reason = self._rebuilt.get(task.name) or unusable or self._why_again(task.name, material)
                state.message = f"ran again: {reason}" if reason else ""
            self._remember_registry_state(task, material, scope)
        except ArtifactChanged as error:
            self._rebuild_producer(task, state, error)
        except TaskFailed as error:
            state.status = FAILED
            stopped = self._cancelled.is_set() and error.exit_code in STOPPED_BY_US
            if self._expired and (stopped or error.exit_code == RETRY_WAIT_CANCELLED):
                state.message = f"stopped: {self._past_deadline()}"
                self._log(state, f"\n=== {state.message}\n")
            else:
                state.message = INTERRUPTED_WHILE_RUNNING if stopped else str(error)  # the stop, not its SIGTERM
        except (UnsupportedTemplate, KeyError, ValueError, OSError) as error:
            producer = self._rebuilding_producer(task)
            if producer:  # fetched while another consumer had the input removed: run once it is rebuilt
                self._wait_for(state, producer)
            elif out_of_space(error):  # copying into or out of the store: one line, not shutil's tuples
                where = failed_path(error) or self.run_dir
                state.status, state.message = FAILED, f"{task.name}: {no_space(f'write {where}', where)}"
            else:
                state.status, state.message = FAILED, str(error)
        except Exception as error:  # noqa: BLE001 - one task's unexpected error must not stop the scheduler
            state.status, state.message = FAILED, f"{type(error).__name__}: {error}"
        state.finished = time.time() if state.started else None
        self.on_change(state)
        return task.name

    def _why_again(self, name: str, material: dict[str, Any]) -> str:
        """What changed since the task's last recorded run; never an error (it only explains a task that ran)."""
        try:
            return describe_change(self._last_materials.get(name) or material, material)
        except Exception as error:  # noqa: BLE001 - a record of another version must not fail a finished task
            return f"(what changed is unknown: {type(error).__name__}: {error})"

    def _rebuild_producer(self, task: Task, state: TaskState, error: ArtifactChanged) -> None:
        """Put the task that made a changed input artifact, and `task`, back to pending (the scheduler runs the
        producer again, then `task`), once per producer and run; a second change fails `task`."""
        producer = next((self._producer(reference) for reference in task.artifacts.values()
                         if self._upstream_artifact(task, reference).key == error.artifact.key), None)
        if producer is not None and producer == self._rebuilding_producer(task):  # another consumer saw it first
            self._wait_for(state, producer)
            return
        if producer is None or producer in self._rebuilt or self._cancelled.is_set():
            state.status, state.message = FAILED, str(error)
            return
        self._rebuilt[producer] = f"{task.name} found that its stored output changed ({error})"
        self._log(state, f"=== {error}; {producer} runs again first\n")
        upstream = self.states[producer]
        upstream.status, upstream.message, upstream.attempts = PENDING, f"runs again: {error}", 0
        self.on_change(upstream)
        self._wait_for(state, producer)

    def _wait_for(self, state: TaskState, producer: str) -> None:
        state.status, state.message, state.started, state.attempts = (
            PENDING, f"waits for {producer}, which runs again", None, 0)

    def _rebuilding_producer(self, task: Task) -> str | None:
        """The producer of one of `task`'s inputs that is being run again (its stored output was removed), if any."""
        return next((producer for producer in map(self._producer, task.artifacts.values())
                     if producer in self._rebuilt and self.states[producer].status not in (SUCCEEDED, CACHED)), None)

    @staticmethod
    def _producer(reference: str) -> str:
        """The task named by an artifact reference `{{tasks.T.outputs.artifacts.A}}`."""
        return reference.strip("{} ").split(".")[1]

    def _resolve(self, task: Task) -> tuple[dict[str, StoredArtifact], dict[str, Any], dict[str, str]]:
        """The task's input artifacts, the material its cache key hashes, and its substitution scope."""
        template = task.template
        wf_scope = {f"workflow.parameters.{k}": v for k, v in self.parameters.items()}
        wf_scope.update({"workflow.name": self.run_id, "workflow.namespace": "local", "workflow.uid": self.run_id})
        declared = template.get("inputs", {})
        params = {p["name"]: str(p["value"]) for p in declared.get("parameters", []) if "value" in p}
        params.update({p["name"]: str(p["default"]) for p in declared.get("parameters", []) if "default" in p
                       and p["name"] not in params})
        params.update({name: substitute(value, wf_scope) for name, value in task.parameters.items()})
        missing = [p["name"] for p in declared.get("parameters", []) if p["name"] not in params]
        if missing:
            raise UnsupportedTemplate(f"task {task.name}: no value for input parameter(s) {', '.join(missing)}")
        inputs = {name: self._upstream_artifact(task, reference) for name, reference in task.artifacts.items()}
        scope = {**wf_scope, **{f"inputs.parameters.{k}": v for k, v in params.items()}}
        container = template["container"]
        material = {
            "image": container.get("image"),
            "command": container.get("command", []),
            "args": [substitute(str(arg), scope, keep=_PATH_TAGS) for arg in container.get("args", [])],
            "env": {e["name"]: e["value"] for e in container.get("env", []) if "value" in e},
            "inputs": {name: artifact.sha256 for name, artifact in sorted(inputs.items())},
            "outputs": sorted(a["name"] for a in template.get("outputs", {}).get("artifacts", [])),
            "code": command_code_version(container.get("command", [])),
        }
        annotations = template.get("metadata", {}).get("annotations", {})
        if annotations.get(READS_REGISTRY):
            material["registry"] = ModelRegistry.open(params[annotations[READS_REGISTRY]]).fingerprint()
        if annotations.get(READS_LOCATION):
            material["location"] = self._location_state(params[annotations[READS_LOCATION]],
                                                        annotations.get(PURE_SOURCES, "").split(","))
        return inputs, material, scope

    def _location_state(self, value: str, pure: list[str]) -> str:
        """What the data a task reads from `value` depends on: nothing for a deterministic source, the content
        hash of a local folder, and this run's identity for anything else (so it is read afresh each run)."""
        if value in pure:
            return value
        if Path(value).exists():
            return sha256_tree(Path(value), unreadable_noted=True)
        return f"{READ_AFRESH}{self.run_id}"

    def _upstream_artifact(self, task: Task, reference: str) -> StoredArtifact:
        parts = reference.strip("{} ").split(".")
        if len(parts) != 5 or parts[0] != "tasks" or parts[2:4] != ["outputs", "artifacts"]:
            raise UnsupportedTemplate(f"task {task.name}: artifact source {reference!r} is not "
                                      "{{tasks.T.outputs.artifacts.A}}")
        upstream, artifact = parts[1], parts[4]
        outputs = self.states[upstream].outputs
        if artifact not in outputs:
            raise UnsupportedTemplate(f"task {task.name}: {upstream} has no output artifact {artifact!r}")
        return outputs[artifact]

    def _attempts(self, task: Task, state: TaskState, inputs: dict[str, StoredArtifact],
                  scope: dict[str, str]) -> dict[str, StoredArtifact]:
        strategy = task.template.get("retryStrategy") or {}
        limit = int(strategy.get("limit", 0))
        policy = strategy.get("retryPolicy", "OnFailure")
        backoff = strategy.get("backoff") or {}
        max_duration = parse_duration(backoff["maxDuration"]) if backoff.get("maxDuration") else None
        first_start = time.time()
        while True:
            state.attempts += 1
            state.status = RUNNING
            state.message = f"attempt {state.attempts} of {limit + 1}"
            self.on_change(state)
            began = time.time()
            # Argo gives a retry (not the first attempt) until maxDuration after the first attempt's start
            until = first_start + max_duration if max_duration is not None and state.attempts > 1 else None
            try:
                return self._attempt(task, state, inputs, scope, until)
            except TaskFailed as failure:
                if self._cancelled.is_set():
                    raise
                allowed = {"Always": True, "OnFailure": not failure.error, "OnError": failure.error,
                           "OnTransientError": failure.error}.get(policy, False)
                expression = strategy.get("expression")
                if allowed and expression:
                    allowed = retry_expression_allows(expression, failure.exit_code,
                                                      "Error" if failure.error else "Failed", time.time() - began,
                                                      str(failure))
                delay = self._backoff(backoff, state.attempts)
                if (not allowed or state.attempts > limit
                        or (max_duration is not None and time.time() - first_start + delay > max_duration)):
                    raise TaskFailed(f"{failure} (attempt {state.attempts} of {limit + 1}; "
                                     f"{'no retry: ' + self._why_not(allowed, state.attempts, limit)})",
                                     failure.exit_code, failure.error) from None
                state.status = RETRYING
                state.message = f"{failure}; retry {state.attempts} of {limit} in {delay:g}s"
                self._log(state, f"=== {state.message}\n")
                self.on_change(state)
                self.sleep(delay)
                if self._cancelled.is_set():
                    raise TaskFailed(INTERRUPTED_WHILE_WAITING, exit_code=RETRY_WAIT_CANCELLED)

    @staticmethod
    def _why_not(allowed: bool, attempts: int, limit: int) -> str:
        if not allowed:
            return "the retry policy or expression does not retry this failure"
        if attempts > limit:
            return "retry limit reached"
        return "backoff maxDuration reached"

    @staticmethod
    def _backoff(backoff: dict[str, Any], failures: int) -> float:
        """Argo's backoff: `duration * factor ** (failures - 1)`, capped by `cap` when one is set."""
        if not backoff.get("duration"):
            return 0.0
        delay = parse_duration(backoff["duration"]) * float(backoff.get("factor", 1)) ** (failures - 1)
        if backoff.get("cap"):
            delay = min(delay, parse_duration(backoff["cap"]))
        return delay

    def _attempt(self, task: Task, state: TaskState, inputs: dict[str, StoredArtifact],
                 task_scope: dict[str, str], until: float | None = None) -> dict[str, StoredArtifact]:
        """One attempt: the stage's process, stopped at its template's deadline or at `until` (a retry's end of
        the backoff's maxDuration), whichever comes first."""
        template = task.template
        workdir = self.run_dir / "work" / task.name / f"attempt-{state.attempts}"
        if workdir.exists():
            shutil.rmtree(workdir)
        scope = dict(task_scope)
        for artifact in template.get("inputs", {}).get("artifacts", []):
            local = workdir / "in" / artifact["name"]
            self.cache.fetch(inputs[artifact["name"]], local)
            scope[f"inputs.artifacts.{artifact['name']}.path"] = str(local)
        outputs = {}
        for artifact in template.get("outputs", {}).get("artifacts", []):
            outputs[artifact["name"]] = workdir / "out" / artifact["name"]
            scope[f"outputs.artifacts.{artifact['name']}.path"] = str(outputs[artifact["name"]])
        (workdir / "out").mkdir(parents=True, exist_ok=True)
        scope.update({"pod.name": f"{self.run_id}-{task.name}", "retries": str(state.attempts - 1)})
        container = template["container"]
        command = [substitute(str(part), scope) for part in container.get("command", []) + container.get("args", [])]
        if command and command[0] in ("python", "python3"):
            command[0] = sys.executable
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               **{e["name"]: substitute(str(e["value"]), scope) for e in container.get("env", []) if "value" in e}}
        raw = template.get("activeDeadlineSeconds")
        limit = deadline_seconds(substitute(raw, scope) if isinstance(raw, str) else raw,
                                 f"template {template.get('name')!r}")
        stop_at = [(time.time() + limit, f"its deadline (activeDeadlineSeconds {limit} s)")] if limit else []
        if until is not None:
            stop_at.append((until, "its retries' time (backoff maxDuration, from the first attempt's start)"))
        stop_at.sort()
        self._log(state, f"{ATTEMPT_HEADER}{state.attempts}: {' '.join(command)}\n")
        if not command:
            raise TaskFailed(f"{task.name}: its template has no command", exit_code=-1, error=True)
        if shutil.which(command[0], path=env.get("PATH")) is None:
            raise TaskFailed(f"could not start {command[0]}: no such executable", exit_code=-1, error=True)
        with open(state.log, "ab") as log:
            try:
                process = subprocess.Popen([sys.executable, "-I", launch.__file__, str(os.getpid()), *command],
                                           stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env,
                                           start_new_session=True)
            except OSError as error:
                raise TaskFailed(f"could not start {sys.executable}: {error}", exit_code=-1, error=True) from error
            with self._lock:
                self._processes[task.name] = process
                if self._cancelled.is_set():  # started as the run was being cancelled
                    os.killpg(process.pid, signal.SIGTERM)
            try:
                code = self._wait(process, timeout=max(0.0, stop_at[0][0] - time.time()) if stop_at else None)
            except subprocess.TimeoutExpired:
                why = stop_at[0][1]
                self._log(state, f"\n=== stopped: past {why}: SIGTERM, then SIGKILL after {GRACE_SECONDS:g} s\n")
                code = self._stop(process)
                raise TaskFailed(f"{task.name}: stopped past {why}", exit_code=code) from None
            finally:
                with self._lock:
                    self._processes.pop(task.name, None)
        if code != 0:
            reason = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            raise TaskFailed(f"{task.name}: {reason}", exit_code=code)
        for name, path in outputs.items():
            if not path.exists():
                raise TaskFailed(f"{task.name}: output artifact {name!r} was not written to {path}", exit_code=0,
                                 error=True)
        entry = self.cache.save_outputs(state.key, task.name, self.run_id, outputs)
        if entry.run != self.run_id:
            self._log(state, f"=== run {entry.run}, sharing the artifact store, stored this task's outputs first: "
                             "this run goes on with those\n")
        shutil.rmtree(workdir, ignore_errors=True)
        return entry.outputs

    @classmethod
    def _stop(cls, process: subprocess.Popen) -> int:
        """Stop a stage's process group as Kubernetes stops a pod: SIGTERM, then SIGKILL after the grace period;
        return its exit status."""
        try:
            os.killpg(process.pid, signal.SIGTERM)
            return cls._wait(process, timeout=GRACE_SECONDS)
        except ProcessLookupError:  # already gone
            return cls._wait(process)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return cls._wait(process)  # no timeout: it cannot time out

    @staticmethod
    def _wait(process: subprocess.Popen, timeout: float | None = None) -> int:
        """Wait for a stage's process to end, then SIGKILL what is left of its process group (as a container's
        processes end with its main one: a child that ignored the SIGTERM must not outlive the attempt) before
        reaping it (until then its pid, the group's id, cannot be reused); return its exit status. Raises
        subprocess.TimeoutExpired after `timeout` seconds."""
        if not hasattr(os, "waitid"):
            return process.wait(timeout=timeout)
        end = None if timeout is None else time.monotonic() + timeout
        delay = 0.0005
        while True:
            try:
                ended = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT | (os.WNOHANG if end else 0))
            except ChildProcessError:  # already reaped
                return process.wait()
            if ended is not None:
                break
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise subprocess.TimeoutExpired(process.args, timeout)
            delay = min(delay * 2, remaining, 0.05)
            time.sleep(delay)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return process.wait()

    def _remember_registry_state(self, task: Task, material: dict[str, Any], scope: dict[str, str]) -> None:
        """After a registry reader finishes, file every registry reader of this run under the new alias state.

        A re-run then finds them while nobody has moved an alias since; a promotion or rollback in between
        changes the fingerprint and they run again.
        """
        if "registry" not in material:
            return
        registry_param = task.template["metadata"]["annotations"][READS_REGISTRY]
        registry_uri = scope[f"inputs.parameters.{registry_param}"]
        self._registry_keys.append((task.name, material, registry_uri))
        for name, earlier, uri in self._registry_keys:
            current = {**earlier, "registry": ModelRegistry.open(uri).fingerprint()}
            key = task_key(current)
            if self.cache.check(key)[0] is None:
                self.cache.record(key, CacheEntry(task=name, run=self.run_id, outputs=self.states[name].outputs))

    # -- records ------------------------------------------------------------------------------------------------

    def _log(self, state: TaskState, text: str) -> None:
        with open(state.log, "a") as log:
            log.write(text)

    def _write_record(self) -> None:
        record = {"run": self.run_id, "workflow": self.workflow.name, "state": self.outcome,
                  "started": self.started, "finished": self.finished, "parameters": self.parameters,
                  "tasks": {name: {**asdict(state), "duration": state.duration,
                                   "outputs": {k: v.model_dump() for k, v in state.outputs.items()}}
                            for name, state in self.states.items()}}
        try:
            write_run_record(self.run_dir, record)
        except OSError as error:  # a full disk: the run goes on, ends as its tasks do; the record keeps its last
            if not self._record_unwritable:
                print(f"stellar run: {self.run_dir / RUN_RECORD} cannot be written ({error.strerror or error}); "
                      "the run goes on, without updating it", file=sys.stderr)
            self._record_unwritable = True

