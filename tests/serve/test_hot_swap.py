"""Hot model swap: `production` moves while clients keep sending; no request fails and the new version answers."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest

from api_helpers import SED_STAR, live_server, settings_for
from steps.core.artifacts import ArtifactWriter
from steps.core.registry import PRODUCTION, ModelRegistry

SED_OBJECT = SED_STAR


@pytest.fixture
def sed_baseline(tmp_path_factory, stellar):
    """A second SED model: the NumPy baseline (another kind, another version number once registered)."""
    out = tmp_path_factory.mktemp("baseline")
    result = stellar("train-sed", "--force-dummy", "--samples", "300", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    return out / "sed" / "model"


class Load:
    """Clients posting SED requests in a loop on threads; counts answers by (status, version)."""

    def __init__(self, url: str, clients: int = 8):
        self.url, self.answers, self.failures = url, Counter(), []
        self.last_version: dict[int, str] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(i,)) for i in range(clients)]

    def _client(self, index: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.post("/v1/sed:predict", json={"instances": [SED_OBJECT, SED_OBJECT]})
                    version = response.json().get("version") if response.status_code == 200 else None
                    self.answers[(response.status_code, version)] += 1
                    self.last_version[index] = version
                    if response.status_code != 200:
                        self.failures.append(response.text[:200])
                except httpx.HTTPError as error:
                    self.failures.append(repr(error))

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def wait_for_version(self, version: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not (self.last_version and all(v == version for v in self.last_version.values())):
            assert time.monotonic() < deadline, self.answers
            time.sleep(0.05)


def test_swap_and_rollback_under_load_fail_no_request(registry_copy, sed_baseline):
    registry = ModelRegistry.open(str(registry_copy / "registry"))
    with live_server(settings_for(registry_copy, reload_interval_s=0.2)) as url, Load(url) as load:
        time.sleep(1.0)
        new = registry.register("sed", sed_baseline)
        registry.set_alias("sed", PRODUCTION, new.version)
        load.wait_for_version(new.version)
        served = {m["name"]: m for m in httpx.get(f"{url}/v1/models").json()["models"]}
        assert served["sed"]["version"] == new.version and served["sed"]["kind"] == "ridge"
        time.sleep(0.5)
        assert registry.rollback("sed") == "1"
        load.wait_for_version("1")
        time.sleep(0.5)
        metrics = httpx.get(f"{url}/metrics").text
    assert load.failures == []
    assert load.answers[(200, "1")] > 0 and load.answers[(200, new.version)] > 0
    assert set(load.answers) == {(200, "1"), (200, new.version)}
    assert 'stellar_api_model_swaps_total{model="sed"} 2.0' in metrics


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(registry_copy, tmp_path):
    broken = tmp_path / "broken"
    with ArtifactWriter(broken, "train") as artifact:
        artifact.path("model.json").write_text('{"format_version": 1, "kind": "no-such-kind", "name": "sed"}')
        artifact.path("spec.json").write_text("{}")
    registry = ModelRegistry.open(str(registry_copy / "registry"))
    with live_server(settings_for(registry_copy, reload_interval_s=0.2)) as url:
        bad = registry.register("sed", broken)
        registry.set_alias("sed", PRODUCTION, bad.version)
        deadline = time.monotonic() + 30
        while "sed" not in (ready := httpx.get(f"{url}/readyz")).json().get("errors", {}):
            assert time.monotonic() < deadline, ready.json()
            time.sleep(0.1)
        assert ready.status_code == 200 and "failed to load" in ready.json()["errors"]["sed"]
        answer = httpx.post(f"{url}/v1/sed:predict", json={"instances": [SED_OBJECT]})
        assert answer.status_code == 200 and answer.json()["version"] == "1"


def test_a_first_promotion_rolled_back_withdraws_the_model(registry_copy):
    """Rolled back to no production version, a model is no longer served (before, the API kept serving the version
    withdrawn until it restarted); the other models are untouched."""
    registry = ModelRegistry.open(str(registry_copy / "registry"))
    with live_server(settings_for(registry_copy, reload_interval_s=0.2)) as url:
        assert httpx.post(f"{url}/v1/sed:predict", json={"instances": [SED_OBJECT]}).status_code == 200
        while registry.rollback("sed") is not None:
            pass
        deadline = time.monotonic() + 30
        while (answer := httpx.post(f"{url}/v1/sed:predict", json={"instances": [SED_OBJECT]})).status_code == 200:
            assert time.monotonic() < deadline, "still serving sed"
            time.sleep(0.1)
        ready = httpx.get(f"{url}/readyz")
        metrics = httpx.get(f"{url}/metrics").text
        served = [m["name"] for m in httpx.get(f"{url}/v1/models").json()["models"]]
    assert answer.status_code == 503 and "has no alias 'production'" in answer.text
    # still ready: a model without a production version must not take the other two out of a Service
    assert ready.status_code == 200 and ready.json()["unpromoted"] == ["sed"]
    assert "has no alias 'production'" in ready.json()["errors"]["sed"]
    assert 'stellar_api_model_info{kind="ridge",model="sed"' not in metrics
    assert "stellar_api_ready 1.0" in metrics  # as /readyz says: the other two are served
    assert "sed" not in served and {"spectral", "lightcurve"} <= set(served)


def test_a_server_started_with_a_model_rolled_back_to_none_is_ready_with_the_others(registry_copy):
    """The readiness gauge is read at each scrape: set at swaps only, it said 0 while /readyz said ready, as sed
    was found unpromoted after the other two had loaded."""
    registry = ModelRegistry.open(str(registry_copy / "registry"))
    while registry.rollback("sed") is not None:
        pass
    with live_server(settings_for(registry_copy, reload_interval_s=0.2)) as url:
        ready = httpx.get(f"{url}/readyz")
        metrics = httpx.get(f"{url}/metrics").text
    assert ready.status_code == 200 and ready.json()["unpromoted"] == ["sed"]
    assert "stellar_api_ready 1.0" in metrics


def test_a_registry_of_one_model_is_ready_with_it(registry_copy):
    """A registry that never held the spectral and light-curve models (made by hand, or with `models register`):
    /readyz said 503 for ever, missing those two, while the SED model answered."""
    import shutil

    for name in ("spectral", "lightcurve"):
        shutil.rmtree(registry_copy / "registry" / name)
    with live_server(settings_for(registry_copy, reload_interval_s=0.2)) as url:
        ready = httpx.get(f"{url}/readyz")
        answer = httpx.post(f"{url}/v1/sed:predict", json={"instances": [SED_OBJECT]})
    assert ready.status_code == 200 and sorted(ready.json()["unpromoted"]) == ["lightcurve", "spectral"], ready.text
    assert answer.status_code == 200


def test_a_registry_that_cannot_be_read_for_a_while_does_not_withdraw_a_model(registry_copy):
    """Only an alias record that says "no production version" withdraws a model; a registry folder gone for a while
    (unmounted, being moved) leaves every model serving."""
    registry = registry_copy / "registry"
    with live_server(settings_for(registry_copy, reload_interval_s=0.2)) as url:
        assert httpx.post(f"{url}/v1/sed:predict", json={"instances": [SED_OBJECT]}).status_code == 200
        registry.rename(registry_copy / "elsewhere")
        try:
            time.sleep(1.5)  # several refreshes
            answer = httpx.post(f"{url}/v1/sed:predict", json={"instances": [SED_OBJECT]})
            during = httpx.get(f"{url}/readyz")
        finally:
            (registry_copy / "elsewhere").rename(registry)
        time.sleep(1.0)
        after = httpx.get(f"{url}/readyz").json()
    assert answer.status_code == 200
    # ready (it serves), and says that promotions and rollbacks cannot reach it meanwhile; then no longer
    assert during.status_code == 200 and f"{registry} cannot be read since " in during.json()["registry"]
    assert "promotions and rollbacks are not seen" in during.json()["registry"] and "registry" not in after


def test_an_alias_record_that_does_not_parse_keeps_the_other_models_looked_at(tmp_path):
    """A cut-short aliases.json raised out of `refresh`: the models after it were never loaded, at any tick."""
    from steps.serve.models import MODEL_NAMES, ServedModels

    registry = ModelRegistry.open(str(tmp_path / "registry"))
    registry.store.put("spectral/aliases.json", b'{"aliases": {"production": "1"')
    served = ServedModels(registry, tmp_path / "serving", 10, 10)
    assert served.refresh() == []
    assert "spectral/aliases.json: not a readable AliasState record" in served.errors["spectral"]
    assert set(served.errors) == set(MODEL_NAMES)  # each of the others looked at (none has a version here)
