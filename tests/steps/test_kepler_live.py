"""The live Kepler connector with no network: lightkurve's MAST search answers from a recorded result table
(`fixtures/kepler/mast_search_kepler.ecsv`), its download writes archive-layout FITS made at test time, and the KOI
catalogue is an excerpt of the real table. Incremental fetching, retries, rate limiting and replay of the cache."""

from __future__ import annotations

from pathlib import Path

import lightkurve
import numpy as np
import pyarrow as pa
import pytest
import requests
from astropy.table import Table

from fixtures.kepler.archive_files import kepler_llc
from steps.ingest import kepler_live
from steps.ingest.kepler_live import CATALOGUE_KEY, KeplerQuery, KeplerSettings, read_kepler, target_key
from steps.ingest.lightcurve_files import read_folder
from steps.ingest.raw_cache import RawCache, RetriesExhausted
from steps.ingest.sources import IngestRequest

FIXTURES = Path(__file__).parent / "fixtures" / "kepler"
RECORDED_SEARCH = Table.read(FIXTURES / "mast_search_kepler.ecsv")
KOI_EXCERPT = FIXTURES / "koi_cumulative_excerpt.csv"
# Targets of the excerpt: stars whose first KOI is confirmed or a false positive (10811496 is only a candidate).
TARGETS = ["kplr000757450", "kplr000892772", "kplr001026032", "kplr001433980", "kplr001718189", "kplr010797460",
           "kplr011904151"]


class RecordedMast:
    """Stands in for MAST behind lightkurve: searches answer from the recorded table, downloads write a file.

    `failures` maps a target to the errors its next downloads raise, in turn (transient outages)."""

    def __init__(self, failures: dict[str, list[Exception]] | None = None):
        self.searches: list[str] = []
        self.downloads: list[str] = []
        self.failures = failures or {}

    def search_lightcurve(self, target, mission=None, author=None, cadence=None, quarter=None, **_):
        kic = int(str(target).split()[-1])
        self.searches.append(f"kplr{kic:09d}")
        assert mission == "Kepler" and author == "Kepler" and cadence == "long"
        rows = RECORDED_SEARCH[RECORDED_SEARCH["target_name"] == f"kplr{kic:09d}"]
        return lightkurve.SearchResult(rows.copy())

    def download(self, result, quality_bitmask="default", download_dir=None, **_):
        name = str(result.table["target_name"][0])
        if self.failures.get(name):
            raise self.failures[name].pop(0)
        self.downloads.append(name)
        path = (Path(download_dir) / "mastDownload" / "Kepler" / name / str(result.table["productFilename"][0]))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(kepler_llc(int(name.removeprefix("kplr")), seed=int(name[-3:])))
        return lightkurve.read(str(path), quality_bitmask=quality_bitmask)


@pytest.fixture
def mast(monkeypatch):
    recorded = RecordedMast()
    monkeypatch.setattr(lightkurve, "search_lightcurve", recorded.search_lightcurve)
    monkeypatch.setattr(lightkurve.SearchResult, "download",
                        lambda self, **kwargs: recorded.download(self, **kwargs))
    return recorded


def assert_same_table(first: pa.Table, second: pa.Table) -> None:
    """Equal tables, NaN equal to NaN (Table.equals says NaN differs from itself)."""
    assert first.schema.equals(second.schema) and first.num_rows == second.num_rows
    for name in first.column_names:
        a, b = first.column(name).combine_chunks(), second.column(name).combine_chunks()
        if pa.types.is_list(a.type):
            np.testing.assert_array_equal(a.offsets.to_numpy(), b.offsets.to_numpy())
            a, b = a.values, b.values
        np.testing.assert_array_equal(a.to_numpy(zero_copy_only=False), b.to_numpy(zero_copy_only=False))


def run(cache: Path, samples: int = 0, sleeps: list[float] | None = None, **settings) -> object:
    sleeps = sleeps if sleeps is not None else []
    return read_kepler(IngestRequest("lightcurves", samples, cache=str(cache)), KeplerQuery(catalogue=str(KOI_EXCERPT)),
                       settings=KeplerSettings(min_interval_s=0.0, **settings), sleep=sleeps.append)


def test_targets_come_from_the_catalogue_with_labels_and_periods(tmp_path, mast):
    ingested = run(tmp_path / "cache")
    labels = ingested.labels.to_pandas().set_index("id")
    assert labels.index.tolist() == [t for t in TARGETS if t != "kplr010797460"]
    assert labels.at["kplr000757450", "class"] == "transit" and labels.at["kplr001026032", "class"] == "false_positive"
    assert labels.at["kplr001718189", "period"] == pytest.approx(21.85362905)        # its first KOI, .01
    assert ingested.quarantine.rows == [{"id": "kplr010797460", "source": "mast",
                                         "reason": "MAST lists no Kepler light curve for this target"}]
    data = ingested.data.to_pandas()
    assert set(np.concatenate(data["band"].to_numpy())) == {"Kepler"}
    assert all(np.isclose(np.nanmedian(flux), 1.0, atol=0.01) for flux in data["flux"])
    assert sorted(mast.downloads) == labels.index.tolist()


def test_a_second_run_downloads_nothing_and_reads_the_same(tmp_path, mast):
    first = run(tmp_path / "cache")
    downloads = len(mast.downloads)
    cache = RawCache(str(tmp_path / "cache"))
    assert cache.keys("kepler/") == sorted([CATALOGUE_KEY] + [target_key(t) for t in TARGETS if t != "kplr010797460"])
    second = run(tmp_path / "cache")
    assert len(mast.downloads) == downloads                       # nothing fetched again
    assert_same_table(second.data, first.data)
    assert_same_table(second.labels, first.labels)
    assert mast.searches.count("kplr010797460") == 2              # what MAST lacked is asked again, not cached


