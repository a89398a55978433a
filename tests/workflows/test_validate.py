"""workflows.validate: reference checks, the cron parser and the strict Argo schema, on small hand-built documents.

Each rule has a passing document and one mutation that must fail with a message naming the bad thing. Schema tests
read Argo's schema.json from ../shared (the `shared_dir` fixture skips them where a clone lacks it).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from workflows.validate import (
    ARTIFACT_SOURCES,
    check_references,
    parse_cron,
    parse_depends,
    strict_schema,
    validate_against_schema,
)


def workflow_template() -> dict:
    """make (parameter in, artifact out) -> total, twice: b right after a, c after b but reading a's artifact."""
    total_task = {"template": "total",
                  "arguments": {"artifacts": [{"name": "numbers", "from": "{{tasks.a.outputs.artifacts.numbers}}"}]}}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": "small"},
        "spec": {
            "entrypoint": "main",
            "arguments": {"parameters": [{"name": "size", "value": "3"}]},
            "templates": [
                {"name": "make",
                 "inputs": {"parameters": [{"name": "size"}, {"name": "label", "default": "n"}]},
                 "outputs": {"artifacts": [{"name": "numbers", "path": "/tmp/numbers"}]},
                 "container": {"image": "busybox:1.36", "command": ["sh", "-c"],
                               "args": ["seq {{inputs.parameters.size}} > {{outputs.artifacts.numbers.path}}",
                                        "{{workflow.name}} {{ pod.name }} {{retries}} "
                                        "{{workflow.creationTimestamp.Y}}"]},
                 "retryStrategy": {"limit": 2, "backoff": {"duration": "1s", "factor": 2, "maxDuration": "1m"}}},
                {"name": "total",
                 "inputs": {"artifacts": [{"name": "numbers", "path": "/tmp/in/numbers"},
                                          {"name": "extra", "path": "/tmp/in/extra", "optional": True}]},
                 "outputs": {"artifacts": [{"name": "count", "path": "/tmp/count"}]},
                 "container": {"image": "busybox:1.36", "command": ["sh", "-c"],
                               "args": ["wc -l < {{inputs.artifacts.numbers.path}} > {{outputs.artifacts.count.path}}"],
                               "resources": {"requests": {"cpu": 1, "memory": "64Mi"}}}},
                {"name": "main", "dag": {"tasks": [
                    {"name": "a", "template": "make",
                     "arguments": {"parameters": [{"name": "size", "value": "{{workflow.parameters.size}}"}]}},
                    {"name": "b", "depends": "a", **copy.deepcopy(total_task)},
                    {"name": "c", "depends": "(b.Succeeded || b.Failed) && !a.Skipped", **copy.deepcopy(total_task)},
                ]}},
            ],
        },
    }


def cron_workflow() -> dict:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "CronWorkflow",
        "metadata": {"name": "weekly"},
        "spec": {"schedules": ["0 3 * * MON"], "timezone": "Europe/Berlin", "concurrencyPolicy": "Forbid",
                 "workflowSpec": {"workflowTemplateRef": {"name": "small"}}},
    }


def templates(doc: dict) -> dict[str, dict]:
    return {t["name"]: t for t in doc["spec"]["templates"]}


def tasks(doc: dict) -> dict[str, dict]:
    return {t["name"]: t for t in templates(doc)["main"]["dag"]["tasks"]}


def only_problem(doc: dict) -> str:
    problems = check_references(doc)
    assert len(problems) == 1, problems
    return problems[0]


# --- references ----------------------------------------------------------------------------------------------------

def test_sound_documents_have_no_problems():
    assert check_references(workflow_template()) == []
    assert check_references(cron_workflow()) == []


def test_entrypoint_must_name_a_template():
    doc = workflow_template()
    doc["spec"]["entrypoint"] = "mian"
    assert "spec.entrypoint: 'mian' names no template" in only_problem(doc)


def test_task_template_must_exist():
    doc = workflow_template()
    tasks(doc)["a"]["template"] = "mkae"
    assert "task 'a': template 'mkae' is not defined" in only_problem(doc)


