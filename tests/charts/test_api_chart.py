"""charts/stellar-api: a rolling, probed, locked-down Deployment whose pods roll when a model version changes."""

from __future__ import annotations

import pytest

from rendering import API_CHART, API_VALUES, KUBE_VERSIONS, NAMESPACE, by_kind, one, render


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_lints_clean_in_strict_mode(helm, kube_version):
    result = helm.lint(API_CHART, strict=True, namespace=NAMESPACE, kube_version=f"{kube_version}.0")
    assert result["errors"] == []
    assert [m for m in result["messages"] if m["error"] != "icon is recommended"] == []


def container(docs):
    [api] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return api


def test_default_values_render_every_object_the_api_needs(helm):
    docs = render(API_CHART)
    assert sorted(doc["kind"] for doc in docs) == ["Deployment", "HorizontalPodAutoscaler", "NetworkPolicy",
                                                   "PodDisruptionBudget", "Service", "ServiceAccount"]


def test_rolls_without_losing_capacity_and_probes_the_right_routes(helm):
    deployment = one(render(API_CHART), "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate",
                                              "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    api = container([deployment])
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    startup = api["startupProbe"]
    assert startup["httpGet"]["path"] == "/healthz" and startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_writable_paths_are_empty_dirs_under_a_read_only_root(helm):
    """`stellar serve --home H` caches models in H/serving: H and /tmp are emptyDir volumes, the rest read-only."""
    deployment = one(render(API_CHART), "Deployment")
    api = container([deployment])
    assert api["securityContext"]["readOnlyRootFilesystem"] is True
    home = api["args"][api["args"].index("--home") + 1]
    mounts = {m["mountPath"]: m["name"] for m in api["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert set(mounts) == {home, "/tmp"}
    assert all("emptyDir" in volumes[name] for name in mounts.values())
    assert {"name": "HOME", "value": "/tmp"} in api["env"]


def test_s3_settings_come_from_the_secret(helm):
    api = container(render(API_CHART, {"s3": {"secretName": "prod-s3"}}))
    from_secret = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in api["env"] if "valueFrom" in e}
    assert from_secret == {key: {"name": "prod-s3", "key": key} for key in
                           ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION")}


def test_a_new_model_version_rolls_the_pods_and_the_same_does_not(helm):
    def annotations(models):
        return one(render(API_CHART, {"models": models}), "Deployment")["spec"]["template"]["metadata"]["annotations"]

    first = annotations({"spectral": "1", "lightcurve": "1", "sed": "1"})
    again = annotations({"spectral": "1", "lightcurve": "1", "sed": "1"})
    newer = annotations({"spectral": "1", "lightcurve": "1", "sed": "2"})
    assert first["checksum/models"] == again["checksum/models"] != newer["checksum/models"]
    assert '"sed":"2"' in newer["stellar.dev/models"]


def test_autoscaling_owns_the_replica_count(helm):
    assert "replicas" not in one(render(API_CHART), "Deployment")["spec"]
    docs = render(API_CHART, {"autoscaling": {"enabled": False}, "replicaCount": 3})
    assert one(docs, "Deployment")["spec"]["replicas"] == 3 and by_kind(docs, "HorizontalPodAutoscaler") == []


@pytest.mark.parametrize("values, budget", [
    ({}, True),
    ({"autoscaling": {"enabled": False}, "replicaCount": 1}, False),  # one pod: a budget would block every drain
    ({"autoscaling": {"enabled": False}, "replicaCount": 2}, True),
    ({"autoscaling": {"minReplicas": 1}}, False),
])
def test_disruption_budget_only_when_it_cannot_block_a_drain(helm, values, budget):
    assert bool(by_kind(render(API_CHART, values), "PodDisruptionBudget")) is budget


def test_service_monitor_is_off_by_default_and_scrapes_metrics_when_on(helm):
    assert by_kind(render(API_CHART), "ServiceMonitor") == []
    monitor = one(render(API_CHART, API_VALUES["production"]), "ServiceMonitor")
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"


def test_kind_exposes_the_api_on_the_mapped_node_port(helm):
    service = one(render(API_CHART, API_VALUES["kind"]), "Service")
    assert service["spec"]["type"] == "NodePort" and service["spec"]["ports"][0]["nodePort"] == 30080


def test_network_policy_admits_the_api_port_and_lets_out_only_dns_and_s3(helm):
    policy = one(render(API_CHART), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    ports = sorted((p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"])
    assert ports == [(53, "TCP"), (53, "UDP"), (443, "TCP"), (9000, "TCP")]


@pytest.mark.parametrize("values, message", [
    ({"models": {"sed": "latest"}}, "sed"),
    ({"resources": {"limits": {"memory": None}}}, "memory"),
    ({"service": {"type": "NodePort", "nodePort": 8080}}, "nodePort"),
    ({"modles": {}}, "modles"),
])
def test_the_values_schema_refuses_mistakes(helm, values, message):
    with pytest.raises(helm.HelmError, match=message):
        render(API_CHART, values)


def test_api_settings_reach_the_process_and_the_token_comes_from_a_secret(helm):
    api = container(render(API_CHART))
    plain = {e["name"]: e["value"] for e in api["env"] if "value" in e}
    assert plain["STELLAR_API_BATCH_MAX_OBJECTS"] == "64" and plain["STELLAR_API_CORS_ORIGINS"] == "[]"
    assert plain["STELLAR_API_MAX_BODY_BYTES"] == "16777216" and plain["STELLAR_API_GRACEFUL_SHUTDOWN_S"] == "20"
    assert "STELLAR_API_TOKEN" not in {e["name"] for e in api["env"]}
    assert api["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    secured = container(render(API_CHART, {"server": {"authSecret": "api-token", "corsOrigins": ["https://a.org"]}}))
    token = next(e for e in secured["env"] if e["name"] == "STELLAR_API_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "api-token", "key": "token"}
    assert {"name": "STELLAR_API_CORS_ORIGINS", "value": '["https://a.org"]'} in secured["env"]


def test_chart_settings_are_api_settings():
    """Every STELLAR_API_* the chart sets is a field of the API's settings (a renamed setting fails here)."""
    from steps.serve.settings import ServeSettings

    api = container(render(API_CHART, {"server": {"authSecret": "api-token"}}))
    names = {e["name"].removeprefix("STELLAR_API_").lower() for e in api["env"] if e["name"].startswith("STELLAR_API_")}
    assert names <= set(ServeSettings.model_fields)


@pytest.mark.parametrize("values", sorted(API_VALUES))
def test_the_container_command_is_one_stellar_accepts(helm, values):
    """The pod runs `stellar serve` with the chart's arguments and `server.extraArgs`: the CLI must take them (an
    unknown flag is a pod that restarts for ever)."""
    from workflows.cli import build_parser

    api = container(render(API_CHART, API_VALUES[values]))
    assert api["command"][0] == "stellar"
    args = build_parser().parse_args([*api["command"][1:], *api["args"]])
    assert args.command == "serve" and args.host == "0.0.0.0"
