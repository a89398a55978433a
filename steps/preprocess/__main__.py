"""`python -m steps.preprocess {spectra,photometry,lightcurves} --in RAW_DIR --out DIR [options]`.

Writes `features.parquet`, `spec.json` (the input spec a model trained on these features must carry) and
`quarantine.parquet`, with a manifest. Exit status 2 means the input cannot be used (not a raw artifact of the
modality, or more bad records than `--max-bad-fraction`) or that no space is left for the output
(`steps.core.space`); retrying cannot fix it, and nothing is published.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from steps.core.arguments import fraction
from steps.core.logs import get_logger
from steps.core.quarantine import TooManyBadRecords
from steps.core.space import exit_status
from steps.preprocess import lightcurves, photometry, spectra
from steps.ingest.schemas import PHOTOMETRIC_BANDS
from steps.preprocess.common import RawInputError, publish, read_raw

log = get_logger("preprocess")


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _band_list(text: str) -> tuple[str, ...]:
    try:
        return photometry.select_bands(tuple(band.strip() for band in text.split(",") if band.strip()))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per modality, each with its own options."""
    parser = argparse.ArgumentParser(prog="python -m steps.preprocess", description=__doc__.splitlines()[0])
    modalities = parser.add_subparsers(dest="modality", required=True, metavar="{spectra,photometry,lightcurves}")
    commands = {
        "spectra": modalities.add_parser("spectra", help="spectra onto a common rest-frame grid, normalised"),
        "photometry": modalities.add_parser("photometry", help="cleaned, dereddened magnitudes and colours"),
        "lightcurves": modalities.add_parser("lightcurves", help="detrended, period-folded views and features"),
    }
    for command in commands.values():
        command.add_argument("--in", dest="raw", type=Path, required=True, help="raw artifact from ingest")
        command.add_argument("--out", type=Path, required=True, help="output artifact directory")
        command.add_argument("--max-bad-fraction", type=fraction(closed=True), default=0.2,
                             help="fail when more than this share of records is quarantined (default 0.2)")
    commands["spectra"].add_argument("--length", type=_positive, default=spectra.DEFAULT_LENGTH,
                                     help=f"pixels of the common grid, {spectra.WAVE_MIN:.0f}-{spectra.WAVE_MAX:.0f} A "
                                          f"(default {spectra.DEFAULT_LENGTH})")
    commands["photometry"].add_argument("--deredden", action=argparse.BooleanOptionalAction, default=True,
                                        help="correct magnitudes for extinction with the ebv column (default on)")
    commands["photometry"].add_argument("--bands", type=_band_list, default=PHOTOMETRIC_BANDS,
                                        help=f"comma-separated band set (default {','.join(PHOTOMETRIC_BANDS)})")
    commands["lightcurves"].add_argument("--length", type=_positive, default=lightcurves.DEFAULT_GLOBAL_LENGTH,
                                         help=f"bins of the global view (default {lightcurves.DEFAULT_GLOBAL_LENGTH})")
    commands["lightcurves"].add_argument("--local-length", type=_positive, default=lightcurves.DEFAULT_LOCAL_LENGTH,
                                         help=f"bins of the local view (default {lightcurves.DEFAULT_LOCAL_LENGTH})")
    commands["lightcurves"].add_argument("--workers", type=_positive, default=lightcurves.default_workers(),
                                         help="processes sharing the curves; the output does not depend on it "
                                              "(default: the CPUs available)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """The preprocess stage's command line (the module docstring); 2 for bad input."""
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        raw = read_raw(args.raw, args.modality)
        if args.modality == "spectra":
            features = spectra.preprocess_spectra(raw, length=args.length)
        elif args.modality == "photometry":
            features = photometry.preprocess_photometry(raw, deredden=args.deredden, bands=args.bands)
        else:
            features = lightcurves.preprocess_lightcurves(raw, global_length=args.length,
                                                          local_length=args.local_length, workers=args.workers)
        publish(args.out, args.modality, raw, features, args.max_bad_fraction)
    except (RawInputError, TooManyBadRecords) as error:
        log.error("%s", error)
        return 2
    log.info("%s: %d in, %d out, %d quarantined in %.2f s -> %s", args.modality, features.objects_in,
             features.table.num_rows, len(features.quarantine), time.perf_counter() - started, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main))