def test_template_ref_tasks_are_not_compared():
    doc = workflow_template()
    task = tasks(doc)["a"]
    del task["template"]
    task["templateRef"] = {"name": "elsewhere", "template": "make"}
    problems = check_references(doc)
    # a's template is unknown here, so its outputs cannot be checked, but b and c may still read them.
    assert problems == []


def test_depends_on_unknown_task():
    doc = workflow_template()
    tasks(doc)["b"]["depends"] = "a && ghost"
    assert "task 'b': depends on unknown task 'ghost'" in only_problem(doc)


@pytest.mark.parametrize("expression, error", [
    ("a.Succeded", "a.Succeded is not a task result"),
    ("a &&", "ends where a task name is expected"),
    ("(a || b", "unclosed '('"),
    ("a b", "unexpected 'b'"),
    ("a & b", "unexpected '&'"),
])
def test_depends_syntax_errors_are_reported(expression, error):
    doc = workflow_template()
    tasks(doc)["c"]["depends"] = expression
    problems = check_references(doc)
    # With its depends unreadable, c has no upstream tasks, so its use of a's artifact is reported as well.
    assert error in problems[0] and "task 'c'" in problems[0], problems


def test_depends_grammar():
    assert parse_depends("a") == {"a"}
    assert parse_depends("(a.Succeeded || a.Errored) && !b.AnySucceeded && c-1.Daemoned") == {"a", "b", "c-1"}
    assert parse_depends("!(a || b.AllFailed)") == {"a", "b"}


def test_dependency_cycle():
    doc = workflow_template()
    tasks(doc)["a"]["depends"] = "c"
    problems = check_references(doc)
    assert any("dependency cycle a -> c -> b -> a" in problem for problem in problems), problems


def test_self_dependency_is_a_cycle():
    doc = workflow_template()
    tasks(doc)["b"]["depends"] = "a && b"
    assert "dependency cycle b -> b" in only_problem(doc)


def test_dangling_workflow_parameter():
    doc = workflow_template()
    tasks(doc)["a"]["arguments"]["parameters"][0]["value"] = "{{workflow.parameters.nope}}"
    problem = only_problem(doc)
    assert "{{workflow.parameters.nope}}" in problem and "declared: size" in problem


def test_undeclared_input_parameter_in_a_container():
    doc = workflow_template()
    templates(doc)["make"]["container"]["args"][0] = "seq {{inputs.parameters.sise}}"
    assert "template 'make' declares no input parameter 'sise'" in only_problem(doc)


def test_undeclared_output_artifact_path():
    doc = workflow_template()
    templates(doc)["total"]["container"]["args"][0] = "wc -l > {{outputs.artifacts.cnt.path}}"
    assert "{{outputs.artifacts.cnt.path}}: template 'total' declares no output artifact 'cnt'" in only_problem(doc)


def test_an_output_under_a_folder_made_for_an_input_mount_is_refused():
    """Argo mounts input artifacts at their paths; the runtime makes /tmp/in root's, so a stage running as uid 10001
    could not create an output folder in it (the pipeline's /tmp/stellar/{in,out} layout did exactly that)."""
    doc = workflow_template()
    templates(doc)["total"]["outputs"]["artifacts"][0]["path"] = "/tmp/in/out/count"
    assert only_problem(doc) == (
        "template 'total': output artifact path /tmp/in/out/count is under /tmp/in, which the container runtime "
        "creates owned by root to mount an input artifact there: a stage that does not run as root cannot write "
        "its output (put inputs and outputs under different folders)")
    templates(doc)["total"]["outputs"]["artifacts"][0]["path"] = "/tmp/in"  # the folder itself
    assert "output artifact path /tmp/in is under /tmp/in" in only_problem(doc)
    templates(doc)["total"]["outputs"]["artifacts"][0]["path"] = "/tmp/in/../count"  # normalised: /tmp/count
    assert check_references(doc) == []


def test_artifact_from_a_task_that_is_not_upstream():
    doc = workflow_template()
    del tasks(doc)["b"]["depends"]
    problem = only_problem(doc)
    assert "task 'b'" in problem and "task 'a' is not upstream of task 'b'" in problem


