"""Every object both charts render, with every value set: valid Kubernetes for 1.30 and 1.34 (strict), pods under
the "restricted" Pod Security Standard with requests and limits, and RBAC within an explicit allow-list."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from rendering import API_CHART, API_VALUES, ARGO_KINDS, KUBE_VERSIONS, PIPELINE_CHART, PIPELINE_VALUES, render

RENDERS = [(PIPELINE_CHART, name, values) for name, values in PIPELINE_VALUES.items()] + \
          [(API_CHART, name, values) for name, values in API_VALUES.items()]
IDS = [f"{chart.name}-{name}" for chart, name, _ in RENDERS]
# Custom resources kubernetes-validate has no schema for; the Argo ones are checked against Argo's schema in
# test_pipeline_chart.py, the ServiceMonitor's shape in test_api_chart.py.
CUSTOM_KINDS = ARGO_KINDS | {"ServiceMonitor"}

MANAGE = {"get", "list", "watch", "create", "update", "patch", "delete"}
READ = {"get", "list", "watch"}
# What Helm's watcher (steps.deploy.helm.WAIT_STRATEGY, kstatus) lists to tell whether a Deployment has rolled out:
# without them the Deployment's status stays Unknown, and every rollout waits its whole timeout and is rolled back.
ROLLOUT_STATUS = (("apps", "replicasets"), ("", "pods"))
# (apiGroup, resource) -> verbs each Role may be granted; nothing else, and never a wildcard.
ALLOWED_RULES = {
    "stellar-executor": {("argoproj.io", "workflowtaskresults"): {"create", "patch"}},
    "stellar-artifact-gc": {("argoproj.io", "workflowartifactgctasks"): {"list", "watch"},
                            ("argoproj.io", "workflowartifactgctasks/status"): {"patch"}},
    "stellar-deployer": {
        ("", "services"): MANAGE, ("", "serviceaccounts"): MANAGE, ("apps", "deployments"): MANAGE,
        ("autoscaling", "horizontalpodautoscalers"): MANAGE, ("policy", "poddisruptionbudgets"): MANAGE,
        ("networking.k8s.io", "networkpolicies"): MANAGE, ("monitoring.coreos.com", "servicemonitors"): MANAGE,
        ("", "secrets"): {"get", "list", "create", "update", "delete"},  # Helm's release records
        **{resource: READ for resource in ROLLOUT_STATUS},
    },
}
# Kind of the stellar-api chart -> what the deployer's Role must grant to manage it.
API_KIND_RESOURCES = {
    "Deployment": ("apps", "deployments"), "Service": ("", "services"), "ServiceAccount": ("", "serviceaccounts"),
    "HorizontalPodAutoscaler": ("autoscaling", "horizontalpodautoscalers"),
    "PodDisruptionBudget": ("policy", "poddisruptionbudgets"),
    "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
    "ServiceMonitor": ("monitoring.coreos.com", "servicemonitors"),
}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


@pytest.fixture(scope="module", params=RENDERS, ids=IDS)
def rendered(request, helm) -> list[dict[str, Any]]:
    chart, _, values = request.param
    return render(chart, values)


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_object_is_valid_kubernetes_strict(rendered, kube_version):
    import kubernetes_validate

    for doc in rendered:
        if doc["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(doc, kube_version, strict=True)


def test_nothing_is_cluster_scoped(rendered):
    assert {doc["kind"] for doc in rendered}.isdisjoint({"ClusterRole", "ClusterRoleBinding", "Namespace",
                                                         "CustomResourceDefinition"})
    assert all("namespace" not in doc["metadata"] for doc in rendered)  # Helm places them in the release's


def pod_specs(doc: dict[str, Any]) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]]:
    """(pod-level settings, containers, volumes) of every pod an object makes."""
    if doc["kind"] == "Deployment":
        pod = doc["spec"]["template"]["spec"]
        yield pod, pod.get("initContainers", []) + pod["containers"], pod.get("volumes", [])
    elif doc["kind"] == "WorkflowTemplate":  # every container template is a pod, under the workflow's settings
        spec = doc["spec"]
        for template in spec["templates"]:
            if "container" in template:
                yield spec, [template["container"]], spec.get("volumes", []) + template.get("volumes", [])


def test_every_pod_meets_the_restricted_standard_and_sets_resources(rendered):
    pods = [pod for doc in rendered for pod in pod_specs(doc)]
    assert pods or all(doc["kind"] not in ("Deployment", "WorkflowTemplate") for doc in rendered)
    for pod, containers, volumes in pods:
        context = pod.get("securityContext", {})
        assert not any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC"))
        assert {key for volume in volumes for key in volume if key != "name"} <= RESTRICTED_VOLUMES
        for container in containers:
            own = container.get("securityContext", {})
            assert own.get("runAsNonRoot", context.get("runAsNonRoot")) is True, container.get("name")
            assert own.get("runAsUser", context.get("runAsUser")) != 0
            assert own.get("seccompProfile", context.get("seccompProfile"))["type"] in ("RuntimeDefault", "Localhost")
            assert own.get("allowPrivilegeEscalation") is False
            assert own.get("privileged") is not True
            assert "ALL" in own["capabilities"]["drop"]
            assert set(own["capabilities"].get("add", [])) <= {"NET_BIND_SERVICE"}
            resources = container["resources"]
            assert resources["requests"]["cpu"] and resources["requests"]["memory"]
            assert resources["limits"]["memory"]


def test_rbac_stays_within_the_allow_list(rendered):
    for role in (doc for doc in rendered if doc["kind"] == "Role"):
        allowed = ALLOWED_RULES[role["metadata"]["name"]]
        for rule in role["rules"]:
            assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"]
            assert not rule.get("resourceNames") and not rule.get("nonResourceURLs")
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    assert set(rule["verbs"]) <= allowed.get((group, resource), set()), (group, resource)
    for binding in (doc for doc in rendered if doc["kind"] == "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role"
        assert {subject["kind"] for subject in binding["subjects"]} == {"ServiceAccount"}


def granted(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    verbs: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                verbs.setdefault((group, resource), set()).update(rule["verbs"])
    return verbs


@pytest.mark.parametrize("service_monitor", [False, True])
def test_the_deployer_can_manage_exactly_what_the_api_chart_makes(helm, service_monitor):
    """Every kind stellar-api renders (all options on) is manageable by the deploy task, it may read what a
    rollout's status comes from, and it may touch nothing else but Helm's release Secrets; the executor Role is
    bound to the deployer too (its pod runs an executor)."""
    docs = render(PIPELINE_CHART, {"rbac": {"deployerServiceMonitor": service_monitor}})
    roles = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "Role"}
    deployer = granted(roles["stellar-deployer"])
    api_values = {**API_VALUES["production"], "serviceMonitor": {"enabled": service_monitor}}
    needed = {API_KIND_RESOURCES[doc["kind"]] for doc in render(API_CHART, api_values)}
    assert set(deployer) == needed | {("", "secrets"), *ROLLOUT_STATUS}
    assert all(deployer[resource] == MANAGE for resource in needed)
    assert all(deployer[resource] == READ for resource in ROLLOUT_STATUS)
    bindings = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "RoleBinding"}
    assert {s["name"] for s in bindings["stellar-executor"]["subjects"]} == {"stellar-pipeline", "stellar-deployer"}
    assert {s["name"] for s in bindings["stellar-deployer"]["subjects"]} == {"stellar-deployer"}
