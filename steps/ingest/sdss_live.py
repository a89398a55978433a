"""The live SDSS source: stars with SSPP stellar parameters and their spectra, through astroquery.sdss, incremental.

1. One SQL query (SkyServer, `SDSS.query_sql`) for the first N stars by specObjID whose spectrum is classed STAR with
   no redshift warning and whose adopted SSPP parameters (teffadop, loggadop, fehadop) are valid, not the -9999
   sentinel. Its result is kept in the raw cache under `sdss/queries/dr<DR>-<hash of the SQL>.ecsv`: a data
   release is frozen, so a later run asking the same of the same release reads it there and asks nothing.
2. Each spectrum is kept in the raw cache under `sdss/spec-PLATE-MJD-FIBER.fits`, the archive's own file; only those
   not there yet are downloaded (`SDSS.get_spectra_async`), so a weekly run fetches only new objects and two runs
   never store one twice.
3. Every request waits for a minimum interval since the previous one (polite rate limiting) and is retried with
   exponential backoff on transient errors (`steps.ingest.raw_cache`; here also connections urllib could not
   open). A request the archive refuses fails the run at once with `ArchiveError` naming it (a ValueError: bad
   input, not retried); transient errors that outlast the retries fail it with `RetriesExhausted` (a later run may
   succeed); a spectrum the archive does not have (HTTP 404) is quarantined.
4. The cached files are read by the folder replay's reader (`spectra_files.read_spectrum`) and labelled with the
   query's SSPP parameters.

Settings come from the environment (`STELLAR_SDSS_DATA_RELEASE`, `..._MIN_INTERVAL_S`, `..._ATTEMPTS`,
`..._BASE_DELAY_S`, `..._MAX_DELAY_S`, `..._TIMEOUT_S`); astroquery is imported only when the source is used.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import time
import urllib.error
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Protocol, TypeVar

from astropy.table import Table
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from steps.core.logs import get_logger
from steps.core.quarantine import Quarantine
from steps.ingest.raw_cache import (ArchiveSettings, RawCache, RetriesExhausted, http_status, is_transient,
                                    name_not_resolved, unreachable)
from steps.ingest.spectra_files import UnusableSpectrum, label_value, read_spectrum, spectra_tables

if TYPE_CHECKING:
    from steps.ingest.sources import IngestRequest, Ingested

log = get_logger("ingest.sdss")

SOURCE = "sdss"
LABEL_COLUMNS = {"teff": "teffadop", "logg": "loggadop", "feh": "fehadop"}
Result = TypeVar("Result")


class SdssSettings(ArchiveSettings):
    """How the connector talks to the archive; each field is also `STELLAR_SDSS_<NAME>` (pydantic-settings)."""

    model_config = SettingsConfigDict(env_prefix="STELLAR_SDSS_")

    data_release: int = Field(17, ge=1)
    timeout_s: float = Field(120.0, gt=0)      # per request


class ArchiveError(ValueError):
    """The archive refused a request in a way that retrying will not change (a bad request, like bad input: the
    ingest command exits 2 on it); the archive's error is its cause."""


def is_transient_download(error: BaseException) -> bool:
    """`raw_cache.is_transient`, and a connection that urllib (astroquery's file download) could not open."""
    return is_transient(error) or (isinstance(error, urllib.error.URLError)
                                   and not isinstance(error, urllib.error.HTTPError) and not name_not_resolved(error))


class SdssClient(Protocol):
    """The two archive calls the connector makes."""

    def query(self, sql: str, settings: SdssSettings) -> Table | None:
        """The SQL query's result table (None when it has no rows)."""

    def spectrum(self, match: Table, settings: SdssSettings) -> bytes:
        """The bytes of the spec file of a one-row table with run2d, plate, mjd and fiberID."""


class AstroquerySdss:
    """`SdssClient` through astroquery.sdss (imported here, when the live source is first used)."""

    def __init__(self) -> None:
        from astroquery.sdss import SDSS

        self.sdss = SDSS

    def query(self, sql: str, settings: SdssSettings) -> Table | None:
        return self.sdss.query_sql(sql, data_release=settings.data_release, timeout=settings.timeout_s, cache=False)

    def spectrum(self, match: Table, settings: SdssSettings) -> bytes:
        [container] = self.sdss.get_spectra_async(matches=match, data_release=settings.data_release,
                                                   timeout=settings.timeout_s, cache=False, show_progress=False)
        return container.get_string()


def stellar_query(samples: int) -> str:
    """The SQL for the first `samples` stars (by specObjID) with valid SSPP parameters and a clean redshift."""
    return (f"SELECT TOP {int(samples)} s.specObjID AS specobjid, s.plate, s.mjd, s.fiberID, s.run2d, "
            "p.teffadop, p.loggadop, p.fehadop "
            "FROM SpecObj AS s JOIN sppParams AS p ON p.specobjid = s.specObjID "
            "WHERE s.class = 'STAR' AND s.zWarning = 0 "
            "AND p.teffadop > 0 AND p.loggadop <> -9999 AND p.fehadop <> -9999 "
            "ORDER BY s.specObjID")