def test_artifact_from_a_task_that_does_not_declare_it():
    doc = workflow_template()
    tasks(doc)["b"]["arguments"]["artifacts"][0]["from"] = "{{tasks.a.outputs.artifacts.count}}"
    assert "template 'make' of task 'a' declares no output artifact 'count'" in only_problem(doc)


def test_artifact_from_an_unknown_task():
    doc = workflow_template()
    tasks(doc)["b"]["arguments"]["artifacts"][0]["from"] = "{{tasks.x.outputs.artifacts.numbers}}"
    assert "no task 'x' in this DAG" in only_problem(doc)


def test_missing_required_parameter_argument():
    doc = workflow_template()
    del tasks(doc)["a"]["arguments"]
    assert "task 'a': does not pass required input parameter 'size' of template 'make'" in only_problem(doc)


def test_missing_required_artifact_argument():
    doc = workflow_template()
    del tasks(doc)["b"]["arguments"]
    assert "task 'b': does not pass required input artifact 'numbers' of template 'total'" in only_problem(doc)


def test_argument_the_template_does_not_declare():
    doc = workflow_template()
    tasks(doc)["a"]["arguments"]["parameters"].append({"name": "colour", "value": "red"})
    assert "task 'a': passes parameter 'colour' that template 'make' does not declare" in only_problem(doc)


def test_expression_tags_are_not_run_locally():
    doc = workflow_template()
    templates(doc)["make"]["container"]["args"].append("{{=asInt(inputs.parameters.size) + 1}}")
    assert "expression tags are not run by the local executor" in only_problem(doc)


def test_unknown_variable_and_unclosed_tag():
    doc = workflow_template()
    templates(doc)["make"]["container"]["args"].append("{{steps.x.outputs.result}}")
    assert "{{steps.x.outputs.result}}: not a variable the local executor resolves" in only_problem(doc)
    doc = workflow_template()
    templates(doc)["make"]["container"]["args"].append("{{inputs.parameters.size")
    assert "unclosed '{{'" in only_problem(doc)


def test_inputs_outside_a_template():
    doc = workflow_template()
    doc["spec"]["arguments"]["parameters"][0]["value"] = "{{inputs.parameters.size}}"
    assert "spec: {{inputs.parameters.size}}: inputs exist only inside a template" in only_problem(doc)


def test_unknown_kind():
    assert check_references({"kind": "Deployment", "spec": {}}) == [
        "kind 'Deployment' is not a WorkflowTemplate, Workflow or CronWorkflow"]


# --- CronWorkflow ------------------------------------------------------------------------------------------------------

def test_cron_with_a_bad_schedule():
    doc = cron_workflow()
    doc["spec"]["schedules"] = ["0 3 * * MON", "61 * * * *"]
    problem = only_problem(doc)
    assert "'61 * * * *'" in problem and "minute" in problem and "61 is outside 0-59" in problem


def test_cron_with_a_bad_timezone():
    doc = cron_workflow()
    doc["spec"]["timezone"] = "Mars/Olympus_Mons"
    assert "spec.timezone: 'Mars/Olympus_Mons' is not an IANA time zone" in only_problem(doc)


def test_cron_must_name_its_workflow_template():
    doc = cron_workflow()
    doc["spec"]["workflowSpec"]["workflowTemplateRef"] = {}
    assert "spec.workflowSpec.workflowTemplateRef.name is missing" in only_problem(doc)


def test_cron_legacy_schedule_field():
    doc = cron_workflow()
    doc["spec"]["schedule"] = doc["spec"].pop("schedules")[0]
    assert check_references(doc) == []
    doc["spec"]["schedule"] = "0 3 * *"
    assert "spec.schedule: cron schedule '0 3 * *' has 4 fields" in only_problem(doc)


def test_cron_without_schedule():
    doc = cron_workflow()
    del doc["spec"]["schedules"]
    assert "spec.schedules: no schedule" in only_problem(doc)


# Valid for both Argo's parser and croniter.
VALID_CRON = ["0 3 * * 1", "0 3 * * MON", "*/15 * * * *", "0 0 1 1 *", "30 2 * * 0", "0 0 * * mon-fri",
              "5/15 * * * *", "0 0 ? * *", "0 0 * JAN,jul *", "1-5/2 0-23/6 1-31 1-12 0-6", "01 * * * *",
              "@daily", "@hourly", "@weekly"]
