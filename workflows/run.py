"""`stellar run`: the rendered WorkflowTemplate, run on this machine against a home directory."""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml
from rich.console import Console
from rich.markup import escape

from steps.core.artifacts import MANIFEST, Manifest
from steps.core.quarantine import QUARANTINE_TABLE, is_label_row, named_reasons
from steps.core.storage import BadEndpoint, ObjectStore, StoreUnusable, open_store
from workflows.local.cache import ArtifactCache, ArtifactChanged
from workflows.local.changes import RUN_RECORD, write_run_record
from workflows.local.display import Progress, task_table
from workflows.local.executor import (ATTEMPT_HEADER, CACHED, CACHED_FROM, LocalExecutor, RunResult,
                                     refuse_unknown_parameters)
from workflows.local.template import UnsupportedTemplate, load_workflow
from workflows.render import rendered_documents, WORKFLOW_TEMPLATE_FILE
from workflows.validate import check_references

LOG_TAIL_LINES = 30
STAGE_ERROR = re.compile(r"\d\d:\d\d:\d\d ERROR stellar\.")  # a stage's own error line (`steps.core.logs`)
STORE_PARAMETERS = ("registry", "raw-cache")  # parameters naming a store that outlives the run
MODEL_OUTCOME_KEYS = ("version", "candidate", "promotion", "baseline_version", "because", "baseline_refused",
                      "reasons", "from_run")  # in run.json


def local_parameters(home: Path) -> dict[str, str]:
    """Where a local run keeps what outlives it (the registry and the raw-archive cache, under the home), and that
    its deploy task points the local API at the new versions rather than upgrading a Helm release."""
    return {"registry": str(home / "registry"), "raw-cache": str(home / "raw-cache"), "deploy-target": "local"}


def usable_store(option: str, uri: str, s3_endpoint: str | None, probe: bool = True) -> ObjectStore:
    """The store at `uri`, checked before the run starts (`ObjectStore.probe`, unless `probe` is false: a reader
    that writes nothing): a misconfigured store is one line naming the `option` that gave it ("--artifact-store ",
    "-p registry="), not a failed task per stage."""
    try:
        store = open_store(uri, s3_endpoint)
        if probe:
            store.probe()
    except BadEndpoint as error:
        raise ValueError(f"--s3-endpoint {error}" if s3_endpoint else f"AWS_ENDPOINT_URL {error}") from None
    except StoreUnusable as error:  # the same class (StoreUnreachable: worth trying again), with the option named
        raise type(error)(f"{option}{uri}: {error}") from None
    except ValueError as error:  # the URI itself is wrong, and the message names it
        raise ValueError(f"{option.rstrip(' =')}: {error}") from None
    return store


