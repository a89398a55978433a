"""The manual training commands promised since the seed: `stellar train-spectral | train-lightcurve | train-sed`.

Each trains one model outside the orchestrator, on the synthetic source: ingest, preprocess and split for its
modality, then train and evaluate, calling the same stage programs the workflow runs. The results land in
`--output-dir/<model>/`: `model/` (the model directory the registry would store) and `evaluation/`.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

MODALITY = {"spectral": "spectra", "lightcurve": "lightcurves", "sed": "photometry"}
DEFAULT_LENGTH = {"spectral": 1024, "lightcurve": 201}
ALL_BANDS = ("G", "BP", "RP", "J", "H", "Ks", "W1", "W2")


def add_training_commands(sub: argparse._SubParsersAction) -> None:
    """Add `train-spectral`, `train-lightcurve` and `train-sed` to the `stellar` parser."""
    for model, modality in MODALITY.items():
        command = sub.add_parser(f"train-{model}", help=f"train the {model} model by hand on synthetic {modality}")
        command.add_argument("--force-dummy", action="store_true",
                             help="train the NumPy baseline that needs no TensorFlow")
        command.add_argument("--samples", type=int, default=256, help="synthetic objects to generate (default 256)")
        if model in DEFAULT_LENGTH:
            what = "pixels of the common wavelength grid" if model == "spectral" else "bins of the global view"
            command.add_argument("--length", type=int, default=DEFAULT_LENGTH[model], help=f"{what}")
        if model == "sed":
            command.add_argument("--bands", type=int, default=len(ALL_BANDS), choices=range(3, len(ALL_BANDS) + 1),
                                 metavar="N", help=f"use the first N of {' '.join(ALL_BANDS)} (3-8, default 8)")
        command.add_argument("--epochs", type=int, default=100,
                             help="most training epochs of the TensorFlow models (early stopping ends sooner)")
        command.add_argument("--seed", type=int, default=42)
        command.add_argument("--output-dir", type=Path, default=Path("artifacts"),
                             help="where to write <model>/model and <model>/evaluation (default artifacts)")
        command.set_defaults(handler=partial(train_command, model))


def train_command(model: str, args: argparse.Namespace) -> int:
    """Generate, preprocess, split, train and evaluate one model; print where it went and how good it is."""
    from steps.evaluate.__main__ import main as evaluate
    from steps.ingest.__main__ import main as ingest
    from steps.preprocess.__main__ import main as preprocess
    from steps.split.__main__ import main as split
    from steps.train.__main__ import main as train

    modality = MODALITY[model]
    root = args.output_dir.resolve() / model
    work = root / "work"
    raw, features, split_dir = work / "raw", work / "features", work / "split"
    seed = str(args.seed)
    preprocess_args = [modality, "--in", str(raw), "--out", str(features)]
    if model in DEFAULT_LENGTH:
        preprocess_args += ["--length", str(args.length)]
    if model == "sed":
        preprocess_args += ["--bands", ",".join(ALL_BANDS[:args.bands])]
    steps = [
        (ingest, [modality, "--source", "synthetic", "--samples", str(args.samples), "--seed", seed,
                  "--out", str(raw)]),
        (preprocess, preprocess_args),
        (split, [f"--{modality}", str(features), "--seed", seed, "--out", str(split_dir)]),
        (train, [model, "--split", str(split_dir), "--out", str(root / "model"), "--epochs", str(args.epochs),
                 "--seed", seed, "--trainer", "baseline" if args.force_dummy else "auto"]),
        (evaluate, ["--split", str(split_dir), f"--{model}", str(root / "model"), "--out",
                    str(root / "evaluation")]),
    ]
    for step, argv in steps:
        status = step(argv)
        if status:
            print(f"stellar train-{model}: {step.__module__.split('.')[1]} failed (exit {status})", file=sys.stderr)
            return status
    verdict = json.loads((root / "evaluation" / "verdict.json").read_text())[model]
    print(f"{model} model: {root / 'model'}")
    print(f"evaluation: {root / 'evaluation' / 'report.html'} "
          f"({'passes' if verdict['passed'] else 'fails'} the default quality gates)")
    return 0
