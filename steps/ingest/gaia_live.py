"""Live Gaia DR3 photometry, cross-matched to 2MASS and AllWISE in the Gaia archive, fetched incrementally.

One ADQL query shape (`GaiaQuery.adql`) joins `gaiadr3.gaia_source` to the archive's best-neighbour tables and the
survey catalogues they point to: `tmass_psc_xsc_best_neighbour` -> `tmass_psc_xsc_join` ->
`gaiadr1.tmass_original_valid` (J, H, Ks with `ph_qual`; the archive's 2MASS copy has no `cc_flg`) and
`allwise_best_neighbour` -> `gaiadr1.allwise_original_valid` (W1, W2 with `ph_qual` and `cc_flags`). Labels are
GSP-Phot's Teff, log g and [M/H] (the `astrophysical_parameters` values that `gaia_source` repeats), null where
GSP-Phot gave none.

Incremental by pages: `random_index` is a random permutation of the catalogue's rows, so page k, the rows with
random_index in [k * page_width, (k + 1) * page_width) that pass the selection, is a random sample of the sky, and
the pages in order are one fixed, ever-growing sample. Each page is fetched whole (ordered by source_id) and stored
in the raw cache under a key that names the query's fingerprint (its ADQL, selection and page width) and the page
number; a page the cache holds is never fetched again, and a changed selection starts a new set of pages. A run
asking for N stars reads pages from the first until it has N, so next week's run with the same N fetches nothing,
and a larger N fetches only the pages past those already stored. Pages are stored as the archive's VOTable (BINARY2
serialisation), so the cache folder is itself replayable by the photometry folder reader.

Every request waits for the rate limiter and is retried with exponential backoff on transient errors (HTTP 5xx,
429, dropped connections, timeouts); a page that keeps failing stops the run with a message naming the page.
`astroquery.gaia` is imported only when a page must be fetched: importing it contacts the archive.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
from astropy.table import Table
from pydantic_settings import SettingsConfigDict

from steps.core.logs import get_logger
from steps.core.quarantine import Quarantine
from steps.ingest.photometry_files import photometry_from_table
from steps.ingest.raw_cache import ArchiveSettings, RawCache
from steps.ingest.schemas import PHOTOMETRY_SCHEMA, STELLAR_LABELS_SCHEMA

if TYPE_CHECKING:
    from steps.ingest.sources import IngestRequest, Ingested

log = get_logger("ingest.gaia")

# Rows of gaiadr3.gaia_source; random_index runs from 0 to this minus one.
GAIA_DR3_SOURCES = 1_811_709_771

ADQL_TEMPLATE = """SELECT TOP {row_limit}
  g.source_id, g.random_index,
  g.phot_g_mean_mag, g.phot_g_mean_flux_over_error,
  g.phot_bp_mean_mag, g.phot_bp_mean_flux_over_error,
  g.phot_rp_mean_mag, g.phot_rp_mean_flux_over_error,
  g.parallax, g.parallax_error,
  tm.j_m, tm.j_msigcom, tm.h_m, tm.h_msigcom, tm.ks_m, tm.ks_msigcom, tm.ph_qual AS ph_qual_tmass,
  aw.w1mpro, aw.w1mpro_error, aw.w2mpro, aw.w2mpro_error, aw.ph_qual AS ph_qual_allwise,
  aw.cc_flags AS cc_flags_allwise,
  g.teff_gspphot, g.logg_gspphot, g.mh_gspphot
FROM gaiadr3.gaia_source AS g
LEFT OUTER JOIN gaiadr3.tmass_psc_xsc_best_neighbour AS tbn ON tbn.source_id = g.source_id
LEFT OUTER JOIN gaiadr3.tmass_psc_xsc_join AS tj ON tj.clean_tmass_psc_xsc_oid = tbn.clean_tmass_psc_xsc_oid
LEFT OUTER JOIN gaiadr1.tmass_original_valid AS tm ON tm.designation = tj.original_psc_source_id
LEFT OUTER JOIN gaiadr3.allwise_best_neighbour AS abn ON abn.source_id = g.source_id
LEFT OUTER JOIN gaiadr1.allwise_original_valid AS aw ON aw.allwise_oid = abn.allwise_oid
WHERE g.random_index BETWEEN {first_index} AND {last_index}
  AND ({selection})
