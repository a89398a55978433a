"""`stellar`: render the Argo objects, run the pipeline locally, manage the model registry, serve the models.

Start-up stays light: heavy modules (Hera, the executor, FastAPI) are imported by the subcommand that needs
them, and nothing here imports TensorFlow.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from steps.core.arguments import fraction
from steps.core.names import DEFAULT_HOME, MODALITIES


def home_dir(value: str | None) -> Path:
    """`--home`, else `STELLAR_HOME`, else `.stellar` in the current directory."""
    return Path(value or os.environ.get("STELLAR_HOME") or DEFAULT_HOME).expanduser().resolve()


def parse_assignments(pairs: list[str]) -> dict[str, str]:
    """`NAME=VALUE` pairs from repeated `-p` flags; quality gates given as `-p gates=...` are checked here, before
    any task runs or any manifest is written (the evaluate stage would find a mistake only after training), and a
    gates file is replaced by its text."""
    from steps.evaluate.gates import GateError, parse_gates, read_gates_text

    values = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            print(f"stellar: -p {pair!r}: expected NAME=VALUE", file=sys.stderr)
            raise SystemExit(2)
        values[name] = value
    if "gates" in values:
        try:
            parse_gates(values["gates"], "-p gates")
            # a file is passed on as its text: the stages may run elsewhere (a pod, another folder), and a task's
            # cache key then sees an edit of the file
            values["gates"] = read_gates_text(values["gates"], "-p gates")[0]
        except GateError as error:
            print(f"stellar: {error}", file=sys.stderr)
            raise SystemExit(2) from None
    return values


def _add_home(parser: argparse.ArgumentParser, default: Any = None) -> None:
    """`--home` on a command. A group of commands (`models`, `runs`) takes it too, and its commands with the default
    `argparse.SUPPRESS`, so that `stellar models --home DIR list` reads as `stellar models list --home DIR` (a
    command's own default would hide the group's value)."""
    parser.add_argument("--home", default=default, help="working home: artifact store, model registry and runs "
                                                        f"(default: $STELLAR_HOME or {DEFAULT_HOME})")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    from workflows.predict_cli import add_predict_command
    from workflows.prune import add_models_prune_command, add_prune_command
    from workflows.runs_cli import add_runs_command
    from workflows.training_cli import add_training_commands, at_least, seed_number

    parser = argparse.ArgumentParser(prog="stellar", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    render = sub.add_parser("render", help="write the WorkflowTemplate and the CronWorkflows as YAML")
    render.add_argument("--out", required=True, type=Path, help="directory to write the YAML files into")
    render.add_argument("--image-registry", help="registry of the stage images (default ghcr.io/stellar-pipeline)")
    render.add_argument("--image-tag", help="tag of the stage images (default: the package version)")
    render.add_argument("--namespace", help="metadata.namespace of both objects")
    render.add_argument("--schedule", action="append", dest="schedules",
                        help="cron schedule of the CronWorkflow (5 fields, or a descriptor such as @daily); repeat it "
                             "for several, as the chart's cron.schedules list (default '0 3 * * 1')")
    render.add_argument("--timezone", help="IANA time zone of the schedule (default Etc/UTC)")
    render.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                        help="change a workflow parameter's default")

    run = sub.add_parser("run", help="run the whole pipeline on this machine (no cluster needed)")
    _add_home(run)
    run.add_argument("--samples", type=at_least(0, "objects"), help="objects per modality for the synthetic source")
    run.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                     help="set any workflow parameter (repeatable)")
    run.add_argument("--parallelism", type=at_least(1, "task at once"), default=os.cpu_count(),
                     help="tasks at once (default: cores)")
    run.add_argument("--artifact-store", help="where artifacts go: a directory (default HOME/artifacts) or "
                                              "s3://BUCKET/PREFIX")
    run.add_argument("--s3-endpoint", help="S3 endpoint URL (MinIO, moto, ...) for s3:// stores")
    run.add_argument("--template", type=Path, help="run this rendered WorkflowTemplate YAML instead of the "
                                                   "built-in one")
    for modality in MODALITIES:
        run.add_argument(f"--{modality}-from", type=Path, metavar="DIR",
                         help=f"replay {modality} from this folder (archive file formats) instead of the "
                              "synthetic source")

    ingest = sub.add_parser("ingest", help="run the ingest stage alone on one modality")
    _add_home(ingest)
    ingest.add_argument("modality", choices=MODALITIES)
    ingest.add_argument("--from", dest="source", default="synthetic", metavar="DIR_OR_SOURCE",
                        help="a folder to replay, or a source name (default synthetic)")
    ingest.add_argument("--samples", type=at_least(0, "objects"), default=0,
                        help="objects at most from a synthetic draw or an archive query (0: all; synthetic: "
                             "200); a folder is replayed whole")
    ingest.add_argument("--seed", type=seed_number, default=42)
    ingest.add_argument("--out", type=Path, required=True, help="output directory (parquet and manifest)")

    models = sub.add_parser("models", help="the model registry: list, show, register, promote, roll back, prune")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    listing = models_sub.add_parser("list", help="every model with its versions and aliases")
    listing.add_argument("--json", action="store_true", help="print JSON only (logs go to stderr)")
    show = models_sub.add_parser("show", help="one version's record: NAME[@VERSION_OR_ALIAS]")
    show.add_argument("ref")
    register = models_sub.add_parser(
        "register", help="store a model directory (from stellar train-*) as a new version",
        description="Store a model directory as a new version (aliases do not move: promote it to serve it). The "
                    "folder `stellar train-*` prints, or the one above it; its evaluation, where it sits beside the "
                    "model, is recorded with it.")
    register.add_argument("name")
    register.add_argument("model_dir", type=Path)
    promote = models_sub.add_parser("promote", help="point production at a version")
    promote.add_argument("name")
    promote.add_argument("version")
    promote.add_argument("--force", action="store_true",
                         help="promote a version that the quality gates refused when it was last evaluated")
    rollback = models_sub.add_parser("rollback", help="point production back at its previous version")
    rollback.add_argument("name")
    prune = add_models_prune_command(models_sub)
    _add_home(models)
    for command in (listing, show, register, promote, rollback, prune):
        _add_home(command, argparse.SUPPRESS)
        command.add_argument("--registry", help="registry URI (default HOME/registry)")

    serve = sub.add_parser("serve", help="serve the production models over HTTP",
                           description="Serve the production models over HTTP. Every setting is also an "
                                       "environment variable STELLAR_API_<NAME> (see steps/serve/settings.py); "
                                       "flags win.")
    _add_home(serve)
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--workers", type=int, help="uvicorn worker processes (default 1)")
    serve.add_argument("--registry", help="registry URI (default HOME/registry, or $STELLAR_API_REGISTRY)")

    add_training_commands(sub)
    add_predict_command(sub)
    add_runs_command(sub, _add_home)
    add_prune_command(sub, _add_home)
    return parser


def cmd_render(args: argparse.Namespace) -> int:
    """`stellar render`: the WorkflowTemplate and CronWorkflows as YAML files, for `kubectl apply` or the chart."""
    from workflows.render import RenderOptions, write_rendered

    options = RenderOptions(parameters=parse_assignments(args.parameter))
    for name in ("image_registry", "image_tag", "namespace", "schedules", "timezone"):
        if getattr(args, name):
            setattr(options, name, tuple(args.schedules) if name == "schedules" else getattr(args, name))
    if args.out.exists() and not args.out.is_dir():
        print(f"stellar render: --out {args.out}: is a file, not a folder", file=sys.stderr)
        return 2
    try:
        paths = write_rendered(args.out, options)
    except ValueError as error:  # a schedule, time zone or parameter the workflow cannot take
        print(f"stellar render: {error}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


def _choice(*choices: str):
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"{text!r}: choose one of {', '.join(choices)}")
        return text
    return parse


def _is_relative_folder(source: str | None) -> bool:
    """A `-p <modality>-source` value that the stages would read as a folder of this working directory (a source's
    own name, such as `sdss`, stays a name even where a folder has it)."""
    if source is None or source.startswith("s3://") or Path(source).is_absolute() or not Path(source).is_dir():
        return False
    from steps.ingest import sources  # here: the source registry imports every reader (about 1 s)

    return source not in sources.SOURCES


def _is_folder(source: str) -> bool:
    return source.startswith("s3://") or Path(source).is_dir()


MIN_EXPECTED_IN_SET = 2  # a drawn source's objects the split should expect in its smallest set


def check_parameters(parameters: dict[str, str]) -> str | None:
    """The first workflow parameter (`-p NAME=VALUE`) that its stage would refuse, as a message; None when all
    pass. Checked before the run, as the stages check them only once their task starts, after ingest and
    preprocessing."""
    from steps.train import TRAINER_CHOICES
    from workflows.training_cli import MAX_LENGTH, MIN_LENGTH, at_least, seed_number

    checks = {"samples": at_least(0, "objects"), "seed": seed_number, "epochs": at_least(1, "epoch"),
              "spectrum-length": at_least(MIN_LENGTH["spectral"], "pixel", MAX_LENGTH["spectral"]),
              "view-length": at_least(MIN_LENGTH["lightcurve"], "bin", MAX_LENGTH["lightcurve"]),
              "deploy-timeout": at_least(1, "second"), "test-fraction": fraction(closed=False),
              "val-fraction": fraction(closed=False), "max-bad-fraction": fraction(closed=True),
              "trainer": _choice(*TRAINER_CHOICES), "deploy-target": _choice("helm", "local")}
    values = {}
    for name, check in checks.items():
        if name in parameters:
            try:
                values[name] = check(parameters[name])
            except argparse.ArgumentTypeError as error:
                return f"-p {name}: {error}"
    drawn = [m for m in MODALITIES if not _is_folder(parameters.get(f"{m}-source", "synthetic"))]
    if values.get("samples") == 0 and drawn:
        return (f"-p samples: 0: the {', '.join(drawn)} source{'s' if len(drawn) > 1 else ''} "
                f"({', '.join(sorted({parameters.get(f'{m}-source', 'synthetic') for m in drawn}))}) need at least "
                "1 object; 0 means every object only for a folder to replay")
    for modality in MODALITIES:
        source = parameters.get(f"{modality}-source")
        if source is not None:
            from steps.ingest import sources  # here: the source registry imports every reader (about 1 s)

            try:
                sources.resolve(source, modality)
            except sources.UnknownSource as error:
                return f"-p {modality}-source: {error}"
    test, val = values.get("test-fraction", 0.2), values.get("val-fraction", 0.1)
    if test + val >= 1.0:
        return f"-p test-fraction {test:g} and val-fraction {val:g} leave no training rows (their sum must be < 1)"
    fewest = math.ceil(MIN_EXPECTED_IN_SET / min(test, val, 1 - test - val) - 1e-9)
    if drawn and 0 < values.get("samples", fewest) < fewest:
        return (f"-p samples: {values['samples']}: with test-fraction {test:g} and val-fraction {val:g} the split "
                f"would expect fewer than {MIN_EXPECTED_IN_SET} objects in a set; draw at least {fewest}")
    return None


def cmd_run(args: argparse.Namespace) -> int:
    """`stellar run`: the whole DAG on this machine; inputs checked here first, each refusal one line (exit 2)."""
    from workflows.run import run_pipeline

    parameters = parse_assignments(args.parameter)
    given = {"samples": args.samples, **{f"{m}-source": getattr(args, f"{m}_from") for m in MODALITIES}}
    for name, value in given.items():
        if value is not None and name in parameters:
            flag = "--samples" if name == "samples" else f"--{name.removesuffix('-source')}-from"
            print(f"stellar run: {flag} and -p {name} both set {name}; give one", file=sys.stderr)
            return 2
    if args.samples is not None:
        parameters["samples"] = str(args.samples)
    for modality in MODALITIES:
        folder = getattr(args, f"{modality}_from")
        if folder is not None:
            if not folder.is_dir():
                what = ("is a file; a run replays a folder of archive files (put the file in a folder of its own)"
                        if folder.is_file() else "no such folder")
                print(f"stellar run: --{modality}-from {folder}: {what}", file=sys.stderr)
                return 2
            parameters[f"{modality}-source"] = str(folder.resolve())
        elif _is_relative_folder(parameters.get(f"{modality}-source")):
            parameters[f"{modality}-source"] = str(Path(parameters[f"{modality}-source"]).resolve())  # as stages see it
    problem = check_parameters(parameters)
    if problem:
        if args.samples is not None:
            problem = problem.replace("-p samples:", "--samples:")
        print(f"stellar run: {problem}", file=sys.stderr)
        return 2
    return run_pipeline(home_dir(args.home), parameters, parallelism=args.parallelism,
                        artifact_store=args.artifact_store, s3_endpoint=args.s3_endpoint, template=args.template)


def _unwritable_folder(folder: Path) -> str | None:
    """Why an artifact could not be written to `folder` (checked before any work, making nothing), or None: it or a
    folder above it is a file, or the nearest folder above it that exists takes no new entries (/proc, a read-only
    mount)."""
    if folder.exists() and not folder.is_dir():
        return "is a file, not a folder"
    blocking = next((parent for parent in reversed(folder.parents) if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        return f"{blocking} is a file, not a folder"
    existing = next(parent for parent in folder.absolute().parents if parent.exists())  # nothing made before a refusal
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=f".{folder.name}.probe-"))
    except OSError as error:  # a folder that takes no new entries (/proc) answers ENOENT: it is there, though
        reason = "it takes no new entries" if error.errno == errno.ENOENT else error.strerror or error
        return f"cannot write in {existing}: {reason}"
    return None


def cmd_ingest(args: argparse.Namespace) -> int:
    """`stellar ingest`: one modality from a source or folder into a raw artifact, as the pipeline's stage does."""
    from steps.core.space import exit_status
    from steps.ingest import sources
    from steps.ingest.__main__ import main as ingest

    given = Path(args.source)
    if given.is_file():
        print(f"stellar ingest: --from {args.source}: is a file; ingest replays a folder of archive files (put the "
              "file in a folder of its own; `stellar predict` reads single files)", file=sys.stderr)
        return 2
    if not given.is_dir() and os.sep in args.source:
        print(f"stellar ingest: --from {args.source}: no such folder", file=sys.stderr)
        return 2
    problem = _unwritable_folder(args.out)
    if problem:
        print(f"stellar ingest: --out {args.out}: {problem}", file=sys.stderr)
        return 2
    source = str(given.resolve()) if given.is_dir() else args.source
    try:
        sources.resolve(source, args.modality)
    except sources.UnknownSource as error:
        print(f"stellar ingest: --from {args.source}: {error}", file=sys.stderr)
        return 2
    samples = args.samples or (200 if source == "synthetic" else 0)
    argv = [args.modality, "--source", source, "--samples", str(samples), "--seed", str(args.seed),
            "--cache", str(home_dir(args.home) / "raw-cache"), "--out", str(args.out)]
    return exit_status(ingest, argv)


