"""The raw-archive cache, retries with exponential backoff, and the rate limiter that live connectors share."""

from __future__ import annotations

import socket
import urllib.error

import pytest
import requests

from steps.ingest.raw_cache import (RateLimiter, RawCache, RetriesExhausted, http_status, is_transient, retrying,
                                    unreachable)


@pytest.fixture(params=["directory", "s3"])
def cache_uri(request, tmp_path) -> str:
    """A raw cache on a directory, and one on an S3 prefix (the loopback S3 server)."""
    if request.param == "directory":
        return str(tmp_path / "raw-cache")
    bucket = request.getfixturevalue("s3_bucket")
    server = request.getfixturevalue("s3_server")
    request.getfixturevalue("monkeypatch").setenv("AWS_ENDPOINT_URL", server)
    return f"s3://{bucket}/raw-cache"


def test_cache_keeps_bytes_by_key_across_instances(cache_uri):
    first = RawCache(cache_uri)
    assert not first.has("gaia/page-000000.vot") and first.get("gaia/page-000000.vot") is None
    first.put("gaia/page-000000.vot", b"page zero")
    first.put("gaia/page-000001.vot", b"page one")
    first.put("sdss/spec-0266-51602-0001.fits", b"spectrum")
    later_run = RawCache(cache_uri)
    assert later_run.has("gaia/page-000000.vot") and later_run.get("gaia/page-000001.vot") == b"page one"
    assert later_run.keys("gaia/") == ["gaia/page-000000.vot", "gaia/page-000001.vot"]
    later_run.put("gaia/page-000000.vot", b"replaced")
    assert RawCache(cache_uri).get("gaia/page-000000.vot") == b"replaced"


class Flaky:
    """A call that fails with the given errors, in order, then returns "done"."""

    def __init__(self, *errors: Exception):
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def test_transient_errors_are_retried_with_exponential_backoff():
    sleeps: list[float] = []
    call = Flaky(requests.HTTPError("Error 503: Service Unavailable"), ConnectionResetError("reset by peer"),
                 TimeoutError("read timed out"))
    assert retrying(call, attempts=5, base_delay=0.5, sleep=sleeps.append) == "done"
    assert call.calls == 4 and sleeps == [0.5, 1.0, 2.0]


def test_backoff_is_capped_at_max_delay():
    sleeps: list[float] = []
    call = Flaky(*[requests.ConnectionError("refused")] * 5)
    retrying(call, attempts=6, base_delay=10.0, max_delay=25.0, sleep=sleeps.append)
    assert sleeps == [10.0, 20.0, 25.0, 25.0, 25.0]


def test_errors_retrying_cannot_fix_propagate_at_once():
    sleeps: list[float] = []
    call = Flaky(requests.HTTPError("Error 400: Cannot parse query 'SELEC'"))
    with pytest.raises(requests.HTTPError, match="Error 400"):
        retrying(call, attempts=5, base_delay=1.0, sleep=sleeps.append)
    assert call.calls == 1 and sleeps == []


def test_persistent_failure_names_the_call_the_attempts_and_the_last_error():
    sleeps: list[float] = []
    call = Flaky(*[requests.HTTPError("Error 502: Bad Gateway")] * 3)
    with pytest.raises(RetriesExhausted) as raised:
        retrying(call, attempts=3, base_delay=1.0, sleep=sleeps.append, what="Gaia page 7")
    message = str(raised.value)
    assert message.startswith("Gaia page 7: still failing after 3 attempts")
    assert "HTTPError: Error 502: Bad Gateway" in message
    assert isinstance(raised.value.__cause__, requests.HTTPError) and call.calls == 3 and sleeps == [1.0, 2.0]


def _response(status: int) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    return response


@pytest.mark.parametrize("error, transient", [
    (requests.HTTPError("Error 500: java.lang.NullPointerException"), True),
    (requests.HTTPError("Service Unavailable"), True),
    (requests.HTTPError("Too Many Requests"), True),
    (requests.HTTPError(response=_response(504)), True),
    (urllib.error.HTTPError("https://gea.esac.esa.int/tap-server/tap", 503, "busy", None, None), True),
    (ConnectionRefusedError(), True),
    (requests.ConnectionError("Max retries exceeded"), True),
    (requests.Timeout(), True),
    (TimeoutError(), True),
    (requests.HTTPError("Error 400: Unknown column \"g.phot_x_mean_mag\""), False),
    (requests.HTTPError("Unauthorized"), False),
    (requests.HTTPError(response=_response(404)), False),
    (urllib.error.HTTPError("https://gea.esac.esa.int/tap-server/tap", 404, "no such job", None, None), False),
    (ValueError("bad ADQL"), False),
    (FileNotFoundError("cache"), False),
])
def test_which_errors_are_transient(error, transient):
    assert is_transient(error) is transient


