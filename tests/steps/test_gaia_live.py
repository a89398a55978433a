"""The live Gaia connector against a recorded archive response: paging, the raw cache (a second run fetches
nothing), retries with backoff, rate limiting, and clear failures. No test touches the network: sockets are
refused, and astroquery's `Gaia.launch_job_async` answers from `fixtures/gaia/`."""

from __future__ import annotations

import functools
import re
import socket
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
from astropy.table import Table

from steps.core.artifacts import read_manifest
from steps.ingest import sources
from steps.ingest.__main__ import ingest
from steps.ingest.gaia_live import GaiaQuery, GaiaSettings, PageTooDense, read_gaia
from steps.ingest.photometry_files import read_photometry_folder
from steps.ingest.raw_cache import RawCache, RetriesExhausted
from steps.ingest.schemas import DATA_FILES, LABELS_FILE, PHOTOMETRY_SCHEMA
from steps.ingest.sources import IngestRequest

RECORDED = Table.read(Path(__file__).parent / "fixtures" / "gaia" / "dr3_2mass_allwise_page.vot", format="votable")
# Pages of 500 million random_index values: the recorded rows fall on pages 0 (2 rows), 1 (3), 2 (none), 3 (3).
QUERY = GaiaQuery(page_width=500_000_000)
SETTINGS = GaiaSettings(attempts=3, base_delay_s=2.0, min_interval_s=1.0)


