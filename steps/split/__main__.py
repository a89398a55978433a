"""`python -m steps.split [--spectra DIR] [--photometry DIR] [--lightcurves DIR] --out DIR --seed S
--test-fraction F --val-fraction F`.

Writes `<modality>/{train,val,test}.parquet` and `<modality>/spec.json` for each modality given under one
artifact, whose manifest counts the rows of every set. The pipeline gives one modality per task, so that new data
of one re-splits and retrains only its own model; a split by hand may hold several. Exit status 2 means unusable
inputs or fractions, an empty set (too few objects for the fractions asked), or no space left for the output
(`steps.core.space`); nothing is published then.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import pyarrow as pa

from steps.core.artifacts import ArtifactWriter, read_manifest, read_parquet
from steps.core.arguments import fraction
from steps.core.logs import get_logger
from steps.core.names import FEATURES_FILE, MODALITIES, SPEC_FILE
from steps.core.space import exit_status
from steps.split.assign import SPLITS, assign

log = get_logger("split")


class SplitError(ValueError):
    """The inputs cannot be split as asked."""


def split_table(table: pa.Table, seed: int, test_fraction: float, val_fraction: float) -> dict[str, pa.Table]:
    """The rows of `table` by set, each keeping the input's row order."""
    sets = assign(table.column("id").to_pylist(), seed, test_fraction, val_fraction)
    return {name: table.filter(pa.array(sets == name)) for name in SPLITS}


def split_features(inputs: dict[str, Path], out: Path, seed: int, test_fraction: float, val_fraction: float) -> None:
    """Split every modality's features and publish them, with a byte copy of their specs, as one artifact."""
    tables, specs, synthetic = {}, {}, False
    for modality, directory in inputs.items():
        try:
            manifest = read_manifest(directory)
        except FileNotFoundError as error:
            raise SplitError(f"--{modality}: {error}") from None
        if manifest.stage != f"preprocess.{modality}":
            raise SplitError(f"--{modality} {directory}: an output of stage {manifest.stage!r}, "
                             f"not of preprocess.{modality}")
        missing = [name for name in (FEATURES_FILE, SPEC_FILE) if not (directory / name).is_file()]
        if missing:
            raise SplitError(f"--{modality} {directory}: no {' or '.join(missing)}")
        synthetic |= manifest.synthetic
        try:
            tables[modality] = read_parquet(directory / FEATURES_FILE, f"the {modality} features")
        except ValueError as error:
            raise SplitError(f"--{modality}: {error}") from None
        specs[modality] = directory / SPEC_FILE

    splits = {modality: split_table(table, seed, test_fraction, val_fraction) for modality, table in tables.items()}
    for modality, sets in splits.items():
        sizes = {name: sets[name].num_rows for name in SPLITS}
        if min(sizes.values()) == 0:
            raise SplitError(f"{modality}: a set is empty ({', '.join(f'{k} {v}' for k, v in sizes.items())} of "
                             f"{tables[modality].num_rows} objects); more objects or larger fractions are needed")

    parameters = {"seed": seed, "test_fraction": test_fraction, "val_fraction": val_fraction}
    with ArtifactWriter(out, stage="split", parameters=parameters, inputs=inputs, synthetic=synthetic) as writer:
        for modality, sets in splits.items():
            for name, table in sets.items():
                writer.write_table(f"{modality}/{name}.parquet", table)
                writer.count(f"{modality}.{name}", table.num_rows)
            shutil.copyfile(specs[modality], writer.path(f"{modality}/{SPEC_FILE}"))
    for modality, sets in splits.items():
        log.info("%s: %s", modality, ", ".join(f"{name} {table.num_rows}" for name, table in sets.items()))


def main(argv: list[str] | None = None) -> int:
    """The split stage's command line (the module docstring); 2 for bad input."""
    parser = argparse.ArgumentParser(prog="python -m steps.split", description=__doc__.splitlines()[0])
    for modality in MODALITIES:
        parser.add_argument(f"--{modality}", type=Path, help=f"preprocess output for {modality}")
    parser.add_argument("--out", type=Path, required=True, help="output artifact directory")
    parser.add_argument("--seed", type=int, default=0, help="seed of the assignment hash")
    parser.add_argument("--test-fraction", type=fraction(closed=False), default=0.2)
    parser.add_argument("--val-fraction", type=fraction(closed=False), default=0.1)
    args = parser.parse_args(argv)
    if args.test_fraction + args.val_fraction >= 1:
        parser.error(f"--test-fraction + --val-fraction must be below 1, got "
                     f"{args.test_fraction + args.val_fraction:g}")
    inputs = {modality: getattr(args, modality) for modality in MODALITIES if getattr(args, modality)}
    if not inputs:
        parser.error(f"give at least one of {', '.join('--' + m for m in MODALITIES)}")
    try:
        split_features(inputs, args.out, args.seed, args.test_fraction, args.val_fraction)
    except SplitError as error:
        log.error("%s", error)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main))
