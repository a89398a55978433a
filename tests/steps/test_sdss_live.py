"""The live SDSS source, replayed without a network: astroquery.sdss's two calls are patched to answer with a
recorded SkyServer response (`fixtures/sdss`) and with the shared SDSS spec files as the archive's downloads.
Proves incremental ingestion through the raw cache (directory or S3), retries with backoff, rate limiting, and
clear failures."""

from __future__ import annotations

import re
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from astroquery.exceptions import RemoteServiceError
from astroquery.sdss import SDSS
from astroquery.utils.commons import FileContainer

from steps.ingest.raw_cache import RawCache, RetriesExhausted
from steps.ingest.schemas import SPECTRA_SCHEMA, STELLAR_LABELS_SCHEMA
from steps.ingest.sdss_live import ArchiveError, SdssSettings, is_transient_download, read_sdss, stellar_query
from steps.ingest.sources import IngestRequest

RECORDED_QUERY = Path(__file__).parent / "fixtures" / "sdss" / "stellar_query.csv"
# No waiting in tests: sleeps are recorded, not slept.
FAST = SdssSettings(min_interval_s=0.0, attempts=3, base_delay_s=1.0, max_delay_s=60.0, timeout_s=5.0)


class ReplayedArchive:
    """Stands in for astroquery.sdss.SDSS's network calls and counts them. `failures` are raised, in order, by the
    next calls (None lets a call through)."""

    def __init__(self, sdss_dir: Path, failures: list[BaseException | None] | None = None):
        self.sdss_dir = sdss_dir
        self.failures = list(failures or [])
        self.queries: list[str] = []
        self.downloads: list[str] = []

    def _maybe_fail(self) -> None:
        if self.failures:
            failure = self.failures.pop(0)
            if failure is not None:
                raise failure

    def query_sql(self, sql: str, **options) -> Table:
        self.queries.append(sql)
        self._maybe_fail()
        table = Table.read(RECORDED_QUERY, format="ascii.csv", comment="#")    # as astroquery parses the CSV
        table["specobjid"] = table["specobjid"].astype(np.uint64)
        return table[: int(re.search(r"TOP (\d+)", sql).group(1))]

    def get_spectra_async(self, *, matches: Table, **options) -> list[FileContainer]:
        row = matches[0]
        name = f"spec-{int(row['plate']):04d}-{int(row['mjd']):05d}-{int(row['fiberID']):04d}.fits"
        self.downloads.append(name)
        self._maybe_fail()
        return [FileContainer(str(self.sdss_dir / name), encoding="binary", cache=False)]


@pytest.fixture
def archive(shared_dir, monkeypatch) -> ReplayedArchive:
    replay = ReplayedArchive(shared_dir / "data" / "sdss")
    monkeypatch.setattr(SDSS, "query_sql", replay.query_sql)
    monkeypatch.setattr(SDSS, "get_spectra_async", replay.get_spectra_async)
    return replay


def http_error(status: int) -> urllib.error.HTTPError:
    return urllib.error.HTTPError("https://dr17.sdss.org/sas/...", status, f"HTTP {status}", None, None)


def run(cache: Path | str, samples: int = 4, settings: SdssSettings = FAST, sleeps: list[float] | None = None):
    ingested = read_sdss(IngestRequest("spectra", samples, cache=str(cache)), settings=settings,
                         sleep=(sleeps if sleeps is not None else []).append)
    assert ingested.data.schema.equals(SPECTRA_SCHEMA) and ingested.labels.schema.equals(STELLAR_LABELS_SCHEMA)
    return ingested


@pytest.mark.needs_shared
def test_a_second_run_over_the_same_cache_fetches_nothing(tmp_path, archive):
    first = run(tmp_path / "cache")
    assert len(archive.queries) == 1 and len(archive.downloads) == 4
    ids = first.data.column("id").to_pylist()
    assert ids == ["spec-0618-52049-0372", "spec-4961-55719-0378", "spec-7332-56683-0788", "spec-7454-56751-0770"]
    assert set(first.data.column("source").to_pylist()) == {"sdss"} and len(first.quarantine) == 0
    labels = first.labels.to_pandas().set_index("id")
    assert labels.loc["spec-7332-56683-0788"].tolist() == pytest.approx([5402.7, 4.52, 0.04])  # from the query
    stored = RawCache(str(tmp_path / "cache")).keys("sdss/")
    assert [key for key in stored if key.startswith("sdss/spec-")] == [f"sdss/{name}" for name in archive.downloads]
    assert sum(key.startswith("sdss/queries/dr17-") for key in stored) == 1

    second = run(tmp_path / "cache")
    assert len(archive.queries) == 1 and len(archive.downloads) == 4          # nothing asked, nothing downloaded
    assert second.data.equals(first.data) and second.labels.equals(first.labels)


@pytest.mark.needs_shared
def test_a_larger_sample_downloads_only_the_stars_not_yet_cached(tmp_path, archive):
    run(tmp_path / "cache", samples=2)
    assert archive.downloads == ["spec-0618-52049-0372.fits", "spec-4961-55719-0378.fits"]
    larger = run(tmp_path / "cache", samples=4)
    assert len(archive.queries) == 2                                          # a different query: TOP 4
    assert archive.downloads[2:] == ["spec-7332-56683-0788.fits", "spec-7454-56751-0770.fits"]
    assert larger.data.num_rows == 4


