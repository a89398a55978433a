"""charts/stellar-pipeline: ships exactly what Hera renders, stays generated from it, and its references resolve."""

from __future__ import annotations

import json

import pytest
import yaml

from rendering import KUBE_VERSIONS, NAMESPACE, PIPELINE_CHART, PIPELINE_VALUES, by_kind, one, render
from workflows.pipeline import CRON_NAME, PRUNE_CRON_NAME, RenderOptions
from workflows.render import CRON_WORKFLOW_FILE, PRUNE_CRON_WORKFLOW_FILE, WORKFLOW_TEMPLATE_FILE, rendered_documents
from workflows.validate import check_references, strict_schema, validate_against_schema


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_lints_clean_in_strict_mode(helm, kube_version):
    result = helm.lint(PIPELINE_CHART, strict=True, namespace=NAMESPACE, kube_version=f"{kube_version}.0")
    assert result["errors"] == []
    assert [m for m in result["messages"] if m["error"] != "icon is recommended"] == []


def test_default_values_render_what_stellar_render_writes(helm):
    """The acceptance criterion: with no values at all, the chart's objects have `stellar render`'s specs."""
    docs = render(PIPELINE_CHART)
    expected = rendered_documents()
    assert one(docs, "WorkflowTemplate")["spec"] == expected[WORKFLOW_TEMPLATE_FILE]["spec"]
    assert one(docs, "CronWorkflow", CRON_NAME)["spec"] == expected[CRON_WORKFLOW_FILE]["spec"]
    assert one(docs, "CronWorkflow", PRUNE_CRON_NAME)["spec"] == expected[PRUNE_CRON_WORKFLOW_FILE]["spec"]
    assert one(docs, "WorkflowTemplate")["metadata"]["name"] == expected[WORKFLOW_TEMPLATE_FILE]["metadata"]["name"]
    assert expected[WORKFLOW_TEMPLATE_FILE]["metadata"]["labels"].items() <= \
        one(docs, "WorkflowTemplate")["metadata"]["labels"].items()


def test_values_do_what_the_same_render_options_do(helm):
    """Image, schedule, time zone, concurrency and parameters set as values equal `stellar render` with those
    options: the chart's values and RenderOptions are two doors to the same objects."""
    values = {"image": {"registry": "localhost:5001/stellar", "tag": "1.2.3-rc1"},
              "cron": {"schedules": ["30 2 * * 0"], "timezone": "Europe/Berlin", "concurrencyPolicy": "Replace"},
              "prune": {"schedules": ["0 5 * * *"], "keepVersions": 3, "keepRollbacks": 2},
              "workflow": {"parameters": {"samples": 50, "deploy-target": "local", "registry": "s3://models/r"}}}
    options = RenderOptions(image_registry="localhost:5001/stellar", image_tag="1.2.3-rc1", schedules=("30 2 * * 0",),
                            timezone="Europe/Berlin", concurrency_policy="Replace", prune_schedules=("0 5 * * *",),
                            keep_versions=3, keep_rollbacks=2,
                            parameters={"samples": "50", "deploy-target": "local", "registry": "s3://models/r"})
    docs, expected = render(PIPELINE_CHART, values), rendered_documents(options)
    assert one(docs, "WorkflowTemplate")["spec"] == expected[WORKFLOW_TEMPLATE_FILE]["spec"]
    assert one(docs, "CronWorkflow", CRON_NAME)["spec"] == expected[CRON_WORKFLOW_FILE]["spec"]
    assert one(docs, "CronWorkflow", PRUNE_CRON_NAME)["spec"] == expected[PRUNE_CRON_WORKFLOW_FILE]["spec"]


def test_resources_are_values(helm):
    train = {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"cpu": "8", "memory": "16Gi"}}
    template = one(render(PIPELINE_CHART, {"resources": {"train": train}}), "WorkflowTemplate")
    resources = {t["name"]: t["container"]["resources"] for t in template["spec"]["templates"] if "container" in t}
    assert resources["train"] == train
    assert resources["ingest"] == {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}


def test_regenerating_the_chart_changes_nothing(sync):
    """The Hera-derived files are generated (`make chart-sync`): a change to workflows/pipeline.py without a
    regeneration fails here."""
    assert [str(path) for path in sync.stale_files()] == []