# Invalid for both.
INVALID_CRON = {"61 * * * *": "61 is outside 0-59", "* 24 * * *": "24 is outside 0-23",
                "* * 0 * *": "0 is outside 1-31", "* * 32 * *": "32 is outside 1-31", "* * * 13 *": "outside 1-12",
                "*/0 * * * *": "step '0'", "* * * *": "4 fields", "a * * * *": "'a' is not a number",
                "1,,2 * * * *": "'' is not a number", "*/5/2 * * * *": "step '5/2'", "1.5 * * * *": "not a number",
                "* * * FOO *": "not a number or a name", "@reboot": "unknown descriptor"}
# Accepted by croniter (Vixie-style extensions) but not by robfig/cron, which Argo uses: rejected here.
ARGO_STRICTER = {"0 0 * * 7": "7 is outside 0-6", "0 0 L * *": "'L'", "0 0 * * 1#2": "'1#2'",
                 "* * * * * *": "6 fields", "5-1 * * * *": "runs backwards", "0 0 * * FRI-MON": "runs backwards"}


@pytest.mark.parametrize("expr", VALID_CRON)
def test_parse_cron_accepts_what_croniter_accepts(expr):
    croniter = pytest.importorskip("croniter").croniter
    assert croniter.is_valid(expr)
    parse_cron(expr)


@pytest.mark.parametrize("expr, error", INVALID_CRON.items())
def test_parse_cron_rejects_what_croniter_rejects(expr, error):
    croniter = pytest.importorskip("croniter").croniter
    assert not croniter.is_valid(expr)
    with pytest.raises(ValueError, match=f"{re.escape(repr(expr))}.*{re.escape(error)}"):
        parse_cron(expr)


@pytest.mark.parametrize("expr, error", ARGO_STRICTER.items())
def test_parse_cron_follows_argo_where_croniter_is_laxer(expr, error):
    croniter = pytest.importorskip("croniter").croniter
    assert croniter.is_valid(expr)
    with pytest.raises(ValueError) as raised:
        parse_cron(expr)
    assert error in str(raised.value)


def test_parse_cron_every_descriptor():
    parse_cron("@every 1h30m")
    with pytest.raises(ValueError, match="unknown descriptor"):
        parse_cron("@every soon")


# --- strict schema -----------------------------------------------------------------------------------------------------

def test_strict_schema_widens_closes_and_keeps_open_maps():
    schema = {"definitions": {
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"type": "string"},
        "io.k8s.apimachinery.pkg.api.resource.Quantity": {"type": "string"},
        "Thing": {"type": "object", "properties": {"a": {"type": "string"}}},
        "Map": {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}},
        "Free": {"type": "object"},
    }}
    original = copy.deepcopy(schema)
    strict = strict_schema(schema)
    assert schema == original, "strict_schema must not change its argument"
    definitions = strict["definitions"]
    assert definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["type"] == ["integer", "string"]
    assert definitions["io.k8s.apimachinery.pkg.api.resource.Quantity"]["type"] == ["number", "string"]
    assert definitions["Thing"]["additionalProperties"] is False
    assert definitions["Map"]["additionalProperties"] == {"type": "string"}
    assert "additionalProperties" not in definitions["Free"]


def test_strict_schema_refuses_a_file_that_is_not_argos():
    with pytest.raises(ValueError, match="IntOrString"):
        strict_schema({"definitions": {}})


@pytest.fixture(scope="module")
def schema_path(shared_dir):
    path = shared_dir / "schemas" / "argo-workflows" / "schema.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent: the Argo schema lives in ../shared beside the repository")
    return path


@pytest.mark.needs_shared
def test_sound_documents_pass_the_strict_schema(schema_path):
    assert validate_against_schema(workflow_template(), schema_path) == []
    assert validate_against_schema(cron_workflow(), schema_path) == []