def load_template(template: Path | None) -> dict[str, Any]:
    """The built-in WorkflowTemplate, or a rendered one from a file (checked either way)."""
    if template is None:
        return rendered_documents()[WORKFLOW_TEMPLATE_FILE]
    try:
        doc = yaml.safe_load(template.read_text())
    except OSError as error:
        raise UnsupportedTemplate(f"--template {template}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise UnsupportedTemplate(f"--template {template}: not UTF-8 text ({error.reason} at byte "
                                  f"{error.start})") from None
    except yaml.YAMLError as error:
        raise UnsupportedTemplate(f"--template {template}: not valid YAML: {error}") from None
    if not isinstance(doc, dict):
        raise UnsupportedTemplate(f"--template {template}: not a WorkflowTemplate (a YAML mapping)")
    if doc.get("kind") not in ("WorkflowTemplate", "ClusterWorkflowTemplate", "Workflow"):
        raise UnsupportedTemplate(f"--template {template}: a {doc.get('kind') or 'document without a kind'}, not a "
                                  "WorkflowTemplate (`stellar render` writes it to workflowtemplate.yaml)")
    problems = check_references(doc)
    if problems:
        raise UnsupportedTemplate(f"--template {template}: " + "; ".join(problems))
    try:
        load_workflow(doc)
    except UnsupportedTemplate as error:
        raise UnsupportedTemplate(f"--template {template}: {error}") from None
    except (TypeError, AttributeError, KeyError) as error:  # a YAML mapping of another shape than Argo's
        raise UnsupportedTemplate(f"--template {template}: not a WorkflowTemplate the local executor can read "
                                  f"({type(error).__name__}: {error})") from None
    return doc


class HomeBusy(RuntimeError):
    """Another `stellar run` is running on the same home."""


@contextmanager
def home_lock(home: Path, run_id: str, doing: str = "run") -> Iterator[None]:
    """Hold `home/run.lock` for one run: two runs on one home would race on its cache entries and its
    registry's candidate alias. The lock is the kernel's (flock), so a killed run leaves none behind. `doing`
    names the holder to whoever is refused (`stellar prune` holds it too)."""
    path = home / "run.lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another run"
            raise HomeBusy(f"{home} is in use by {holder}; wait for it to end, or give another --home") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{doing} {run_id} (pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)


def _remove_left_work(runs: Path, current: Path) -> None:
    """Remove the `work/` folders that killed or failed runs left (a task's inputs, copied, and its partial
    outputs: as large as the artifacts). Called with the home's lock held, so no other run is using one; a run's
    record and logs stay."""
    for work in runs.glob("*/work"):
        if work.parent != current:
            shutil.rmtree(work, ignore_errors=True)


def running_run(home: Path) -> str | None:
    """The id of the run that holds `home`'s lock now (`home_lock`), None when no run does."""
    try:
        handle = open(home / "run.lock")
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            words = handle.read().split()
            return words[1] if len(words) > 1 and words[0] == "run" else ""
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


@contextmanager
def stopped_by_signals() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP (a `kill`, a closed terminal) stop the run alike (KeyboardInterrupt), so that its
    stage processes are stopped and the run recorded rather than left running; once one has, the next are ignored
    until that is done. A signal ignored when the run began (`nohup`, a background job's Ctrl-C) stays ignored.
    Only the main thread can set handlers; elsewhere this changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    numbers = [n for n in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if signal.getsignal(n) != signal.SIG_IGN]

    def stop(signum, frame):
        for number in numbers:
            signal.signal(number, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = {number: signal.signal(number, stop) for number in numbers}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run_pipeline(home: Path, parameters: dict[str, str], parallelism: int | None = None,
                 artifact_store: str | None = None, s3_endpoint: str | None = None,
                 template: Path | None = None, console: Console | None = None) -> int:
    """Run the pipeline; print progress, the final table and what was promoted. Returns the exit status."""
    # soft_wrap: a message stays one line (a path in it copied whole, a log searched for it); tables fit the width
    console = console or Console(stderr=True, width=None if sys.stderr.isatty() else 160, soft_wrap=True)
    if s3_endpoint:
        os.environ["AWS_ENDPOINT_URL"] = s3_endpoint
    try:
        doc = load_template(template)
        refuse_unknown_parameters(load_workflow(doc), parameters)  # before any store is probed: no folder made
        stores = [(f"-p {name}=", parameters[name]) for name in STORE_PARAMETERS if parameters.get(name)]
        stores.append(("--artifact-store ", artifact_store) if artifact_store else ("--home ", str(home / "artifacts")))
        # S3 first, so that no folder is made on this machine for a run that cannot start
        for option, uri in sorted(stores, key=lambda pair: not pair[1].startswith("s3://")):
            usable_store(option, uri, s3_endpoint)
        try:
            home.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"--home {home}: cannot create the folder: {error.strerror or error}") from None
        store = open_store(stores[-1][1], s3_endpoint)
        executor = LocalExecutor(doc, ArtifactCache(store), home / "runs",
                                 {**local_parameters(home), **parameters}, parallelism)
    except (UnsupportedTemplate, ValueError, OSError) as error:
        console.print(f"[bold red]stellar run:[/] {escape(str(error))}")
        return 2

    try:
        with home_lock(home, executor.run_id):
            _remove_left_work(home / "runs", executor.run_dir)
            console.print(f"run {executor.run_id}: {len(executor.states)} tasks, parallelism "
                          f"{executor.parallelism}, artifacts in {store.uri}, logs in {executor.run_dir / 'logs'}",
                          highlight=False)
            with Progress(executor.states, console) as progress:
                executor.on_change = progress.update
                with stopped_by_signals():
                    result = executor.run()
    except HomeBusy as error:
        console.print(f"[bold red]stellar run:[/] {escape(str(error))}")
        return 1
    except KeyboardInterrupt:
        console.print(f"interrupted; run the same command again to resume (logs in {executor.run_dir / 'logs'})")
        return 130
    console.print(task_table(result.tasks.values(), title=f"run {result.run_id}"))
    set_aside = quarantine_lines(result, executor.cache.store)
    if set_aside:  # a failed run's too: what its finished tasks set aside may be why
        print("\nSet aside (quarantined: the task's quarantine.parquet says why, each row)")
        print("\n".join(set_aside))
    if not result.succeeded:
        _report_failure(result, console)
        return 1
    return _report_promotion(result, executor.cache, console)


def log_tail(log: Path) -> str | None:
    """What a failed task's log says, under a header naming it (None when there is no log): the stage's own error
    lines where its last attempt reported its failure itself (no traceback), so that TensorFlow's lines on stderr
    do not bury them; else the last LOG_TAIL_LINES lines."""
    if not log.is_file():
        return None
    with open(log, errors="replace") as handle:
        lines = handle.readlines()
    attempt = lines[max((i for i, line in enumerate(lines) if line.startswith(ATTEMPT_HEADER)), default=0):]
    errors = [line for line in attempt if STAGE_ERROR.match(line)]
    if errors and not any(line.startswith("Traceback (most recent call last)") for line in attempt):
        return f"--- the stage's errors (the whole log: {log}) ---\n{''.join(errors)}"
    return f"--- last {LOG_TAIL_LINES} lines of {log} ---\n{''.join(lines[-LOG_TAIL_LINES:])}"


def _report_failure(result: RunResult, console: Console) -> None:
    for state in result.failed_tasks:
        console.print(f"[bold red]task {state.name} failed:[/] {escape(state.message)}", highlight=False)
        tail = log_tail(Path(state.log))
        if tail:
            console.print(tail, highlight=False, markup=False)
    console.print("Fix the cause and run the same command again: finished tasks are taken from the cache.")


def _refusals(reasons: list[str], baseline_too: bool = False) -> list[str]:
    """The reasons that refused a candidate: its failed gates, and a production alias that moved or was rolled back
    (not the gates it passed, the notes, or its baseline's own verdict unless `baseline_too`: that was refused
    as well)."""
    kept = [reason for reason in reasons if not reason.startswith(("PASS ", "NOTE ", "baseline: "))]
    return kept + [reason for reason in reasons if baseline_too and reason.startswith("baseline: FAIL ")]


def _as_there_was(model: dict[str, Any]) -> str:
    """Why a refused candidate's baseline was judged (`steps.evaluate.judge_all`), to follow "as there was": "no
    production version yet", or "a NumPy baseline in production (version 2)"."""
    return model.get("because") or "no production version yet"


def promotion_lines(name: str, model: dict[str, Any]) -> list[str]:
    """What the run's summary says of one model of the deploy record: what is served, what became of this run's
    candidate, and (indented) why it was not promoted."""
    serving = f"version {model['version']}" if model.get("version") else "no production version"
    if model.get("promotion") == "cached":
        return [f"  {name}: {serving}; nothing changed: this run's evaluation, promotion and deploy are run "
                f"{model.get('from_run')}'s, from the cache"]
    checks = f"all its checks: stellar models show {name}@{model.get('candidate')}"
    reasons = model.get("reasons", [])
    if model.get("baseline_version"):
        baseline = {"promoted": f"was promoted as version {model['baseline_version']}",
                    "unchanged": f"(version {model['baseline_version']}) stays in production"}.get(
            model.get("promotion"), f"(version {model['baseline_version']}) passed them but was not promoted")
        note = (f"candidate {model['candidate']} refused by the quality gates, and as there was "
                f"{_as_there_was(model)}, its NumPy baseline {baseline} ({checks})")
    elif model.get("promotion") == "refused":
        why = "refused by the quality gates" if any(r.startswith("FAIL ") for r in reasons) else "not promoted"
        also = (f"; as there was {_as_there_was(model)}, this run's NumPy baseline was judged too, and refused as well"
                if model.get("baseline_refused") else "")
        note = f"candidate {model.get('candidate')} {why} ({checks}){also}"
        if model.get("candidate") == model.get("version") and why.startswith("refused"):
            note = (f"production version {model['version']} itself, retrained the same, fails the current gates "
                    f"({checks}); it stays served, as nothing passed them to replace it{also}")
    else:
        note = f"candidate {model.get('candidate')} {model.get('promotion')}"
    return [f"  {name}: {serving}; {note}",
            *(f"    {reason}" for reason in _refusals(reasons, bool(model.get("baseline_refused"))))]


def file_models(run_dir: Path, models: dict[str, Any]) -> None:
    """Add what the deploy task recorded of each model (served version, this run's candidate and its promotion,
    the reasons) to the run's record, for `stellar runs list` and `show`; a record that cannot be rewritten keeps
    what it has."""
    path = run_dir / RUN_RECORD
    try:
        record = json.loads(path.read_text())
        record["models"] = {name: {key: model[key] for key in MODEL_OUTCOME_KEYS if key in model}
                            for name, model in models.items()}
        write_run_record(run_dir, record)
    except (OSError, ValueError) as error:
        print(f"stellar run: {path}: the models' outcome was not added ({error})", file=sys.stderr)


def quarantine_lines(result: RunResult, store: ObjectStore, reasons: int = 2) -> list[str]:
    """One line per task whose output artifact set objects aside: how many of how many, the commonest reasons and
    where the rest is (label rows naming no file are not objects, and are left out). The run said nothing of them
    before: the reasons were only in each artifact's quarantine.parquet."""
    import pyarrow.parquet as pq

    lines = []
    for name, state in result.tasks.items():
        for artifact in state.outputs.values():
            try:  # a summary line: an artifact that cannot be read here (the run's cache check says so) has none
                manifest = store.get(f"{artifact.key}/{MANIFEST}") if artifact.file is None else None
                counts = Manifest.model_validate_json(manifest.data).counts if manifest is not None else {}
                table = store.get(f"{artifact.key}/{QUARANTINE_TABLE}") if counts.get("quarantined") else None
                read_rows = pq.read_table(io.BytesIO(table.data)).to_pylist() if table is not None else []
            except (ValueError, OSError):
                continue
            rows = [row for row in read_rows if not is_label_row(row)]
            if not rows:
                continue
            read = counts.get("objects_in", counts.get("objects", 0) + len(rows))
            shown = named_reasons(rows, width=100)
            lines.append(f"  {name}: {len(rows)} of {read}; {'; '.join(shown[:reasons])}"
                         + ("; ..." if len(shown) > reasons else "")
                         + f" ({store.uri.rstrip('/')}/{artifact.key}/{QUARANTINE_TABLE})")
    return lines


def _report_promotion(result: RunResult, cache: ArtifactCache, console: Console) -> int:
    """Print (to stdout) what the deploy task recorded as served, and how to query it; return the exit status
    (1 when the deploy record cannot be read back)."""
    deploy = result.tasks.get("deploy-api")
    if deploy is None or "deployment" not in deploy.outputs:
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / "deployment"
        try:
            cache.fetch(deploy.outputs["deployment"], target)
        except (ValueError, OSError) as error:
            again = "; run again to rebuild it" if isinstance(error, ArtifactChanged) else ""
            console.print(f"[bold red]stellar run:[/] the deploy record cannot be read: {escape(str(error))}{again}",
                          highlight=False)
            return 1
        record = json.loads((target / "deployment.json").read_text())
    models = record["models"]
    if deploy.status == CACHED:  # the deploy record of the run that made it: this run promoted nothing
        made_by = deploy.message.removeprefix(CACHED_FROM)
        models = {name: {**model, "promotion": "cached", "from_run": made_by} for name, model in models.items()}
    file_models(result.run_dir, models)
    print("\nModels in production")
    for name, model in sorted(models.items()):
        print("\n".join(promotion_lines(name, model)))
    evaluation = result.tasks.get("evaluate-models")
    if evaluation is not None and "evaluation" in evaluation.outputs:
        print(f"\nEvaluation report (metrics, plots, the gates' verdict):\n  "
              f"{cache.store.uri.rstrip('/')}/{evaluation.outputs['evaluation'].key}/report.html")
    home = Path(result.parameters["registry"]).parent
    print("\nQuery them:")
    print(f"  stellar models list --home {home}")
    if any(model["version"] for model in record["models"].values()):  # else there is nothing to serve yet
        print(f"  stellar serve --home {home}    # then: curl -s localhost:8000/v1/models")
    return 0