ORDER BY g.source_id"""


class PageTooDense(ValueError):
    """A page returned as many rows as the query allows, so it may be cut short: it is not cached."""


@dataclass(frozen=True)
class GaiaQuery:
    """The selection of stars and the paging of the live Gaia query.

    `selection` is an ADQL condition on `g` (gaia_source); the default keeps stars whose parallax is measured to
    10%, as an SED model with parallax needs. `page_width` is the random_index range of one page (the default
    gives a few thousand stars a page with the default selection); `page_row_limit` is the TOP of a page query,
    which a page must stay below.
    """

    selection: str = "g.parallax_over_error > 10"
    page_width: int = 200_000
    page_row_limit: int = 100_000

    def adql(self, page: int) -> str:
        """The ADQL of page `page`."""
        first = page * self.page_width
        return ADQL_TEMPLATE.format(row_limit=self.page_row_limit, first_index=first,
                                    last_index=min(first + self.page_width, GAIA_DR3_SOURCES) - 1,
                                    selection=self.selection)

    @property
    def fingerprint(self) -> str:
        """A short hash of what decides a page's rows: the ADQL shape, the selection and the page width."""
        text = json.dumps([ADQL_TEMPLATE, self.selection, self.page_width, self.page_row_limit])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def cache_prefix(self) -> str:
        """Where this query's pages live in the raw cache."""
        return f"gaia/dr3-2mass-allwise/{self.fingerprint}"

    def page_key(self, page: int) -> str:
        """The raw-cache key of page `page`."""
        return f"{self.cache_prefix}/page-{page:06d}.vot"

    @property
    def pages(self) -> int:
        """Pages that cover the whole catalogue."""
        return -(-GAIA_DR3_SOURCES // self.page_width)


DEFAULT_QUERY = GaiaQuery()


class GaiaSettings(ArchiveSettings):
    """How the connector paces and retries its page queries; each field is also `STELLAR_GAIA_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="STELLAR_GAIA_")


def _gaia_archive():
    """astroquery's Gaia archive client, imported only now: the import itself contacts the archive."""
    from astroquery.gaia import Gaia

    return Gaia


def fetch_page(query: GaiaQuery, page: int) -> Table:
    """Page `page` from the archive (an asynchronous job: synchronous ones are capped at a few thousand rows)."""
    table = _gaia_archive().launch_job_async(query.adql(page)).get_results()
    if len(table) >= query.page_row_limit:
        raise PageTooDense(f"Gaia page {page} returned {len(table)} rows, the query's limit: it may be cut short; "
                           f"lower page_width (now {query.page_width}) or raise page_row_limit")
    return table


def table_to_votable(table: Table) -> bytes:
    """A page as VOTable bytes (BINARY2), the archive's own format, for the raw cache.

    VOTable has no null for text, so masked text is written as the empty string (what the archive writes).
    """
    table = table.copy(copy_data=False)
    for name in table.colnames:
        column = table[name]
        if column.dtype.kind in "US" and hasattr(column, "filled"):
            table[name] = column.filled("")
    buffer = io.BytesIO()
    table.write(buffer, format="votable", tabledata_format="binary2")
    return buffer.getvalue()


def votable_to_table(data: bytes) -> Table:
    """A cached page read back."""
    return Table.read(io.BytesIO(data), format="votable")


def read_gaia(request: IngestRequest, query: GaiaQuery = DEFAULT_QUERY, *, settings: GaiaSettings | None = None,
              sleep: Callable[[float], None] = time.sleep) -> Ingested:
    """The first `request.samples` usable stars of `query`'s pages, fetching only pages the raw cache lacks (paced and
    retried as `settings` say: by default, the environment's)."""
    from steps.ingest.sources import Ingested   # here: steps.ingest.sources imports this module to register it

    if request.samples <= 0:
        raise ValueError("the live Gaia source needs --samples > 0: the whole catalogue is 1.8 billion stars")
    if not request.cache:
        raise ValueError("the live Gaia source needs --cache (a directory or s3:// prefix) to fetch incrementally")
    cache = RawCache(request.cache)
    cache_description_key = f"{query.cache_prefix}/query.json"
    if not cache.has(cache_description_key):
        cache.put(cache_description_key, json.dumps(
            {"adql_page_0": query.adql(0), "selection": query.selection, "page_width": query.page_width,
             "page_row_limit": query.page_row_limit}, indent=2).encode())
    settings = settings or GaiaSettings.from_environment()
    limiter = settings.limiter(sleep=sleep)
    quarantine = Quarantine("ingest.photometry")
    data, labels, kept, fetched, cached = [], [], 0, 0, 0
    for page in range(query.pages):
        if kept >= request.samples:
            break
        key = query.page_key(page)
        stored = cache.get(key)
        if stored is None:
            def request_page(page=page) -> Table:
                limiter.wait()
                return fetch_page(query, page)

            stored = table_to_votable(settings.retry(request_page, f"Gaia archive query for page {page} ({key})",
                                                     sleep=sleep))
            cache.put(key, stored)
            fetched += 1
        else:
            cached += 1
        # Mapped from the stored bytes either way, so a run that fetched and one that replayed agree exactly.
        rows = photometry_from_table(votable_to_table(stored), f"gaia-archive:{key}", quarantine)
        data.append(rows.data)
        labels.append(rows.labels)
        kept += rows.data.num_rows
    log.info("gaia: %d page(s) fetched, %d from the raw cache at %s; %d stars, %d quarantined", fetched, cached,
             cache.uri, min(kept, request.samples), len(quarantine))
    data_table = pa.concat_tables(data).slice(0, request.samples) if data else PHOTOMETRY_SCHEMA.empty_table()
    label_table = pa.concat_tables(labels).slice(0, request.samples) if labels else STELLAR_LABELS_SCHEMA.empty_table()
    return Ingested(data_table.combine_chunks(), label_table.combine_chunks(), quarantine)
