"""The manual training commands promised since the seed: `stellar train-spectral | train-lightcurve | train-sed`.

Each trains one model outside the orchestrator, on the synthetic source: ingest, preprocess and split for its
modality, then train and evaluate, calling the same stage programs the workflow runs. The results land in
`--output-dir/<model>/`: `model/` (the model directory the registry would store) and `evaluation/`, which replace
the ones of an earlier training there only once both are done.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from functools import partial
from pathlib import Path

from steps.core.names import MODALITY

DEFAULT_LENGTH = {"spectral": 1024, "lightcurve": 201}
# Shortest inputs worth a model: 128 pixels over 3600-9000 A are 42 A each, already wider than most lines; a global
# view of 32 bins still shows an eclipse or a pulsation's shape.
MIN_LENGTH = {"spectral": 128, "lightcurve": 32}
# Longest: 8192 pixels over 3600-9000 A are 34 km/s each, finer than SDSS's, LAMOST's or MILES's own pixels; 4096
# bins of a global view are twice what transit searches use. Beyond, a model is no better and memory runs out (10^8
# pixels asked for 95 GiB before any message).
MAX_LENGTH = {"spectral": 8192, "lightcurve": 4096}
MIN_SAMPLES = 32  # the split must leave test and validation objects to evaluate and stop on
MAX_SAMPLES = 100_000  # synthetic objects: 100,000 spectra of the default 1024 pixels are 1.2 GB of features
ALL_BANDS = ("G", "BP", "RP", "J", "H", "Ks", "W1", "W2")
TRAINING_FOLDERS = ("model", "evaluation", "work")  # what training writes in OUTPUT_DIR/<model>


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def seed_number(text: str) -> int:
    """An argparse type: a seed NumPy and Keras accept, a whole number from 0 to 2**32 - 1."""
    value = _whole_number(text)
    if not 0 <= value < 2 ** 32:
        raise argparse.ArgumentTypeError(f"{value}: a seed is a whole number from 0 to {2 ** 32 - 1}")
    return value


def at_least(low: int, what: str, high: int | None = None):
    """An argparse type: an integer of at least `low` (and at most `high`), with an error naming the flag's
    meaning."""
    def parse(text: str) -> int:
        value = _whole_number(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"{value}: needs at least {low} {what}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{value}: at most {high:,} {what}")
        return value
    return parse


def add_training_commands(sub: argparse._SubParsersAction) -> None:
    """Add `train-spectral`, `train-lightcurve` and `train-sed` to the `stellar` parser."""
    for model, modality in MODALITY.items():
        command = sub.add_parser(f"train-{model}", help=f"train the {model} model by hand on synthetic {modality}")
        command.add_argument("--force-dummy", action="store_true",
                             help="train the NumPy baseline that needs no TensorFlow")
        command.add_argument("--samples", type=at_least(MIN_SAMPLES, "objects", MAX_SAMPLES), default=256,
                             help=f"synthetic objects to generate (default 256, {MIN_SAMPLES} to {MAX_SAMPLES:,}: "
                                  "the split needs test and validation objects)")
        if model in DEFAULT_LENGTH:
            what = "pixels of the common wavelength grid" if model == "spectral" else "bins of the global view"
            command.add_argument("--length", type=at_least(MIN_LENGTH[model], what, MAX_LENGTH[model]),
                                 default=DEFAULT_LENGTH[model],
                                 help=f"{what} (default {DEFAULT_LENGTH[model]}, {MIN_LENGTH[model]} to "
                                      f"{MAX_LENGTH[model]})")
        if model == "sed":
            command.add_argument("--bands", type=int, default=len(ALL_BANDS), choices=range(3, len(ALL_BANDS) + 1),
                                 metavar="N", help=f"use the first N of {' '.join(ALL_BANDS)} (3-8, default 8)")
        command.add_argument("--epochs", type=at_least(1, "epoch"), default=100,
                             help="most training epochs of the TensorFlow models (early stopping ends sooner)")
        command.add_argument("--seed", type=seed_number, default=42)
        command.add_argument("--output-dir", type=folder_path, default=Path("artifacts"),
                             help="where to write <model>/model and <model>/evaluation (default artifacts)")
        command.set_defaults(handler=partial(train_command, model))


def folder_path(text: str) -> Path:
    """An argparse type: a non-empty path (Path("") would be the working folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path: give a folder")
    return Path(text)


def unusable_output(root: Path) -> str | None:
    """Why the model folder `root` (OUTPUT_DIR/<model>) cannot hold what training writes there, checked before any
    work: a file where a folder must be, or a folder that cannot be created or written in; None when it can."""
    blocking = next((path for path in [*reversed(root.parents), root, *(root / name for name in TRAINING_FOLDERS)]
                     if path.exists() and not path.is_dir()), None)
    if blocking is not None:
        return f"{blocking} is a file, not a folder"
    try:
        root.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=root, prefix=".probe-")
    except OSError as error:
        return f"cannot write in {root}: {error.strerror or error}"
    os.close(handle)
    Path(probe).unlink()
    return None


