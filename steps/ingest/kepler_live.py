"""Live Kepler light curves from MAST through lightkurve, for the targets of a KOI catalogue, fetched incrementally.

Targets are the stars of the Kepler Objects of Interest table whose first KOI has a disposition that labels them
(CONFIRMED: `transit`, FALSE POSITIVE: `false_positive`; candidates carry no label yet), in order of id. The
table is a file (`KeplerQuery.catalogue`: a path or an http(s) URL) or, by default, the NASA Exoplanet Archive's
`cumulative` table through astroquery; either way it is stored in the raw cache as `kepler/koi_cumulative.csv`,
and a run that finds it there asks the archive nothing. A new catalogue is taken by naming it.

Each target's light curve (one file: the first Kepler long-cadence product MAST lists, or the quarter asked for) is
searched with `lightkurve.search_lightcurve` and downloaded with `SearchResult.download`, and the archive's own
FITS bytes are stored in the raw cache under `kepler/<id>.fits`. A target the cache holds is never fetched again,
so next week's run downloads only stars it has not seen, and two runs never hold two copies of one. The cache
folder is itself replayable by the light-curve folder reader (its FITS files and its KOI table).

Every request waits for the rate limiter and is retried with exponential backoff on transient errors (HTTP 429
and 5xx, dropped connections, timeouts); a target that keeps failing stops the run, naming it (the stage's retry
starts again from the cache). A target that MAST has no light curve for, or whose file cannot be read, is
quarantined and not cached, so a later run asks again.
"""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import requests
from pydantic_settings import SettingsConfigDict

from steps.core.logs import get_logger
from steps.core.quarantine import Quarantine
from steps.ingest.lightcurve_files import (Curve, FolderContents, UnreadableFile, assemble, curve_tables,
                                           import_lightkurve, read_fits_curve, read_koi_table)
from steps.ingest.raw_cache import ArchiveSettings, RateLimiter, RawCache

if TYPE_CHECKING:
    from steps.ingest.sources import IngestRequest, Ingested

log = get_logger("ingest.kepler")

CATALOGUE_KEY = "kepler/koi_cumulative.csv"
KOI_COLUMNS = "kepid,kepoi_name,kepler_name,koi_disposition,koi_pdisposition,koi_period,koi_steff"


@dataclass(frozen=True)
class KeplerQuery:
    """Which light curves to fetch and how politely.

    `catalogue`: the KOI table's path or URL (None: the Exoplanet Archive's `cumulative` table). `quarter`: the
    Kepler quarter to take (None: the first long-cadence product MAST lists). How requests are paced and retried is
    `KeplerSettings`.
    """

    catalogue: str | None = None
    quarter: int | None = None
    author: str = "Kepler"
    cadence: str = "long"


DEFAULT_QUERY = KeplerQuery()


class KeplerSettings(ArchiveSettings):
    """How the connector paces and retries its requests to MAST and the Exoplanet Archive; each field is also
    `STELLAR_KEPLER_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="STELLAR_KEPLER_")


def target_key(curve_id: str) -> str:
    """The raw-cache key of a target's light-curve file."""
    return f"kepler/{curve_id}.fits"


def fetch_catalogue(query: KeplerQuery, settings: KeplerSettings, limiter: RateLimiter,
                    sleep: Callable[[float], None]) -> str:
    """The KOI table as CSV text: read from `query.catalogue` or queried from the NASA Exoplanet Archive."""
    def request() -> str:
        limiter.wait()
        if query.catalogue is None:
            from astroquery.ipac.nexsci.nasa_exoplanet_archive import NasaExoplanetArchive

            table = NasaExoplanetArchive.query_criteria(table="cumulative", select=KOI_COLUMNS)
            buffer = io.StringIO()
            table.write(buffer, format="ascii.csv")
            return buffer.getvalue()
        if query.catalogue.startswith(("http://", "https://")):
            response = requests.get(query.catalogue, timeout=120)
            response.raise_for_status()
            return response.text
        return Path(query.catalogue).read_text()

    return settings.retry(request, "KOI catalogue", sleep=sleep)


def download_lightcurve(kic: int, query: KeplerQuery, scratch: Path) -> bytes | None:
    """The archive's FITS file of one target's light curve, or None when MAST lists none."""
    lightkurve = import_lightkurve()  # a run served from the cache needs none of it

    found = lightkurve.search_lightcurve(f"KIC {kic}", mission="Kepler", author=query.author,
                                         cadence=query.cadence, quarter=query.quarter)
    if len(found) == 0:
        return None
    curve = found[0].download(download_dir=str(scratch), quality_bitmask="none")
    return Path(curve.meta["FILENAME"]).read_bytes()


def read_kepler(request: IngestRequest, query: KeplerQuery = DEFAULT_QUERY, *, settings: KeplerSettings | None = None,
                sleep: Callable[[float], None] = time.sleep,
                clock: Callable[[], float] = time.monotonic) -> Ingested:
    """The first `request.samples` targets of the KOI catalogue (0 = all), downloading only those the raw cache
    at `request.cache` lacks (paced and retried as `settings` say: by default, the environment's)."""
    from steps.ingest.sources import Ingested   # here: sources imports this module to register it

    if not request.cache:
        raise ValueError("the live Kepler source needs --cache (a directory or s3:// prefix) to fetch incrementally")
    cache = RawCache(request.cache)
    settings = settings or KeplerSettings.from_environment()
    limiter = settings.limiter(clock=clock, sleep=sleep)
    catalogue = cache.get(CATALOGUE_KEY)
    if catalogue is None:
        catalogue = fetch_catalogue(query, settings, limiter, sleep).encode()
        cache.put(CATALOGUE_KEY, catalogue)
    koi = read_koi_table(catalogue.decode())
    targets = sorted(curve_id for curve_id, (label, _) in koi.items() if label is not None)
    if request.samples:
        targets = targets[:request.samples]

    curves: list[Curve] = []
    bad: list[tuple[str, str, str]] = []
    fetched = 0
    with tempfile.TemporaryDirectory(prefix="kepler-") as scratch:
        for curve_id in targets:
            key = target_key(curve_id)
            data = cache.get(key)
            downloaded = data is None
            if downloaded:
                def fetch(kic: int = int(curve_id.removeprefix("kplr"))) -> bytes | None:
                    limiter.wait()
                    return download_lightcurve(kic, query, Path(scratch))

                data = settings.retry(fetch, f"Kepler light curve of {curve_id}", sleep=sleep)
                if data is None:
                    bad.append((curve_id, "MAST lists no Kepler light curve for this target", "mast"))
                    continue
            try:
                curve = read_fits_curve(data, key)
                if curve.id != curve_id:
                    raise UnreadableFile(f"the file served for {curve_id} is the light curve of {curve.id}")
            except UnreadableFile as error:
                bad.append((curve_id, str(error), key))
                continue
            if downloaded:
                cache.put(key, data)
                fetched += 1
            curves.append(curve)

    kept, bad = assemble(FolderContents(curves=curves, koi=koi, quarantine=bad))
    quarantine = Quarantine("ingest.lightcurves")
    for record_id, reason, origin in bad:
        quarantine.add(record_id, reason, origin)
    log.info("kepler: %d of %d target(s) downloaded, the rest read from the raw cache at %s; %d kept, %d quarantined",
             fetched, len(targets), cache.uri, len(kept), len(quarantine))
    data, labels = curve_tables(kept)
    return Ingested(data, labels, quarantine)