class RecordedArchive:
    """Stands in for the Gaia archive: a page query gets the recorded rows of its random_index range, by source_id.

    `failures` are raised, in order, by the first calls, as a flaky archive would.
    """

    def __init__(self, *failures: Exception):
        self.failures = list(failures)
        self.queries: list[str] = []

    def launch_job_async(self, query: str, **options) -> SimpleNamespace:
        self.queries.append(query)
        if self.failures:
            raise self.failures.pop(0)
        first, last = map(int, re.search(r"random_index BETWEEN (\d+) AND (\d+)", query).groups())
        top = int(re.search(r"SELECT TOP (\d+)", query).group(1))
        rows = RECORDED[(RECORDED["random_index"] >= first) & (RECORDED["random_index"] <= last)]
        rows.sort("source_id")
        return SimpleNamespace(get_results=lambda: rows[:top])

    def pages(self) -> list[int]:
        """The pages asked for, by their first random_index."""
        return [int(re.search(r"BETWEEN (\d+)", query).group(1)) // QUERY.page_width for query in self.queries]


@pytest.fixture
def offline(monkeypatch):
    """No socket can connect or resolve a name; astroquery.gaia is imported under that (it contacts the archive
    at import and carries on when it cannot)."""
    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    import astroquery.gaia

    return astroquery.gaia.Gaia


@pytest.fixture
def archive(offline, monkeypatch) -> RecordedArchive:
    recorded = RecordedArchive()
    monkeypatch.setattr(offline, "launch_job_async", recorded.launch_job_async)
    return recorded


def _read(cache: Path, samples: int, sleeps: list[float] | None = None) -> sources.Ingested:
    request = IngestRequest("photometry", samples, cache=str(cache))
    return read_gaia(request, QUERY, settings=SETTINGS, sleep=(sleeps if sleeps is not None else []).append)


def test_pages_are_fetched_once_and_a_second_run_fetches_nothing(archive, tmp_path):
    first = _read(tmp_path / "cache", 4)
    assert archive.pages() == [0, 1]
    page_0 = sorted(str(i) for i in RECORDED["source_id"][RECORDED["random_index"] < QUERY.page_width])
    assert first.data.column("id").to_pylist()[:2] == page_0 and first.data.num_rows == 4

    again = _read(tmp_path / "cache", 4)
    assert archive.pages() == [0, 1], "the second run fetched a page again"
    assert again.data.to_pandas().equals(first.data.to_pandas())
    assert again.labels.to_pandas().equals(first.labels.to_pandas())

    more = _read(tmp_path / "cache", 7)
    assert archive.pages() == [0, 1, 2, 3], "a larger sample fetches only the pages past the cached ones"
    assert more.data.column("id").to_pylist()[:4] == first.data.column("id").to_pylist()
    assert more.data.num_rows == 7 and len(set(more.data.column("id").to_pylist())) == 7
    assert [(row["id"], row["reason"]) for row in more.quarantine.rows] == [
        ("1000000000000000001", "no usable band: G, BP, RP, J, H, Ks, W1, W2 all missing")]
    keys = RawCache(str(tmp_path / "cache")).keys("gaia/")
    assert keys == [f"{QUERY.cache_prefix}/{name}" for name in
                    ("page-000000.vot", "page-000001.vot", "page-000002.vot", "page-000003.vot", "query.json")]


def test_recorded_rows_map_to_the_raw_schema(archive, tmp_path):
    ingested = _read(tmp_path / "cache", 7)
    assert ingested.data.schema.equals(PHOTOMETRY_SCHEMA)
    data = ingested.data.to_pandas().set_index("id")
    labels = ingested.labels.to_pandas().set_index("id")
    star = data.loc["6904703228801028864"]                          # HIP101345, a benchmark star
    assert star["mag_J"] == pytest.approx(4.309) and np.isnan(star["err_Ks"])   # 2MASS ph_qual DDE: Ks poor fit
    assert star["mag_W1"] == pytest.approx(4.106) and np.isnan(star["ebv"])
    assert star["err_G"] == pytest.approx(np.hypot(2.5 / np.log(10) / 1687.7, 0.0027553202), rel=1e-3)
    assert labels.loc["6904703228801028864", "teff"] == pytest.approx(5499.9087)
    faint = data.loc["6636090339110121344"]                         # no 2MASS, no AllWISE neighbour, no GSP-Phot
    assert np.isnan(faint[["mag_J", "mag_W1"]].astype(float)).all() and np.isnan(labels.loc[faint.name, "teff"])


def test_the_query_joins_2mass_and_allwise_and_pages_by_random_index():
    adql = QUERY.adql(1)
    for table in ("gaiadr3.gaia_source", "gaiadr3.tmass_psc_xsc_best_neighbour", "gaiadr3.tmass_psc_xsc_join",
                  "gaiadr1.tmass_original_valid", "gaiadr3.allwise_best_neighbour", "gaiadr1.allwise_original_valid"):
        assert table in adql
    assert "g.random_index BETWEEN 500000000 AND 999999999" in adql and adql.endswith("ORDER BY g.source_id")
    assert "AND (g.parallax_over_error > 10)" in adql
    assert QUERY.adql(3).count("BETWEEN 1500000000 AND 1811709770") == 1     # the last page ends with the catalogue
    assert GaiaQuery(selection="g.phot_g_mean_mag < 12").fingerprint != GaiaQuery().fingerprint


def test_transient_errors_are_retried_with_backoff(offline, monkeypatch, tmp_path):
    flaky = RecordedArchive(requests.HTTPError("Error 503: Service Unavailable"), ConnectionResetError("reset"))
    monkeypatch.setattr(offline, "launch_job_async", flaky.launch_job_async)
    sleeps: list[float] = []
    ingested = _read(tmp_path / "cache", 2, sleeps)
    assert ingested.data.num_rows == 2 and flaky.pages() == [0, 0, 0]
    backoff = [seconds for seconds in sleeps if seconds >= 2.0]
    assert backoff == [2.0, 4.0]
    assert all(seconds <= SETTINGS.min_interval_s for seconds in sleeps if seconds not in backoff)


def test_requests_are_rate_limited(archive, tmp_path):
    sleeps: list[float] = []
    _read(tmp_path / "cache", 7, sleeps)
    assert len(archive.queries) == 4 and len(sleeps) == 3          # a wait before every request but the first
    assert all(0 < seconds <= SETTINGS.min_interval_s for seconds in sleeps)


def test_persistent_failure_stops_with_a_clear_message_and_caches_nothing(offline, monkeypatch, tmp_path):
    down = RecordedArchive(*[requests.HTTPError("Error 500: Internal Server Error")] * SETTINGS.attempts)
    monkeypatch.setattr(offline, "launch_job_async", down.launch_job_async)
    with pytest.raises(RetriesExhausted, match=r"Gaia archive query for page 0 .*page-000000\.vot.*: still failing "
                                               r"after 3 attempts; last error: HTTPError: Error 500"):
        _read(tmp_path / "cache", 2)
    assert len(down.queries) == 3
    assert not RawCache(str(tmp_path / "cache")).has(QUERY.page_key(0))


def test_a_bad_query_fails_at_once(offline, monkeypatch, tmp_path):
    rejected = RecordedArchive(requests.HTTPError("Error 400: Incorrect ADQL query: unknown column"))
    monkeypatch.setattr(offline, "launch_job_async", rejected.launch_job_async)
    with pytest.raises(requests.HTTPError, match="Error 400"):
        _read(tmp_path / "cache", 2)
    assert len(rejected.queries) == 1


def test_a_page_at_the_row_limit_is_refused_not_cached(archive, tmp_path):
    narrow = GaiaQuery(page_width=QUERY.page_width, page_row_limit=3)
    with pytest.raises(PageTooDense, match="page 1 returned 3 rows"):
        read_gaia(IngestRequest("photometry", 7, cache=str(tmp_path / "cache")), narrow,
                  settings=GaiaSettings(min_interval_s=0.0), sleep=lambda _: None)
    assert not RawCache(str(tmp_path / "cache")).has(narrow.page_key(1))


def test_live_mode_needs_a_sample_size_and_a_cache(tmp_path):
    with pytest.raises(ValueError, match="--samples > 0"):
        read_gaia(IngestRequest("photometry", 0, cache=str(tmp_path)), QUERY)
    with pytest.raises(ValueError, match="--cache"):
        read_gaia(IngestRequest("photometry", 5), QUERY)


def test_ingest_stage_with_the_registered_source_and_replay_of_its_cache(archive, monkeypatch, tmp_path):
    live = functools.partial(read_gaia, query=QUERY, settings=SETTINGS, sleep=lambda _: None)
    monkeypatch.setitem(sources.SOURCES, "gaia", sources.Source("gaia", live, synthetic=False,
                                                                modalities=("photometry",)))
    ingest("photometry", "gaia", 5, 0, tmp_path / "raw", cache=str(tmp_path / "cache"))
    data = pq.read_table(tmp_path / "raw" / DATA_FILES["photometry"])
    assert data.num_rows == 5 and pq.read_table(tmp_path / "raw" / LABELS_FILE).num_rows == 5
    manifest = read_manifest(tmp_path / "raw")
    assert not manifest.synthetic and manifest.counts == {"objects": 5, "quarantined": 0}

    pages = tmp_path / "cache" / QUERY.cache_prefix                  # the cache is the archive's own VOTables
    replayed = read_photometry_folder(IngestRequest("photometry", 0, location=str(pages)))
    assert replayed.data.column("id").to_pylist() == data.column("id").to_pylist()


def test_the_environment_sets_how_requests_are_paced_and_retried(offline, monkeypatch, tmp_path):
    """`STELLAR_GAIA_<NAME>` as `STELLAR_SDSS_<NAME>` (the settings the pipeline's ingest stage runs with); a bad
    value is named before any request."""
    for name, value in {"ATTEMPTS": "2", "BASE_DELAY_S": "0.5", "MIN_INTERVAL_S": "0"}.items():
        monkeypatch.setenv(f"STELLAR_GAIA_{name}", value)
    down = RecordedArchive(*[requests.HTTPError("Error 500: Internal Server Error")] * 2)
    monkeypatch.setattr(offline, "launch_job_async", down.launch_job_async)
    sleeps: list[float] = []
    with pytest.raises(RetriesExhausted, match="still failing after 2 attempts"):
        read_gaia(IngestRequest("photometry", 2, cache=str(tmp_path / "cache")), QUERY, sleep=sleeps.append)
    assert sleeps == [0.5] and len(down.queries) == 2
    monkeypatch.setenv("STELLAR_GAIA_ATTEMPTS", "0")
    with pytest.raises(ValueError, match=r"^STELLAR_GAIA_ATTEMPTS='0': .*greater than or equal to 1$"):
        read_gaia(IngestRequest("photometry", 2, cache=str(tmp_path / "cache")), QUERY, sleep=sleeps.append)
    assert len(down.queries) == 2
