"""What every live archive connector needs besides its query: a persistent raw cache, retries with exponential
backoff on transient errors, and a minimum interval between requests, with the settings of the last two
(`ArchiveSettings`, from `STELLAR_<ARCHIVE>_<NAME>` environment variables).

The cache is an object store (a directory or an `s3://bucket/prefix`, through `steps.core.storage`) holding
whatever unit the connector fetches (one object per query page, per object id, per file) under a key the
connector chooses. It outlives runs, so a weekly run fetches only the keys that no earlier run stored, and two
runs never hold two copies of one key. Writes are atomic on both back-ends, so a run killed mid-write leaves
either the whole object or none.
"""

from __future__ import annotations

import http
import http.client
import re
import socket
import time
import urllib.error
from collections.abc import Callable
from typing import TypeVar

import requests
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from steps.core.logs import get_logger
from steps.core.storage import open_store

log = get_logger("ingest.raw_cache")

T = TypeVar("T")
S = TypeVar("S", bound="ArchiveSettings")

# HTTP statuses a later attempt may not meet: the server is overloaded, restarting or behind a failing gateway.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
_STATUS_BY_PHRASE = {status.phrase.lower(): status.value for status in http.HTTPStatus}


class RawCache:
    """Bytes by key under a store URI (a directory or `s3://bucket/prefix`), kept across runs."""

    def __init__(self, uri: str):
        self.store = open_store(uri)
        self.uri = self.store.uri

    def has(self, key: str) -> bool:
        """True when an earlier run stored `key`."""
        return self.store.exists(key)

    def get(self, key: str) -> bytes | None:
        """The bytes stored under `key`, or None when nothing is."""
        blob = self.store.get(key)
        return None if blob is None else blob.data

    def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key` (atomically: readers see the old object, the new one, or none)."""
        self.store.put(key, data)

    def keys(self, prefix: str = "") -> list[str]:
        """Every stored key under `prefix`, sorted."""
        return self.store.list(prefix)


class RetriesExhausted(RuntimeError):
    """A call kept failing with transient errors until its attempts ran out; the last error is its cause."""


def http_status(error: BaseException) -> int | None:
    """The HTTP status an exception reports, where it reports one.

    requests and urllib carry it on the exception; astroquery's TAP client raises a bare
    `requests.HTTPError` whose message is `Error <status>: ...` or only the response's reason phrase.
    """
    response = getattr(error, "response", None)
    if getattr(response, "status_code", None) is not None:
        return int(response.status_code)
    if isinstance(error, urllib.error.HTTPError):
        return int(error.code)
    if isinstance(error, requests.HTTPError):
        message = str(error).strip()
        match = re.match(r"Error (\d{3})\b", message)
        if match:
            return int(match.group(1))
        return _STATUS_BY_PHRASE.get(message.lower())
    return None


def _chain(error: BaseException) -> list[BaseException]:
    """The error, what caused it or was being handled (`__cause__`, and `__context__` unless `from None` hid it),
    and the exceptions it carries as arguments, as its `reason` (urllib and urllib3) or as its `cause` (pyvo)."""
    found, pending = [], [error]
    while pending:
        current = pending.pop()
        if current is None or any(current is seen for seen in found):
            continue
        found.append(current)
        carried = [*current.args, getattr(current, "reason", None), getattr(current, "cause", None)]
        pending += [item for item in carried if isinstance(item, BaseException)]
        pending += [current.__cause__] if current.__suppress_context__ else [current.__context__, current.__cause__]
    return found


def name_not_resolved(error: BaseException) -> bool:
    """True when `error` is, or was caused by, a failed lookup of a host name."""
    return _unresolved(_chain(error))


def _unresolved(chain: list[BaseException]) -> bool:
    return any(isinstance(e, socket.gaierror) or type(e).__name__ == "NameResolutionError" for e in chain)


def unreachable(error: BaseException) -> str | None:
    """Why the archive could not be reached, in a few words naming its host where the error does, when `error` is
    (or was caused by) a failed name lookup, a refused connection or a timeout; None for any other error."""
    chain = _chain(error)
    hosts = [match.group(1) for e in chain for match in [re.search(r"(?:host='|resolve ')([^']+)'", str(e))] if match]
    at = f" {hosts[0]}" if hosts else ""
    if _unresolved(chain):
        return f"cannot resolve the archive's address{at} (no network, or no DNS, here)"
    if any(isinstance(e, (TimeoutError, requests.Timeout)) for e in chain):
        return f"the archive{at} did not answer in time"
    if any(isinstance(e, (ConnectionError, requests.ConnectionError)) for e in chain):
        return f"cannot connect to the archive{at}"
    return None


def is_transient(error: BaseException) -> bool:
    """True for errors worth another attempt: HTTP 429 and 5xx, refused or dropped connections, timeouts. A name
    that does not resolve is not retried here: the workflow's own retries, minutes apart, cover a DNS outage."""
    if name_not_resolved(error):
        return False
    status = http_status(error)
    if status is not None:
        return status in RETRYABLE_STATUSES
    return isinstance(error, (ConnectionError, TimeoutError, http.client.IncompleteRead,
                              requests.ConnectionError, requests.Timeout))


def retrying(fn: Callable[[], T], attempts: int = 5, base_delay: float = 1.0, *, max_delay: float = 60.0,
             sleep: Callable[[float], None] = time.sleep,
             transient: Callable[[BaseException], bool] = is_transient, what: str = "request") -> T:
    """`fn()`, called again after a transient error, waiting `base_delay`, then twice as long each time (at most
    `max_delay`), up to `attempts` calls in all.

    Errors that are not transient (a malformed query, a missing table) propagate at once: retrying cannot fix
    them. When every attempt failed, `RetriesExhausted` names `what`, the attempts and the last error.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    attempt = 1
    while True:
        try:
            return fn()
        except Exception as error:
            if not transient(error):
                raise
            if attempt == attempts:
                raise RetriesExhausted(f"{what}: still failing after {attempts} attempts; last error: "
                                       f"{type(error).__name__}: {error}") from error
            delay = min(max_delay, base_delay * 2 ** (attempt - 1))
            log.warning("%s: attempt %d of %d failed (%s: %s); retrying in %.1f s", what, attempt, attempts,
                        type(error).__name__, error, delay)
            sleep(delay)
            attempt += 1


class ArchiveSettings(BaseSettings):
    """How a live connector paces and retries its requests; a subclass per archive sets the environment prefix
    (`STELLAR_SDSS_`, `STELLAR_GAIA_`, `STELLAR_KEPLER_`), and each field is also `<prefix><NAME>`."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid")

    min_interval_s: float = Field(1.0, ge=0)   # between two requests
    attempts: int = Field(5, ge=1)             # per request, the first included
    base_delay_s: float = Field(2.0, ge=0)     # before the first retry; doubled before each further one
    max_delay_s: float = Field(60.0, ge=0)

    @classmethod
    def from_environment(cls: type[S]) -> S:
        """Defaults, overridden by the archive's environment variables; a bad one is named (a ValueError)."""
        try:
            return cls()
        except ValidationError as error:
            prefix = cls.model_config.get("env_prefix", "")
            raise ValueError("; ".join(f"{prefix}{problem['loc'][0]}".upper() + f"={problem['input']!r}: "
                                       f"{problem['msg']}" for problem in error.errors())) from None

    def limiter(self, *, clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> "RateLimiter":
        """A rate limiter spacing requests `min_interval_s` apart."""
        return RateLimiter(self.min_interval_s, clock=clock, sleep=sleep)

    def retry(self, fn: Callable[[], T], what: str, *, sleep: Callable[[float], None] = time.sleep,
              transient: Callable[[BaseException], bool] = is_transient) -> T:
        """`fn()` retried on transient errors with these settings' backoff (`retrying`)."""
        return retrying(fn, self.attempts, self.base_delay_s, max_delay=self.max_delay_s, sleep=sleep,
                        transient=transient, what=what)


class RateLimiter:
    """Spaces calls at least `min_interval` seconds apart: call `wait()` before each request to an archive."""

    def __init__(self, min_interval: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if min_interval < 0:
            raise ValueError(f"min_interval must be >= 0, got {min_interval}")
        self.min_interval = min_interval
        self._clock, self._sleep = clock, sleep
        self._last: float | None = None

    def wait(self) -> None:
        """Sleep until `min_interval` has passed since the previous call returned, then return."""
        if self._last is not None:
            remaining = self._last + self.min_interval - self._clock()
            if remaining > 0:
                self._sleep(remaining)
        self._last = self._clock()
