"""`python -m steps.ingest {spectra,photometry,lightcurves} --source NAME --samples N --seed S --out DIR`.

Writes a raw artifact: `<modality>.parquet` and `labels.parquet` in the raw schemas of `steps.ingest.schemas`,
with a manifest. Exit status 2 means bad usage (an unknown source, say), which retrying cannot fix.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from steps.core.artifacts import ArtifactWriter
from steps.core.logs import get_logger
from steps.ingest import sources
from steps.ingest.schemas import DATA_FILES, LABELS_FILE, MODALITIES

log = get_logger("ingest")


def ingest(modality: str, source: str, samples: int, seed: int, out: Path) -> None:
    """Read `samples` objects of `modality` from `source` and publish them as a raw artifact at `out`."""
    started = time.perf_counter()
    tables = sources.read(source, modality, samples, seed)
    parameters = {"modality": modality, "source": source, "samples": samples, "seed": seed}
    with ArtifactWriter(out, stage=f"ingest.{modality}", parameters=parameters,
                        synthetic=sources.SOURCES[source].synthetic) as writer:
        writer.write_table(DATA_FILES[modality], tables[modality])
        writer.write_table(LABELS_FILE, tables["labels"])
        writer.count("objects", tables[modality].num_rows)
    log.info("%s from %s: %d objects in %.2f s -> %s", modality, source, tables[modality].num_rows,
             time.perf_counter() - started, out)


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m steps.ingest", description=__doc__.splitlines()[0])
    parser.add_argument("modality", choices=MODALITIES)
    parser.add_argument("--source", required=True, help=f"where to read from: {', '.join(sorted(sources.SOURCES))}")
    parser.add_argument("--samples", type=_non_negative, required=True, help="number of objects")
    parser.add_argument("--seed", type=_non_negative, default=0, help="seed of the synthetic source")
    parser.add_argument("--cache", default=None,
                        help="raw-archive cache (directory or s3:// URI) for archive connectors; "
                             "the synthetic source reads none")
    parser.add_argument("--out", type=Path, required=True, help="output artifact directory")
    args = parser.parse_args(argv)
    try:
        sources.get_source(args.source, args.modality)
    except sources.UnknownSource as error:
        parser.error(f"--source: {error}")
    ingest(args.modality, args.source, args.samples, args.seed, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