def _unresolved(host: str = "skyserver.sdss.org") -> requests.ConnectionError:
    """What requests raises when a host name does not resolve: the urllib3 errors as its cause and argument."""
    from urllib3.exceptions import MaxRetryError, NameResolutionError

    lookup = NameResolutionError(host, None, socket.gaierror(-2, "Name or service not known"))
    return requests.ConnectionError(MaxRetryError(None, "/dr17/en/tools/search/x_results.aspx?cmd=...", lookup))


def test_an_archive_out_of_reach_is_named_in_a_few_words_and_an_unresolved_name_is_not_retried_here():
    from pyvo.dal.exceptions import DALFormatError

    from steps.ingest.sdss_live import is_transient_download

    assert unreachable(_unresolved()) == ("cannot resolve the archive's address skyserver.sdss.org (no network, "
                                          "or no DNS, here)")
    wrapped = DALFormatError(_unresolved("exoplanetarchive.ipac.caltech.edu"), "https://.../TAP/sync")
    assert "cannot resolve the archive's address exoplanetarchive.ipac.caltech.edu" in unreachable(wrapped)
    assert unreachable(socket.gaierror(-2, "Name or service not known")).startswith("cannot resolve the archive's "
                                                                                    "address (no network")
    for error in (_unresolved(), wrapped, urllib.error.URLError(socket.gaierror(-2, "unknown"))):
        assert not is_transient(error) and not is_transient_download(error)
    assert unreachable(ConnectionRefusedError()) == "cannot connect to the archive"
    assert is_transient(ConnectionRefusedError()) and is_transient_download(urllib.error.URLError("refused"))
    assert unreachable(requests.Timeout()) == "the archive did not answer in time"
    assert unreachable(ValueError("bad ADQL")) is None
    try:  # a bug met while handling a network error, its context hidden with `from None`, is not a network error
        try:
            raise ConnectionRefusedError()
        except ConnectionRefusedError:
            raise RuntimeError("a bug") from None
    except RuntimeError as bug:
        assert unreachable(bug) is None


def test_the_ingest_stage_says_in_one_line_that_the_archive_is_out_of_reach(tmp_path, monkeypatch, caplog):
    """Exit 1 (the workflow retries it later), no traceback; any other error still propagates."""
    from steps.ingest import __main__ as stage

    def out_of_reach(*args, **kwargs):
        raise RetriesExhausted("SDSS stellar SQL query: still failing after 5 attempts") from _unresolved()

    monkeypatch.setattr(stage, "ingest", out_of_reach)
    assert stage.main(["spectra", "--source", "sdss", "--samples", "4", "--out", str(tmp_path / "raw")]) == 1
    [record] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert record.getMessage() == (
        "spectra --source sdss: cannot resolve the archive's address skyserver.sdss.org (no network, or no DNS, "
        "here) after every attempt; to run without the network, give a folder (or s3://) of the archive's files as "
        "the source (stellar run --spectra-from DIR)")

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(stage, "ingest", broken)
    with pytest.raises(RuntimeError):
        stage.main(["spectra", "--source", "sdss", "--samples", "4", "--out", str(tmp_path / "raw")])


def test_http_status_is_read_from_astroquery_messages_and_response_objects():
    assert http_status(requests.HTTPError("Error 503:\nThe service is down")) == 503
    assert http_status(requests.HTTPError("Gateway Timeout")) == 504
    assert http_status(requests.HTTPError(response=_response(429))) == 429
    assert http_status(ConnectionResetError()) is None


def test_rate_limiter_spaces_calls_by_the_minimum_interval():
    now = [100.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(2.0, clock=lambda: now[0], sleep=sleep)
    limiter.wait()                      # the first call goes at once
    now[0] += 0.5
    limiter.wait()                      # 0.5 s later: waits the remaining 1.5 s
    now[0] += 3.0
    limiter.wait()                      # 3 s later: no wait
    assert sleeps == [1.5]
    with pytest.raises(ValueError):
        RateLimiter(-1.0)