@pytest.mark.needs_shared
def test_widening_is_needed_for_integers(schema_path):
    """The published file says IntOrString and Quantity are strings: unwidened, Hera's `limit: 2` would fail."""
    import jsonschema

    raw = json.loads(schema_path.read_text())
    unwidened = {**raw, "$ref": "#/definitions/io.argoproj.workflow.v1alpha1.WorkflowTemplate"}
    del unwidened["oneOf"]
    errors = list(jsonschema.Draft202012Validator(unwidened).iter_errors(workflow_template()))
    assert {e.json_path for e in errors} == {"$.spec.templates[0].retryStrategy.limit",
                                             "$.spec.templates[0].retryStrategy.backoff.factor",
                                             "$.spec.templates[1].container.resources.requests.cpu"}


@pytest.mark.needs_shared
def test_misspelt_key_is_caught_with_its_path(schema_path):
    doc = workflow_template()
    retry = templates(doc)["make"]["retryStrategy"]
    retry["backof"] = retry.pop("backoff")
    assert validate_against_schema(doc, schema_path) == [
        "$.spec.templates[0].retryStrategy: Additional properties are not allowed ('backof' was unexpected)"]


@pytest.mark.needs_shared
def test_wrong_types_and_missing_fields(schema_path):
    doc = cron_workflow()
    doc["spec"]["startingDeadlineSeconds"] = "soon"
    del doc["spec"]["workflowSpec"]
    assert validate_against_schema(doc, schema_path) == [
        "$.spec: 'workflowSpec' is a required property",
        "$.spec.startingDeadlineSeconds: 'soon' is not of type 'integer'"]


@pytest.mark.needs_shared
def test_unknown_kind_against_the_schema(schema_path):
    assert "has no definition io.argoproj.workflow.v1alpha1.Pipeline" in validate_against_schema(
        {"kind": "Pipeline"}, schema_path)[0]


@pytest.mark.needs_shared
def test_artifact_sources_match_argos_artifact_location(schema_path):
    """An input artifact with any ArtifactLocation (or `from`) needs no argument: keep the list in step with Argo."""
    definitions = json.loads(schema_path.read_text())["definitions"]
    locations = set(definitions["io.argoproj.workflow.v1alpha1.ArtifactLocation"]["properties"]) - {"archiveLogs"}
    assert ARTIFACT_SOURCES == locations | {"from", "fromExpression"}


@pytest.mark.needs_shared
def test_hera_output_passes_strict_schema_and_references(schema_path):
    """Hera 7 writes integers for retryStrategy.limit and backoff.factor, artifacts by `from`, and `depends`:
    all of it must pass both checks, or the strict schema would reject the pipeline itself."""
    from hera.workflows import DAG, Artifact, Container, Parameter, RetryStrategy, WorkflowTemplate
    from hera.workflows import models as m

    with WorkflowTemplate(name="hera-small", entrypoint="main",
                          arguments=[Parameter(name="size", value="3")]) as template:
        make = Container(
            name="make", image="busybox:1.36", command=["sh", "-c"],
            args=["seq {{inputs.parameters.size}} > {{outputs.artifacts.numbers.path}}"],
            inputs=[Parameter(name="size")], outputs=[Artifact(name="numbers", path="/tmp/numbers")],
            retry_strategy=RetryStrategy(limit=2, retry_policy="Always",
                                         backoff=m.Backoff(duration="1s", factor=2, max_duration="10s")))
        total = Container(
            name="total", image="busybox:1.36", command=["sh", "-c"],
            args=["wc -l < {{inputs.artifacts.numbers.path}} > {{outputs.artifacts.count.path}}"],
            inputs=[Artifact(name="numbers", path="/tmp/in/numbers")],
            outputs=[Artifact(name="count", path="/tmp/count")])
        with DAG(name="main"):
            a = make(name="a", arguments={"size": "{{workflow.parameters.size}}"})
            b = total(name="b", arguments=[a.get_artifact("numbers")])
            a >> b
    doc = template.to_dict()
    assert doc["spec"]["templates"][0]["retryStrategy"]["limit"] == 2
    assert validate_against_schema(doc, schema_path) == []
    assert check_references(doc) == []


# --- product constraints -----------------------------------------------------------------------------------------------

def test_import_is_light():
    """The executor and `stellar render` import this module: it must not pull in the test-only validators."""
    code = ("import sys, workflows.validate; "
            "print(sorted(m for m in ('jsonschema', 'croniter', 'hera') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.stdout.strip() == "[]"