def test_argo_expressions_reach_argo_unexpanded(helm):
    template = one(render(PIPELINE_CHART), "WorkflowTemplate")
    deploy = next(t for t in template["spec"]["templates"] if t["name"] == "deploy")
    assert "{{inputs.parameters.target}}" in deploy["container"]["args"]
    assert "{{workflow.namespace}}" in deploy["container"]["args"]


@pytest.mark.parametrize("name", sorted(PIPELINE_VALUES))
def test_argo_objects_pass_the_strict_schema_and_reference_checks(helm, argo_schema, name):
    docs = render(PIPELINE_CHART, PIPELINE_VALUES[name])
    argo = [doc for doc in docs if doc["apiVersion"].startswith("argoproj.io/")]
    assert sorted(doc["metadata"]["name"] for doc in argo) == (
        ["stellar-prune", "stellar-training", "stellar-weekly"] if name != "template-only" else ["stellar-training"])
    for doc in argo:
        assert validate_against_schema(doc, argo_schema) == [], doc["kind"]
        assert check_references(doc) == [], doc["kind"]


@pytest.mark.parametrize("name", sorted(PIPELINE_VALUES))
def test_artifact_repository_is_what_the_template_names(helm, argo_schema, name):
    """The ConfigMap and key of artifactRepositoryRef exist, hold a valid Argo ArtifactRepository, and take
    the credentials from the Secret the pods read."""
    import jsonschema

    values = PIPELINE_VALUES[name]
    docs = render(PIPELINE_CHART, values)
    reference = one(docs, "WorkflowTemplate")["spec"]["artifactRepositoryRef"]
    configmap = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == reference["configMap"])
    repository = yaml.safe_load(configmap["data"][reference["key"]])
    schema = strict_schema(json.loads(argo_schema.read_text()))
    validator = jsonschema.Draft7Validator(
        {**schema, "$ref": "#/definitions/io.argoproj.workflow.v1alpha1.ArtifactRepository"})
    assert [e.message for e in validator.iter_errors(repository)] == []
    secret = values.get("s3", {}).get("existingSecret") or "stellar-s3"
    assert repository["s3"]["accessKeySecret"] == {"name": secret, "key": "AWS_ACCESS_KEY_ID"}
    assert repository["s3"]["secretKeySecret"] == {"name": secret, "key": "AWS_SECRET_ACCESS_KEY"}
    assert repository["s3"]["keyFormat"] == "{{workflow.name}}/{{pod.name}}"
    default = configmap["metadata"].get("annotations", {}).get("workflows.argoproj.io/default-artifact-repository")
    assert default == (reference["key"] if values.get("artifactRepository", {}).get("default", True) else None)


@pytest.mark.parametrize("name", sorted(PIPELINE_VALUES))
def test_every_secret_and_service_account_the_pods_use_is_there(helm, name):
    values = PIPELINE_VALUES[name]
    docs = render(PIPELINE_CHART, values)
    spec = one(docs, "WorkflowTemplate")["spec"]
    accounts = {spec["serviceAccountName"], spec["artifactGC"]["serviceAccountName"]} | {
        t["serviceAccountName"] for t in spec["templates"] if "serviceAccountName" in t}
    assert accounts == {"stellar-pipeline", "stellar-deployer", "stellar-artifact-gc"}
    prune = [doc["spec"]["workflowSpec"] for doc in by_kind(docs, "CronWorkflow")
             if doc["metadata"]["name"] == PRUNE_CRON_NAME]
    assert all(workflow["serviceAccountName"] in accounts for workflow in prune)
    if values.get("rbac", {}).get("create", True):
        assert {d["metadata"]["name"] for d in by_kind(docs, "ServiceAccount")} == accounts
    else:
        assert by_kind(docs, "ServiceAccount") == []
    templates = spec["templates"] + [template for workflow in prune for template in workflow["templates"]]
    referenced = {env["valueFrom"]["secretKeyRef"]["name"] for t in templates if "container" in t
                  for env in t["container"].get("env") or []}
    existing = values.get("s3", {}).get("existingSecret")
    if existing:
        assert referenced == {existing} and by_kind(docs, "Secret") == []
    else:
        [secret] = by_kind(docs, "Secret")
        assert referenced == {secret["metadata"]["name"]}
        assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL",
                                             "AWS_REGION"}