def replace_results(root: Path, staged: Path) -> None:
    """Move the new model and evaluation in `staged` into `root` in place of the old ones, in an order where a model
    is never beside an evaluation of another model: the old model goes first and the new model comes last."""
    replaced = staged.parent / "replaced"
    shutil.rmtree(replaced, ignore_errors=True)
    replaced.mkdir()
    for name in ("model", "evaluation"):
        if (root / name).exists():
            (root / name).rename(replaced / name)
    for name in ("evaluation", "model"):
        (staged / name).rename(root / name)
    shutil.rmtree(replaced)
    shutil.rmtree(staged)


def train_command(model: str, args: argparse.Namespace) -> int:
    """Generate, preprocess, split, train and evaluate one model; print where it went and how good it is."""
    from steps.core.space import exit_status
    from steps.evaluate.__main__ import main as evaluate
    from steps.ingest.__main__ import main as ingest
    from steps.preprocess.__main__ import main as preprocess
    from steps.split.__main__ import main as split
    from steps.train.__main__ import main as train

    modality = MODALITY[model]
    root = args.output_dir.resolve() / model
    problem = unusable_output(root)
    if problem:
        print(f"stellar train-{model}: --output-dir {args.output_dir}: {problem}", file=sys.stderr)
        return 2
    if (root / "model").exists():
        print(f"stellar train-{model}: the model and evaluation in {root} are replaced once the new ones are "
              "trained and evaluated", file=sys.stderr)
    work = root / "work"
    raw, features, split_dir = work / "raw", work / "features", work / "split"
    staged = work / "result"  # the new model and its evaluation, until both are done
    shutil.rmtree(staged, ignore_errors=True)
    seed = str(args.seed)
    preprocess_args = [modality, "--in", str(raw), "--out", str(features)]
    if model in DEFAULT_LENGTH:
        preprocess_args += ["--length", str(args.length)]
    if model == "sed":
        preprocess_args += ["--bands", ",".join(ALL_BANDS[:args.bands])]
    steps = [
        ("ingest", ingest, [modality, "--source", "synthetic", "--samples", str(args.samples), "--seed", seed,
                            "--out", str(raw)]),
        ("preprocess", preprocess, preprocess_args),
        ("split", split, [f"--{modality}", str(features), "--seed", seed, "--out", str(split_dir)]),
        ("train", train, [model, "--split", str(split_dir), "--out", str(staged / "model"), "--epochs",
                          str(args.epochs), "--seed", seed, "--trainer", "baseline" if args.force_dummy else "auto"]),
        ("evaluate", evaluate, ["--split", str(split_dir), f"--{model}", str(staged / "model"), "--out",
                                str(staged / "evaluation")]),
    ]
    kept = f"{root} keeps the model and evaluation it had" if (root / "model").exists() else "no model was written"
    try:
        for name, step, argv in steps:
            try:
                status = exit_status(step, argv)
            except SystemExit as stopped:  # a stage's own argument check
                status = stopped.code if isinstance(stopped.code, int) else (0 if stopped.code is None else 2)
            if status:
                print(f"stellar train-{model}: {name} failed (exit {status}); {kept}", file=sys.stderr)
                return status
    except KeyboardInterrupt:
        print(f"stellar train-{model}: interrupted; {kept}", file=sys.stderr)
        return 130
    replace_results(root, staged)
    verdict = json.loads((root / "evaluation" / "verdict.json").read_text())[model]
    print(f"{model} model: {root / 'model'}")
    print(f"evaluation: {root / 'evaluation' / 'report.html'} "
          f"({'passes' if verdict['passed'] else 'fails'} the default quality gates)")
    for reason in [reason for reason in verdict["reasons"] if reason.startswith("FAIL")]:
        print(f"  {reason}")
    needed = max((check["limit"] for check in verdict["checks"] if check["gate"] == "min_rows"
                  and not check["passed"]), default=None)
    if needed is not None:
        import pyarrow.parquet as pq

        drawn = pq.read_metadata(split_dir / modality / "test.parquet").num_rows
        if drawn < needed:
            print(f"  (the split drew {drawn} of the {args.samples} objects for the test, by a hash of each id: "
                  f"20% on average; more --samples give the gates the {needed:g} they need)")
    if not verdict["passed"] and (verdict.get("fallback") or {}).get("passed"):
        print(f"its NumPy baseline passes them: {root / 'evaluation' / 'baselines' / model} (a pipeline run on a "
              "registry with no production version would promote it instead; one with a baseline in production "
              "could, where it also passes the comparison with that baseline)")
    if verdict["passed"]:
        print(f"to serve it: stellar models register {model} {root} [--home H], then stellar models promote {model} "
              "VERSION")
    else:
        print(f"to serve it all the same: stellar models register {model} {root} [--home H], then stellar models "
              f"promote {model} VERSION --force (the registry keeps the gates' refusal with it)")
    return 0