def test_a_larger_sample_fetches_only_the_new_targets(tmp_path, mast):
    run(tmp_path / "cache", samples=2)
    assert mast.downloads == TARGETS[:2]
    run(tmp_path / "cache", samples=4)
    assert mast.downloads == TARGETS[:4]


def test_transient_errors_are_retried_with_exponential_backoff(tmp_path, mast):
    outage = requests.HTTPError("503 Server Error", response=type("Response", (), {"status_code": 503})())
    mast.failures = {"kplr000892772": [requests.ConnectionError("connection reset"), outage]}
    sleeps: list[float] = []
    ingested = run(tmp_path / "cache", samples=3, sleeps=sleeps, base_delay_s=2.0)
    assert ingested.data.num_rows == 3
    assert sleeps == [2.0, 4.0]                                   # two failures, waits doubling


def test_a_target_that_keeps_failing_stops_the_run_naming_it_and_keeps_what_was_fetched(tmp_path, mast):
    mast.failures = {"kplr000892772": [requests.ConnectionError("connection reset")] * 3}
    with pytest.raises(RetriesExhausted, match="kplr000892772"):
        run(tmp_path / "cache", attempts=3)
    assert RawCache(str(tmp_path / "cache")).has(target_key("kplr000757450"))


def test_an_error_retrying_cannot_fix_propagates_at_once(tmp_path, mast):
    mast.failures = {"kplr000757450": [ValueError("malformed query")]}
    sleeps: list[float] = []
    with pytest.raises(ValueError, match="malformed query"):
        run(tmp_path / "cache", sleeps=sleeps)
    assert sleeps == []


def test_requests_are_spaced_by_the_rate_limit(tmp_path, mast):
    clock = iter(np.arange(0.0, 100.0, 0.25))
    sleeps: list[float] = []
    read_kepler(IngestRequest("lightcurves", 3, cache=str(tmp_path / "cache")),
                KeplerQuery(catalogue=str(KOI_EXCERPT)), settings=KeplerSettings(min_interval_s=1.0),
                sleep=sleeps.append,
                clock=lambda: float(next(clock)))
    assert len(sleeps) >= 2 and all(0 < wait <= 1.0 for wait in sleeps)


def test_a_corrupt_download_is_quarantined_and_not_cached(tmp_path, mast, monkeypatch):
    truncated = kepler_llc(757450)[:30000]
    monkeypatch.setattr(kepler_live, "download_lightcurve",
                        lambda kic, query, scratch: truncated if kic == 757450 else kepler_llc(kic))
    ingested = run(tmp_path / "cache", samples=2)
    assert [row["id"] for row in ingested.quarantine.rows] == ["kplr000757450"]
    assert ingested.quarantine.rows[0]["reason"].startswith("unreadable FITS")
    assert not RawCache(str(tmp_path / "cache")).has(target_key("kplr000757450"))


def test_the_default_catalogue_is_queried_once_from_the_exoplanet_archive(tmp_path, mast, monkeypatch):
    from astroquery.ipac.nexsci.nasa_exoplanet_archive import NasaExoplanetArchive

    queries = []

    def query_criteria(table, select):
        queries.append((table, select))
        return Table.read(KOI_EXCERPT, format="ascii.csv", comment="#")

    monkeypatch.setattr(NasaExoplanetArchive, "query_criteria", query_criteria)
    for _ in range(2):
        read_kepler(IngestRequest("lightcurves", 2, cache=str(tmp_path / "cache")), KeplerQuery(),
                    settings=KeplerSettings(min_interval_s=0.0), sleep=lambda seconds: None)
    assert queries == [("cumulative", kepler_live.KOI_COLUMNS)]


def test_the_raw_cache_replays_through_the_folder_reader(tmp_path, mast):
    live = run(tmp_path / "cache")
    replayed = read_folder(tmp_path / "cache")
    assert_same_table(replayed.data, live.data)
    assert_same_table(replayed.labels, live.labels)


def test_a_run_without_a_cache_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--cache"):
        read_kepler(IngestRequest("lightcurves", 2), KeplerQuery(catalogue=str(KOI_EXCERPT)))


def test_the_environment_sets_how_requests_are_paced_and_retried(tmp_path, mast, monkeypatch):
    """`STELLAR_KEPLER_<NAME>` as `STELLAR_SDSS_<NAME>` (the settings the pipeline's ingest stage runs with)."""
    for name, value in {"ATTEMPTS": "2", "BASE_DELAY_S": "0.5", "MIN_INTERVAL_S": "0"}.items():
        monkeypatch.setenv(f"STELLAR_KEPLER_{name}", value)
    mast.failures = {"kplr000892772": [requests.ConnectionError("connection reset")] * 2}
    sleeps: list[float] = []
    with pytest.raises(RetriesExhausted, match="kplr000892772: still failing after 2 attempts"):
        read_kepler(IngestRequest("lightcurves", 3, cache=str(tmp_path / "cache")),
                    KeplerQuery(catalogue=str(KOI_EXCERPT)), sleep=sleeps.append)
    assert sleeps == [0.5]
    monkeypatch.setenv("STELLAR_KEPLER_BASE_DELAY_S", "soon")
    with pytest.raises(ValueError, match=r"^STELLAR_KEPLER_BASE_DELAY_S='soon': "):
        read_kepler(IngestRequest("lightcurves", 3, cache=str(tmp_path / "cache")),
                    KeplerQuery(catalogue=str(KOI_EXCERPT)), sleep=sleeps.append)