def test_deploy_task_targets_helm_with_the_chart_in_its_image(helm):
    """In the cluster the deploy task upgrades the stellar-api release, from the chart the deploy image carries."""
    parameters = {p["name"]: p["value"] for p in one(render(PIPELINE_CHART), "WorkflowTemplate")["spec"]
                  ["arguments"]["parameters"]}
    assert parameters["deploy-target"] == "helm" and parameters["api-release"] == "stellar-api"
    assert parameters["api-chart"] == "/opt/stellar/charts/stellar-api"
    assert int(parameters["deploy-timeout"]) > 0


@pytest.mark.parametrize("values, message", [
    ({"workflow": {"parameters": {"sampels": "5"}}}, "sampels"),
    ({"resources": {"train": {"limits": {"memory": None}}}}, "memory"),  # null deletes a default in Helm
    ({"cron": {"concurrencyPolicy": "Sometimes"}}, "concurrencyPolicy"),
    ({"image": {"tag": "latest tag"}}, "tag"),
    ({"cron": {"schedules": ["61 3 * * 1"]}}, "schedules"),  # minute 61
    ({"cron": {"schedules": ["0 3 * * 1", "0 3 * *"]}}, "schedules"),  # four fields
    ({"cron": {"schedules": ["@fortnightly"]}}, "schedules"),
    ({"cron": {"schedules": ["@Weekly"]}}, "schedules"),  # robfig/cron reads descriptors in lower case only
    ({"cron": {"schedules": ["@every  1h"]}}, "schedules"),
    ({"cron": {"timezone": "Mars/Olympus"}}, "timezone"),
    ({"prune": {"schedules": ["0 25 * * *"]}}, "schedules"),
    ({"prune": {"keepVersions": 0}}, "keepVersions"),
])
def test_the_values_schema_refuses_mistakes(helm, values, message):
    with pytest.raises(helm.HelmError, match=message):
        render(PIPELINE_CHART, values)


@pytest.mark.parametrize("schedule", ["0 3 * * 1", "*/15 0-23/2 1,15 JAN-mar sun", "00 03 * * 1-5", "@weekly",
                                      "@every 1h30m", "61 3 * * 1", "0 3 * * 7", "0 24 * * *", "5/0 * * * *",
                                      "0 3 * * 1 2", "0 3 L * *", "@fortnightly", "x 3 * * 1", "@WEEKLY", " @weekly",
                                      "@every  1h", "@every\t1h", "@every \u0661h", "0 3 * * 1\u00a0"])
def test_the_chart_takes_the_schedules_stellar_render_takes(schedule):
    """The pattern in values.schema.json (generated from `validate.cron_pattern`) agrees with `parse_cron`."""
    import re

    from workflows.validate import parse_cron

    schema = json.loads((PIPELINE_CHART / "values.schema.json").read_text())
    for schedules in (schema["properties"]["cron"], schema["properties"]["prune"]):  # both point at one pattern
        assert schedules["properties"]["schedules"]["items"] == {"$ref": "#/definitions/cronSchedule"}
    pattern = schema["definitions"]["cronSchedule"]["pattern"]
    try:
        parse_cron(schedule)
        accepted = True
    except ValueError:
        accepted = False
    assert bool(re.search(pattern, schedule)) is accepted


def test_a_schedule_and_time_zone_set_as_values_reach_the_cron_workflow(helm):
    docs = render(PIPELINE_CHART, {"cron": {"schedules": ["0 4 * * 2,5"], "timezone": "America/Argentina/Salta"}})
    spec = one(docs, "CronWorkflow", CRON_NAME)["spec"]
    assert spec["schedules"] == ["0 4 * * 2,5"] and spec["timezone"] == "America/Argentina/Salta"
    assert one(docs, "CronWorkflow", PRUNE_CRON_NAME)["spec"]["timezone"] == "America/Argentina/Salta"


def test_the_prune_can_be_left_out(helm):
    docs = render(PIPELINE_CHART, {"prune": {"enabled": False}})
    assert [doc["metadata"]["name"] for doc in by_kind(docs, "CronWorkflow")] == [CRON_NAME]