def _registry(args: argparse.Namespace):
    from steps.core.registry import ModelRegistry

    return ModelRegistry.open(args.registry or str(home_dir(args.home) / "registry"))


def cmd_models(args: argparse.Namespace) -> int:
    """`stellar models list|show|register|promote|rollback|prune`: one handler each; registry errors are one line."""
    from steps.core.registry import NothingToRollBack, RegistryError

    if args.models_command == "prune":
        return args.handler(args)
    try:
        return MODELS_COMMANDS[args.models_command](_registry(args), args)
    except NothingToRollBack as error:  # a sound request the registry's state refuses
        print(f"stellar models: {error}", file=sys.stderr)
        return 1
    except (RegistryError, ValueError) as error:
        print(f"stellar models: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # a reader that stopped early (`| head`): `main` ends quietly
        raise
    except OSError as error:  # a registry folder that cannot be read or written (read-only, full)
        where = error.filename or args.registry or home_dir(args.home) / "registry"
        print(f"stellar models: {where}: {error.strerror or error}", file=sys.stderr)
        return 2


def _models_list(registry, args: argparse.Namespace) -> int:
    """Every model, its versions and aliases (`--json`: the registry's summary)."""
    summary = registry.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
    elif not summary:
        root = getattr(registry.store, "root", None)  # a folder (not S3): say when it is not there at all
        missing = root is not None and not root.is_dir()
        flag = "--registry" if args.registry else "--home"
        print(f"no models in {registry.store.uri}" + (f" (no such folder: is {flag} right?)" if missing else ""))
    else:
        for model in summary:
            aliases = ", ".join(f"{alias}={version}" for alias, version in sorted(model["aliases"].items()))
            print(f"{model['name']}: versions {', '.join(model['versions'])}; {aliases or 'no aliases'}")
    return 0


def _models_show(registry, args: argparse.Namespace) -> int:
    """One version's record (NAME: production; NAME@VERSION or NAME@ALIAS), with where its report is."""
    from steps.core.registry import PRODUCTION

    name, at, ref = args.ref.partition("@")
    if at and not ref:
        raise ValueError(f"{args.ref!r}: nothing after '@' (give NAME, NAME@VERSION or NAME@ALIAS)")
    if not ref and registry.alias_unset(name, PRODUCTION):
        versions = ", ".join(record.version for record in registry.versions(name))
        print(f"stellar models: {name} has no production version (never promoted, or rolled back to none); "
              f"its versions: {versions}: stellar models show {name}@VERSION (or @candidate)", file=sys.stderr)
        return 1
    record = registry.latest(name, ref or PRODUCTION)
    print(json.dumps({**record.model_dump(mode="json"), "report": registry.report_location(record)}, indent=2))
    return 0


def _models_register(registry, args: argparse.Namespace) -> int:
    """A model trained by hand (`stellar train-*`) as a new version, with its evaluation; no alias moves."""
    record = _register_by_hand(registry, args.name, args.model_dir)
    if record.verdict and not record.verdict.get("passed", True):
        print(f"{args.name}: {args.model_dir} is version {record.version}, which its evaluation's quality gates "
              f"refused; serve it all the same with: stellar models promote {args.name} {record.version} --force")
    else:
        print(f"{args.name}: {args.model_dir} is version {record.version}; serve it with: stellar models promote "
              f"{args.name} {record.version}")
    return 0


def _models_promote(registry, args: argparse.Namespace) -> int:
    """Point production at a version; one the gates refused only with --force (exit 1 and the reasons without)."""
    from steps.core.registry import PRODUCTION

    record = registry.latest(args.name, args.version)
    refused = bool(record.verdict) and not record.verdict.get("passed", True)
    current = registry.aliases(args.name).get(PRODUCTION)
    if refused and not args.force and current != record.version:
        reasons = [reason for reason in record.verdict.get("reasons", []) if reason.startswith("FAIL")]
        print(f"stellar models: the quality gates refused {args.name} version {record.version} when last "
              f"evaluated; production does not move:", file=sys.stderr)
        for reason in reasons:
            print(f"  {reason}", file=sys.stderr)
        print(f"promote it anyway with: stellar models promote {args.name} {record.version} --force",
              file=sys.stderr)
        return 1
    previous = registry.set_alias(args.name, PRODUCTION, record.version)
    if previous == record.version:
        print(f"{args.name}: version {record.version} is already production")
    else:
        print(f"{args.name}: production {previous or '(none)'} -> {record.version}")
    if refused:
        print(f"note: the quality gates refused version {record.version} when last evaluated "
              f"(stellar models show {args.name}@{record.version})")
    return 0


def _models_rollback(registry, args: argparse.Namespace) -> int:
    """Production back to the version before it (or to none)."""
    version = registry.rollback(args.name)
    print(f"{args.name}: production rolled back to " + (version or f"(none): no version of {args.name} is served "
                                                                  "until one is promoted"))
    return 0


MODELS_COMMANDS = {"list": _models_list, "show": _models_show, "register": _models_register,
                   "promote": _models_promote, "rollback": _models_rollback}


def _register_by_hand(registry, name: str, model_dir: Path):
    """Register the model in `model_dir` (or in its `model/`, as `stellar train-*` lays it out) under `name`, with the
    metrics and verdict of the evaluation beside it where that evaluated this very model; ValueError naming what is
    wrong with the folder."""
    from steps.core.artifacts import MANIFEST, manifest_hash, read_manifest
    from steps.models.io import model_dir_in

    model_dir = model_dir_in(model_dir)
    if not (model_dir / "model.json").is_file():
        raise ValueError(f"{model_dir}: not a model directory (no model.json; stellar train-* prints where its "
                         "model is)")
    if not (model_dir / MANIFEST).is_file():
        raise ValueError(f"{model_dir}: no {MANIFEST}: not a finished model (train it again)")
    kind = json.loads((model_dir / "model.json").read_text()).get("name")
    if kind != name:
        raise ValueError(f"{model_dir}: holds a {kind!r} model, not {name!r}")
    evaluation = model_dir.parent / "evaluation"
    if not all((evaluation / file).is_file() for file in ("metrics.json", "verdict.json", MANIFEST)):
        print(f"note: no evaluation beside {model_dir}: registered without metrics", file=sys.stderr)
        return registry.register_evaluated(name, model_dir, None)
    if read_manifest(evaluation).inputs.get(name) != manifest_hash(model_dir):
        raise ValueError(f"{evaluation} evaluated another {name} model than {model_dir} (a training that stopped "
                         "before its evaluation?): train it again, or move the evaluation away to register the "
                         "model without metrics")
    return registry.register_evaluated(name, model_dir, evaluation,
                                       json.loads((evaluation / "metrics.json").read_text()).get(name),
                                       json.loads((evaluation / "verdict.json").read_text()).get(name))


def cmd_serve(args: argparse.Namespace) -> int:
    """`stellar serve`: the prediction API on the registry's production versions (uvicorn)."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from steps.serve.server import listen_problem, serve
    from steps.serve.settings import ServeSettings

    home = home_dir(args.home)
    given = {"host": args.host, "port": args.port, "workers": args.workers, "registry": args.registry}
    overrides = {key: value for key, value in given.items() if value is not None}
    if args.home or "STELLAR_API_REGISTRY" not in os.environ:
        overrides.setdefault("registry", str(home / "registry"))
    if args.home or "STELLAR_API_CACHE_DIR" not in os.environ:
        overrides["cache_dir"] = home / "serving"
    try:
        settings = ServeSettings(**overrides)
    except SettingsError as error:  # a STELLAR_API_<NAME> variable that is not even parsed (a list not in JSON)
        field = re.search(r'field "(\w+)"', str(error))
        name = f"STELLAR_API_{field.group(1).upper()}" if field else "a STELLAR_API_ variable"
        print(f"stellar serve: {name}: cannot be parsed ({error.__cause__ or error}); a list is written in JSON, "
              f"e.g. {name}='[\"https://a.example\"]'", file=sys.stderr)
        return 2
    except ValidationError as error:  # a flag or a STELLAR_API_<NAME> variable out of range: name it
        for problem in error.errors():
            name = str(problem["loc"][0]) if problem["loc"] else "settings"
            source = f"--{name.replace('_', '-')}" if given.get(name) is not None else f"STELLAR_API_{name.upper()}"
            print(f"stellar serve: {source}: {problem['msg']}", file=sys.stderr)
        return 2
    problem = listen_problem(settings.host, settings.port)
    if problem:
        at_fault, why = problem
        variable = f"STELLAR_API_{at_fault.upper()}"
        source = f"--{at_fault}" if given[at_fault] is not None else variable if variable in os.environ else ""
        hint = "" if source else f" (the default --{at_fault}: give another with --{at_fault})"
        print(f"stellar serve: {source + ': ' if source else ''}{why}{hint}", file=sys.stderr)
        return 1
    registry = Path(settings.registry)
    if "://" not in settings.registry and not registry.is_dir():
        print(f"stellar serve: note: no registry at {registry} yet (no such folder; is --home right?); /readyz "
              "answers 503 until a version of each model is promoted there", file=sys.stderr)
    return serve(settings)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `stellar` console script. A reader that stops early (`| head`) ends the command quietly,
    as it ends `cat`: exit status 1 (Python's on EPIPE), no traceback."""
    try:
        return _main(argv)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)  # so that the flush at exit does not fail again
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    home = home_dir(args.home) if hasattr(args, "home") else None
    if home is not None and home.exists() and not home.is_dir():
        print(f"stellar {args.command}: --home {home}: is a file, not a folder", file=sys.stderr)
        return 2
    handlers = {"render": cmd_render, "run": cmd_run, "ingest": cmd_ingest, "models": cmd_models,
                "serve": cmd_serve}
    if args.command in handlers:
        return handlers[args.command](args)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