def spectrum_key(plate: int, mjd: int, fiber: int) -> str:
    """The raw-cache key of a spectrum: its archive file name under `sdss/`."""
    return f"sdss/spec-{plate:04d}-{mjd:05d}-{fiber:04d}.fits"


class _Archive:
    """The client behind the rate limiter and the retries, counting the requests it makes."""

    def __init__(self, client: SdssClient, settings: SdssSettings, sleep: Callable[[float], None],
                 clock: Callable[[], float]):
        self.client = client
        self.settings = settings
        self.sleep = sleep
        self.limiter = settings.limiter(clock=clock, sleep=sleep)
        self.requests = 0

    def call(self, request: Callable[[], Result], what: str) -> Result:
        """`request()`, spaced from the previous request and retried on transient errors; ArchiveError on others."""
        def attempt() -> Result:
            self.limiter.wait()
            self.requests += 1
            return request()

        try:
            return self.settings.retry(attempt, f"SDSS {what}", sleep=self.sleep, transient=is_transient_download)
        except RetriesExhausted:
            raise
        except Exception as error:      # not transient: `retrying` let it through at once
            if unreachable(error):  # no archive to ask (the stage says so in one line): not bad input
                raise
            raise ArchiveError(f"SDSS {what} failed: {type(error).__name__}: {error}") from error


def _stars(cache: RawCache, archive: _Archive, samples: int) -> Table:
    """The query result: from the cache when this query was answered for this data release before."""
    sql = stellar_query(samples)
    key = (f"sdss/queries/dr{archive.settings.data_release}-"
           f"{hashlib.sha256(sql.encode()).hexdigest()[:16]}.ecsv")
    cached = cache.get(key)
    if cached is not None:
        return Table.read(cached.decode(), format="ascii.ecsv")
    table = archive.call(partial(archive.client.query, sql, archive.settings), "stellar SQL query")
    if table is None:
        table = Table(names=("specobjid", "plate", "mjd", "fiberID", "run2d", *LABEL_COLUMNS.values()),
                      dtype=(int, int, int, int, str, float, float, float))
    buffer = io.StringIO()
    table.write(buffer, format="ascii.ecsv")
    cache.put(key, buffer.getvalue().encode())
    return table


@contextmanager
def _raw_cache(uri: str | None) -> Iterator[RawCache]:
    if uri:
        yield RawCache(uri)
        return
    log.warning("no raw-archive cache given (--cache): downloads are kept only for this run")
    with tempfile.TemporaryDirectory(prefix="sdss-cache-") as scratch:
        yield RawCache(scratch)


def read_sdss(request: IngestRequest, *, settings: SdssSettings | None = None, client: SdssClient | None = None,
              sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> Ingested:
    """The first `request.samples` SDSS stars with SSPP parameters: spectra and labels, through the raw cache
    `request.cache` (a directory or s3:// URI), downloading only what it lacks."""
    from steps.ingest.sources import Ingested   # here, not at the top: sources imports this module to register it

    if request.samples <= 0:
        raise ValueError("the live SDSS source needs --samples > 0: how many stars to ask the archive for")
    settings = settings or SdssSettings.from_environment()
    archive = _Archive(client or AstroquerySdss(), settings, sleep, clock)
    quarantine = Quarantine("ingest.spectra")
    spectra, downloaded, from_cache = [], 0, 0
    with _raw_cache(request.cache) as cache:
        stars = _stars(cache, archive, request.samples)
        for star in stars:
            plate, mjd, fiber = int(star["plate"]), int(star["mjd"]), int(star["fiberID"])
            key = spectrum_key(plate, mjd, fiber)
            name = key.rsplit("/", 1)[-1]
            cached = cache.get(key)
            if cached is None:
                match = Table(rows=[(str(star["run2d"]), plate, mjd, fiber)],
                              names=("run2d", "plate", "mjd", "fiberID"))
                try:
                    data = archive.call(partial(archive.client.spectrum, match, settings), f"download of {name}")
                except ArchiveError as error:
                    if http_status(error.__cause__) != 404:
                        raise
                    quarantine.add(name, f"the archive has no spectrum file: {error}", SOURCE)
                    continue
                cache.put(key, data)
                downloaded += 1
            else:
                data = cached
                from_cache += 1
            try:
                spectrum = read_spectrum(data, name)
            except UnusableSpectrum as error:
                quarantine.add(name, str(error), SOURCE)
                continue
            spectrum.labels = {label: label_value(star[column]) for label, column in LABEL_COLUMNS.items()}
            spectra.append(spectrum)
    log.info("SDSS DR%d: %d stars asked, %d spectra read (%d files downloaded, %d from the cache), %d quarantined, "
             "%d requests", settings.data_release, request.samples, len(spectra), downloaded, from_cache,
             len(quarantine), archive.requests)
    data, labels = spectra_tables(spectra)
    return Ingested(data, labels, quarantine)
