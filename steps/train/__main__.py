"""`python -m steps.train {spectral,lightcurve,sed} --split DIR --out DIR [--trainer T | --force-dummy]
[--epochs N] [--seed S]`.

Trains on the split's training rows, chooses hyper-parameters (baseline) or stops early and calibrates (Keras)
on its validation rows, and publishes the model directory. `--trainer auto` (the default) trains the TensorFlow
(Keras) model when TensorFlow is installed and the NumPy baseline otherwise (saying so in the log);
`--trainer keras` insists on TensorFlow; `--trainer baseline`, or `--force-dummy`, always trains the baseline.
Exit status: 0 done, 2 bad usage or input, or no space left for the model (`steps.core.space`; retrying cannot
help), 1 anything else.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from steps.core.logs import get_logger
from steps.core.names import MODEL_NAMES
from steps.core.space import exit_status
from steps.train import TRAINER_CHOICES, TrainerUnavailable, train_from_split

log = get_logger("train")


def main(argv: list[str] | None = None) -> int:
    """Run the stage; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m steps.train", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=MODEL_NAMES, help="which model to train")
    parser.add_argument("--split", type=Path, required=True, help="split directory (output of the split stage)")
    parser.add_argument("--out", type=Path, required=True, help="model directory to publish")
    parser.add_argument("--trainer", choices=TRAINER_CHOICES, default="auto",
                        help="auto (default): Keras when TensorFlow is installed, else the baseline; baseline; keras")
    parser.add_argument("--force-dummy", action="store_true", help="train the NumPy baseline (= --trainer baseline)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="most training epochs of the Keras models, which stop early on the validation loss "
                             "(default: per model); recorded by the baseline, which is solved to convergence")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed of the Keras models (recorded by the baseline, which is deterministic)")
    args = parser.parse_args(argv)
    if args.force_dummy and args.trainer == "keras":
        parser.error("--force-dummy and --trainer keras contradict each other")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs {args.epochs}: must be at least 1")
    if not (args.split / "manifest.json").is_file():
        parser.error(f"--split {args.split}: not a finished artifact (no manifest.json)")
    trainer = "baseline" if args.force_dummy else args.trainer
    try:
        train_from_split(args.model, args.split, args.out, trainer=trainer, epochs=args.epochs, seed=args.seed)
    except (FileNotFoundError, ValueError, TrainerUnavailable) as error:
        log.error("%s", error)
        return 2
    log.info("%s: model written to %s", args.model, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main))
