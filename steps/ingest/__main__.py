"""`python -m steps.ingest {spectra,photometry,lightcurves} --source NAME_OR_FOLDER --samples N --seed S --out DIR`.

Writes a raw artifact: `<modality>.parquet` (one row per object) and `labels.parquet` in the raw schemas of
`steps.ingest.schemas`, the records set aside in `quarantine.parquet`, and a manifest. Exit status 2 means bad
usage or input (an unknown source, a missing folder, too many bad records), or no space left for the output
(`steps.core.space`), which retrying cannot fix.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from steps.core.arguments import fraction
from steps.core.artifacts import ArtifactWriter
from steps.core.logs import get_logger
from steps.core.names import MODALITIES
from steps.core.quarantine import QUARANTINE_TABLE, TooManyBadRecords
from steps.core.space import exit_status
from steps.ingest import sources
from steps.ingest.raw_cache import RetriesExhausted, unreachable
from steps.ingest.schemas import DATA_FILES, LABEL_LIMITS, LABELS_FILE

log = get_logger("ingest")


def ingest(modality: str, source: str, samples: int, seed: int, out: Path, cache: str | None = None,
           max_bad_fraction: float = 0.2) -> None:
    """Read up to `samples` objects of `modality` from `source` and publish them as a raw artifact at `out`."""
    started = time.perf_counter()
    resolved, ingested = sources.read(source, sources.IngestRequest(modality, samples, seed, cache=cache))
    ingested.labels = plausible_labels(ingested.labels, f"{modality} from {resolved.name}")
    ingested.quarantine.check(ingested.data.num_rows + len(ingested.quarantine.object_rows), max_bad_fraction)
    parameters = {"modality": modality, "source": source, "samples": samples, "seed": seed}
    with ArtifactWriter(out, stage=f"ingest.{modality}", parameters=parameters,
                        synthetic=resolved.synthetic) as writer:
        writer.write_table(DATA_FILES[modality], ingested.data)
        writer.write_table(LABELS_FILE, ingested.labels)
        writer.write_table(QUARANTINE_TABLE, ingested.quarantine.table())
        writer.count("objects", ingested.data.num_rows)
        writer.count("quarantined", len(ingested.quarantine))
    log.info("%s from %s: %d objects, %s, in %.2f s -> %s", modality, resolved.name, ingested.data.num_rows,
             ingested.quarantine.summary(), time.perf_counter() - started, out)


def plausible_labels(labels: pa.Table, where: str) -> pa.Table:
    """`labels` with every label of a row blanked where one is outside `LABEL_LIMITS` (the object is kept), and a
    warning naming them. Such a row is broken (MILES's m0974: a Teff of 23 K beside the spectral type "1"), so its
    other labels are not trusted either; a teff of 0 or a log g of 99 used to be trained on, and showed only as a
    poor model."""
    present = [label for label in LABEL_LIMITS if label in labels.column_names]
    if not present:
        return labels
    values = {label: labels.column(label).to_numpy(zero_copy_only=False).astype(np.float64) for label in present}
    broken = np.zeros(labels.num_rows, bool)
    ids = labels.column("id").to_pylist()
    for label in present:
        low, high, unit = LABEL_LIMITS[label]
        outside = np.flatnonzero(np.isfinite(values[label]) & ((values[label] < low) | (values[label] > high)))
        if outside.size:
            shown = ", ".join(f"{ids[row]}: {values[label][row]:g}" for row in outside[:5])
            log.warning("%s: %d %s label%s outside [%g, %g] %s (%s%s): every label of %s left blank", where,
                        outside.size, label, "s" if outside.size > 1 else "", low, high, unit, shown,
                        ", ..." if outside.size > 5 else "", "these rows" if outside.size > 1 else "the row")
            broken[outside] = True
    for label in present:
        values[label][broken] = np.nan
        labels = labels.set_column(labels.column_names.index(label), label,
                                   pa.array(values[label], pa.float64(), from_pandas=True))
    return labels


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """The ingest stage's command line (the module docstring); 2 for bad input, 1 for an archive out of reach."""
    parser = argparse.ArgumentParser(prog="python -m steps.ingest", description=__doc__.splitlines()[0])
    parser.add_argument("modality", choices=MODALITIES)
    parser.add_argument("--source", required=True,
                        help=f"{', '.join(sorted(sources.SOURCES))}, or a folder (path or s3://) to replay")
    parser.add_argument("--samples", type=_non_negative, required=True,
                        help="objects to draw (synthetic) or at most to read (0: all)")
    parser.add_argument("--seed", type=_non_negative, default=0, help="seed of the synthetic source")
    parser.add_argument("--cache", default=None,
                        help="raw-archive cache (directory or s3:// URI) for archive connectors; "
                             "the synthetic source reads none")
    parser.add_argument("--max-bad-fraction", type=fraction(closed=True), default=0.2,
                        help="fail when more than this share of records is quarantined (default 0.2)")
    parser.add_argument("--out", type=Path, required=True, help="output artifact directory")
    args = parser.parse_args(argv)
    try:
        sources.resolve(args.source, args.modality)
    except sources.UnknownSource as error:
        parser.error(f"--source: {error}")
    try:
        ingest(args.modality, args.source, args.samples, args.seed, args.out, args.cache, args.max_bad_fraction)
    except (TooManyBadRecords, ValueError) as error:  # bad input or settings: retrying cannot help
        log.error("%s", error)
        return 2
    except Exception as error:  # an archive out of reach: one line, and exit 1 so the workflow retries later
        reason = unreachable(error)
        if reason is None:
            raise
        log.error("%s --source %s: %s%s; to run without the network, give a folder (or s3://) of the archive's "
                  "files as the source (stellar run --%s-from DIR)", args.modality, args.source, reason,
                  " after every attempt" if isinstance(error, RetriesExhausted) else "", args.modality)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main))
