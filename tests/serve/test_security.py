"""Bearer-token auth (off by default; never on the probes or /metrics) and CORS (off by default)."""

from __future__ import annotations

from api_helpers import SED_STAR, ready_client, settings_for

BODY = {"instances": [SED_STAR]}
ORIGIN = "https://dashboard.example.org"


def test_auth_is_off_and_cors_is_off_by_default(client):
    assert client.post("/v1/sed:predict", json=BODY).status_code == 200
    preflight = client.options("/v1/sed:predict", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    answer = client.post("/v1/sed:predict", json=BODY, headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in answer.headers


def test_token_guards_v1_only_and_cors_allows_configured_origins(api_home):
    settings = settings_for(api_home, token="s3cret-token", cors_origins=[ORIGIN])
    with ready_client(settings) as client:
        missing = client.post("/v1/sed:predict", json=BODY)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert "s3cret" not in missing.text
        wrong = client.post("/v1/sed:predict", json=BODY, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert client.get("/v1/models").status_code == 401
        good = {"Authorization": "Bearer s3cret-token"}
        assert client.post("/v1/sed:predict", json=BODY, headers=good).status_code == 200
        lower_case = {"Authorization": "bearer s3cret-token"}
        assert client.post("/v1/sed:predict", json=BODY, headers=lower_case).status_code == 200
        assert client.get("/v1/models", headers=good).status_code == 200
        for path in ("/healthz", "/readyz", "/metrics"):
            assert client.get(path).status_code == 200, path
        preflight = client.options("/v1/sed:predict",
                                   headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                                            "Access-Control-Request-Headers": "authorization,content-type"})
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == ORIGIN
        other = client.options("/v1/sed:predict", headers={"Origin": "https://evil.example",
                                                           "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in other.headers