@pytest.mark.needs_shared
def test_transient_errors_are_retried_with_exponential_backoff(tmp_path, archive):
    archive.failures = [ConnectionResetError("connection reset by peer"), None,       # the query, then the
                        http_error(503), urllib.error.URLError(ConnectionRefusedError("refused"))]  # first download
    sleeps: list[float] = []
    ingested = run(tmp_path / "cache", sleeps=sleeps)
    assert ingested.data.num_rows == 4 and len(ingested.quarantine) == 0
    assert len(archive.queries) == 2 and archive.downloads[:3] == ["spec-0618-52049-0372.fits"] * 3
    assert sleeps == [1.0, 1.0, 2.0]                       # query: one retry; download: base delay, then doubled


@pytest.mark.needs_shared
def test_transient_errors_that_outlast_the_retries_fail_the_run_naming_the_request(tmp_path, archive):
    archive.failures = [None] + [http_error(503)] * 3
    sleeps: list[float] = []
    with pytest.raises(RetriesExhausted, match=r"SDSS download of spec-0618-52049-0372\.fits: still failing after "
                                               r"3 attempts; last error: HTTPError: HTTP Error 503"):
        run(tmp_path / "cache", sleeps=sleeps)
    assert sleeps == [1.0, 2.0]
    assert RawCache(str(tmp_path / "cache")).keys("sdss/spec-") == []          # nothing half-stored


@pytest.mark.needs_shared
def test_a_refused_query_fails_at_once_with_the_archive_message(tmp_path, archive):
    archive.failures = [RemoteServiceError("Invalid column name 'teffadopp'")]
    sleeps: list[float] = []
    with pytest.raises(ArchiveError, match="SDSS stellar SQL query failed: RemoteServiceError: Invalid column name"):
        run(tmp_path / "cache", sleeps=sleeps)
    assert sleeps == [] and len(archive.queries) == 1


@pytest.mark.needs_shared
def test_a_spectrum_the_archive_does_not_have_is_quarantined(tmp_path, archive):
    archive.failures = [None, None, http_error(404)]
    ingested = run(tmp_path / "cache")
    assert ingested.data.num_rows == 3
    [record] = ingested.quarantine.rows
    assert record["id"] == "spec-4961-55719-0378.fits" and "the archive has no spectrum file" in record["reason"]
    assert "HTTP Error 404" in record["reason"]


@pytest.mark.needs_shared
def test_requests_are_spaced_by_the_minimum_interval(tmp_path, archive, monkeypatch):
    now = [100.0]

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    sleeps: list[float] = []
    settings = SdssSettings(min_interval_s=0.5, attempts=1)
    read_sdss(IngestRequest("spectra", 4, cache=str(tmp_path / "cache")), settings=settings, sleep=sleep,
              clock=lambda: now[0])
    assert sleeps == [0.5] * 4                 # five requests (a query, four downloads) that took no time at all


@pytest.mark.needs_shared
def test_the_raw_cache_can_be_an_s3_prefix(archive, s3_server, s3_bucket, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    cache = f"s3://{s3_bucket}/raw"
    first = run(cache, samples=2)
    second = run(cache, samples=2)
    assert len(archive.downloads) == 2 and len(archive.queries) == 1 and second.data.equals(first.data)
    assert RawCache(cache).keys("sdss/spec-") == ["sdss/spec-0618-52049-0372.fits", "sdss/spec-4961-55719-0378.fits"]


def test_settings_come_from_the_environment_and_a_bad_value_is_named(monkeypatch):
    monkeypatch.setenv("STELLAR_SDSS_ATTEMPTS", "3")
    monkeypatch.setenv("STELLAR_SDSS_MIN_INTERVAL_S", "0.25")
    assert SdssSettings.from_environment() == SdssSettings(attempts=3, min_interval_s=0.25)
    monkeypatch.setenv("STELLAR_SDSS_ATTEMPTS", "many")
    monkeypatch.setenv("STELLAR_SDSS_TIMEOUT_S", "-1")
    with pytest.raises(ValueError, match=r"^STELLAR_SDSS_ATTEMPTS='many': .*integer.*; STELLAR_SDSS_TIMEOUT_S='-1': "
                                         r".*greater than 0$"):
        SdssSettings.from_environment()


def test_the_live_source_needs_a_sample_size(tmp_path):
    with pytest.raises(ValueError, match="needs --samples > 0"):
        read_sdss(IngestRequest("spectra", 0, cache=str(tmp_path)), settings=FAST)


@pytest.mark.parametrize(("error", "transient"), [
    (http_error(503), True), (http_error(429), True), (http_error(404), False), (http_error(400), False),
    (TimeoutError("timed out"), True), (ConnectionResetError("reset"), True),
    (urllib.error.URLError(ConnectionRefusedError("refused")), True), (RemoteServiceError("syntax"), False),
    (ValueError("bad"), False),
])
def test_transient_errors_are_told_from_permanent_ones(error, transient):
    assert is_transient_download(error) is transient


def test_the_query_asks_for_valid_sspp_parameters_of_stars_in_a_fixed_order():
    sql = stellar_query(25)
    assert sql.startswith("SELECT TOP 25 ") and "s.class = 'STAR'" in sql and "ORDER BY s.specObjID" in sql
    assert all(f"p.{column}" in sql for column in ("teffadop", "loggadop", "fehadop")) and "-9999" in sql
