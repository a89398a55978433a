"""The one definition of the training DAG: an Argo WorkflowTemplate and its weekly CronWorkflow, built with Hera,
and the CronWorkflow that prunes the model registry.

Everything else reads what this module renders: `stellar render` writes it, the Helm chart ships it, and the
local executor runs the template. Each stage is a container template running `python -m steps.<stage>` in the
stage's own image; artifacts travel through the artifact repository named by `artifactRepositoryRef` (S3/MinIO),
and Argo deletes a run's artifacts with its workflow (`artifactGC`), a week after it ends (`ttlStrategy`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

from hera.workflows import (
    DAG,
    Artifact,
    Container,
    CronWorkflow,
    Parameter,
    Resources,
    RetryStrategy,
    SecretEnv,
    WorkflowTemplate,
)
from hera.workflows import models as m

from steps.core.names import MODALITY
from steps.core.version import package_version
from workflows.prune import DEFAULT_KEEP_ROLLBACKS, DEFAULT_KEEP_VERSIONS

TEMPLATE_NAME = "stellar-training"
CRON_NAME = "stellar-weekly"
PRUNE_CRON_NAME = "stellar-prune"
ENTRYPOINT = "training"
# Apart, under /tmp: Argo mounts each input artifact at its path, and the container runtime makes the folders above
# that mount point, owned by root; a stage (uid 10001) could not create its output folder among them.
IN = "/tmp/stellar-in"
OUT = "/tmp/stellar-out"

# What the local executor must know beyond a template's inputs to cache it (annotations on the template):
# - READS_REGISTRY names the input parameter holding the registry URI: the registry's alias fingerprint joins
#   the cache key, so a promotion or rollback is seen;
# - READS_LOCATION names the input parameter holding where data comes from: a local folder's content hash
#   joins the key, a value in PURE_SOURCES (deterministic sources) adds nothing, and anything else (a live
#   archive, an S3 prefix) is read afresh on every run; downstream tasks stay cached while its output is the same.
READS_REGISTRY = "stellar.dev/reads-registry"
READS_LOCATION = "stellar.dev/reads-location"
PURE_SOURCES = "stellar.dev/pure-sources"

# Where the deploy image carries the stellar-api chart (images/deploy/Dockerfile copies it there): the default of
# the `api-chart` parameter, so the in-cluster rollout needs no chart repository.
API_CHART_IN_IMAGE = "/opt/stellar/charts/stellar-api"
# The user the images create (images/base/Dockerfile); pods run as it, never as root.
RUN_AS_USER = 10001

MODALITIES = {"spectra": "sdss-spectra", "photometry": "gaia-photometry", "lightcurves": "kepler-lightcurves"}


def default_gates() -> str:
    """The quality gates shipped with the package (YAML text), the default of the `gates` parameter."""
    return resources.files("steps.evaluate").joinpath("default_gates.yaml").read_text()


@dataclass
class RenderOptions:
    """What a deployment may change in the rendered objects; the defaults are what the chart ships."""

    image_registry: str = "ghcr.io/stellar-pipeline"
    image_tag: str = field(default_factory=package_version)
    image_pull_policy: str = "IfNotPresent"
    namespace: str | None = None
    service_account: str = "stellar-pipeline"
    deploy_service_account: str = "stellar-deployer"
    artifact_gc_service_account: str = "stellar-artifact-gc"
    artifact_repository_configmap: str = "artifact-repositories"
    artifact_repository_key: str = "stellar-minio"
    s3_secret: str = "stellar-s3"
    schedules: tuple[str, ...] = ("0 3 * * 1",)  # a CronWorkflow starts the run at each
    prune_schedules: tuple[str, ...] = ("0 1 * * 1",)  # the registry's prune, before the weekly run
    keep_versions: int = DEFAULT_KEEP_VERSIONS
    keep_rollbacks: int = DEFAULT_KEEP_ROLLBACKS
    timezone: str = "Etc/UTC"
    starting_deadline_seconds: int = 3600
    concurrency_policy: str = "Forbid"
    retry_limit: int = 3
    backoff_duration: str = "15s"
    backoff_factor: int = 2
    # Argo counts it from a stage's first attempt: it starts no retry after it, and stops a retry still running
    # then. Longer than every attempt of a rollout (an atomic upgrade waits up to `deploy-timeout`, 600 s, and its
    # rollback as long again) and the backoff between them; for training, two whole attempts.
    backoff_max_duration: str = "2h"
    training_backoff_max_duration: str = "4h"
    # Deadlines (`activeDeadlineSeconds`). The first attempt of a stage has no other limit: one still running after
    # `attempt_deadline_seconds` (a training attempt: `training_deadline_seconds`) is stopped and tried again
    # within the maxDuration above; a run still going after `run_deadline_seconds` is stopped whole. A stage that
    # hangs (an archive that never answers) then fails the run, rather than hold it, and with it every later start
    # of a Forbid cron.
    attempt_deadline_seconds: int = 3600
    training_deadline_seconds: int = 7200
    run_deadline_seconds: int = 12 * 3600
    parameters: dict[str, str] = field(default_factory=dict)

    def image(self, stage: str) -> str:
        """`<registry>/stellar-<stage>:<tag>`."""
        return f"{self.image_registry}/stellar-{stage}:{self.image_tag}"


def workflow_parameters(options: RenderOptions) -> dict[str, str]:
    """The workflow's parameters and their defaults (every value a string, as Argo passes them)."""
    defaults = {
        "spectra-source": "synthetic",
        "photometry-source": "synthetic",
        "lightcurves-source": "synthetic",
        "samples": "200",
        "seed": "42",
        "spectrum-length": "1024",
        "view-length": "201",
        "max-bad-fraction": "0.2",
        "test-fraction": "0.2",
        "val-fraction": "0.1",
        "trainer": "auto",
        "epochs": "100",
        "gates": default_gates(),
        "registry": "s3://stellar/registry",
        "raw-cache": "s3://stellar/raw-cache",
        # The deploy task: `helm` upgrades the stellar-api release in the workflow's namespace (the cluster's way);
        # `local` only writes the serving record, which a running `stellar serve` follows (the local executor's).
        "deploy-target": "helm",
        "api-release": "stellar-api",
        "api-chart": API_CHART_IN_IMAGE,
        "deploy-timeout": "600",
    }
    unknown = set(options.parameters) - set(defaults)
    if unknown:
        raise ValueError(f"unknown workflow parameter(s): {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(sorted(defaults))}")
    return {**defaults, **options.parameters}


def _retry(options: RenderOptions, max_duration: str | None = None) -> RetryStrategy:
    # Exit status 2 means bad input or usage (argparse's convention, kept by every stage), or no space left for the
    # stage's output (`steps.core.space`): retrying cannot help.
    return RetryStrategy(
        limit=options.retry_limit,
        retry_policy="Always",
        expression="asInt(lastRetry.exitCode) != 2",
        backoff=m.Backoff(duration=options.backoff_duration, factor=options.backoff_factor,
                          max_duration=max_duration or options.backoff_max_duration),
    )


def _ttl() -> m.TTLStrategy:
    """A finished workflow is deleted after a week: long enough to look at it in the Argo UI."""
    return m.TTLStrategy(seconds_after_completion=7 * 24 * 3600)


def _pod_security() -> m.PodSecurityContext:
    """Every workflow pod runs as the images' non-root user under the runtime's default seccomp profile (the
    Kubernetes "restricted" Pod Security Standard); fsGroup lets that user write the pod's shared volumes."""
    return m.PodSecurityContext(run_as_non_root=True, run_as_user=RUN_AS_USER, run_as_group=RUN_AS_USER,
                                fs_group=RUN_AS_USER, seccomp_profile=m.SeccompProfile(type="RuntimeDefault"))


def _container_security() -> m.SecurityContext:
    """No privilege escalation and no Linux capabilities for any stage container ("restricted" standard)."""
    return m.SecurityContext(allow_privilege_escalation=False, run_as_non_root=True,
                             capabilities=m.Capabilities(drop=["ALL"]))


def _s3_env(options: RenderOptions) -> list[SecretEnv]:
    """S3 credentials for stages that reach the registry or the raw cache themselves."""
    return [SecretEnv(name=name, secret_name=options.s3_secret, secret_key=name, optional=True)
            for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION")]


def _stage(options: RenderOptions, name: str, stage: str, args: list[str], *, params: list[str] = (),
           inputs: list[str] = (), outputs: list[str] = (), cpu: str = "500m", memory: str = "1Gi",
           memory_limit: str = "2Gi", reads_registry: bool = False, reads_location: str | None = None,
           service_account: str | None = None, deadline_seconds: int | None = None,
           max_duration: str | None = None) -> Container:
    """One container template running `python -m steps.<stage> ARGS` in the stage's image; an attempt is stopped
    after `deadline_seconds`, and retries after `max_duration` (by default the options' `attempt_deadline_seconds`
    and `backoff_max_duration`)."""
    return Container(
        name=name,
        image=options.image(stage),
        image_pull_policy=options.image_pull_policy,
        command=["python", "-m", f"steps.{stage}"],
        args=args,
        inputs=[Parameter(name=p) for p in params] + [Artifact(name=a, path=f"{IN}/{a}") for a in inputs],
        outputs=[Artifact(name=a, path=f"{OUT}/{a}") for a in outputs],
        env=_s3_env(options) if reads_registry or stage == "ingest" else None,
        resources=Resources(cpu_request=cpu, memory_request=memory, memory_limit=memory_limit),
        retry_strategy=_retry(options, max_duration),
        active_deadline_seconds=deadline_seconds or options.attempt_deadline_seconds,
        security_context=_container_security(),
        annotations={**({READS_REGISTRY: "registry"} if reads_registry else {}),
                     **({READS_LOCATION: reads_location, PURE_SOURCES: "synthetic"} if reads_location else {})}
        or None,
        service_account_name=service_account,
    )


def _p(name: str) -> str:
    return "{{inputs.parameters.%s}}" % name


def _in(name: str) -> str:
    return "{{inputs.artifacts.%s.path}}" % name


def _out(name: str) -> str:
    return "{{outputs.artifacts.%s.path}}" % name


def _wf(name: str) -> str:
    return "{{workflow.parameters.%s}}" % name


def build_workflow_template(options: RenderOptions | None = None) -> WorkflowTemplate:
    """The `stellar-training` WorkflowTemplate: ingest -> preprocess -> split -> train -> evaluate -> promote ->
    deploy."""
    options = options or RenderOptions()
    parameters = workflow_parameters(options)
    with WorkflowTemplate(
        name=TEMPLATE_NAME,
        namespace=options.namespace,
        entrypoint=ENTRYPOINT,
        service_account_name=options.service_account,
        arguments=[Parameter(name=key, value=value) for key, value in parameters.items()],
        artifact_repository_ref=m.ArtifactRepositoryRef(config_map=options.artifact_repository_configmap,
                                                        key=options.artifact_repository_key),
        labels={"app.kubernetes.io/name": "stellar-pipeline", "app.kubernetes.io/version": options.image_tag},
        ttl_strategy=_ttl(),
        pod_gc=m.PodGC(strategy="OnPodSuccess"),
        # The run's artifacts go when its workflow does (the TTL above, `argo delete`, a CronWorkflow's history
        # limit): nothing reads them after, as the registry keeps every model and report. A deletion that fails
        # (MinIO unreachable) leaves them and lets the workflow go, rather than hold it by its finalizer for ever.
        artifact_gc=m.WorkflowLevelArtifactGC(strategy="OnWorkflowDeletion", force_finalizer_removal=True,
                                              service_account_name=options.artifact_gc_service_account),
        security_context=_pod_security(),
        active_deadline_seconds=options.run_deadline_seconds,
        # Each stage's log is stored beside its artifacts, so the Argo UI still shows it once podGC has deleted the
        # pod (at once, for a stage that succeeded); it goes with them (artifactGC).
        archive_logs=True,
    ) as template:
        ingest = _stage(
            options, "ingest", "ingest",
            [_p("modality"), "--source", _p("source"), "--samples", _p("samples"), "--seed", _p("seed"),
             "--cache", _p("raw-cache"), "--out", _out("raw")],
            params=["modality", "source", "samples", "seed", "raw-cache"], outputs=["raw"],
            cpu="250m", memory="512Mi", memory_limit="1Gi", reads_location="source")
        preprocess = {
            "spectra": _stage(options, "preprocess-spectra", "preprocess",
                              ["spectra", "--in", _in("raw"), "--out", _out("features"), "--length", _p("length"),
                               "--max-bad-fraction", _p("max-bad-fraction")],
                              params=["length", "max-bad-fraction"], inputs=["raw"], outputs=["features"]),
            "photometry": _stage(options, "preprocess-photometry", "preprocess",
                                 ["photometry", "--in", _in("raw"), "--out", _out("features"),
                                  "--max-bad-fraction", _p("max-bad-fraction")],
                                 params=["max-bad-fraction"], inputs=["raw"], outputs=["features"]),
            "lightcurves": _stage(options, "preprocess-lightcurves", "preprocess",
                                  ["lightcurves", "--in", _in("raw"), "--out", _out("features"), "--length",
                                   _p("length"), "--max-bad-fraction", _p("max-bad-fraction")],
                                  params=["length", "max-bad-fraction"], inputs=["raw"], outputs=["features"]),
        }
        split = _stage(
            options, "split-data", "split",
            ["--" + _p("modality"), _in("features"), "--seed", _p("seed"), "--test-fraction", _p("test-fraction"),
             "--val-fraction", _p("val-fraction"), "--out", _out("split")],
            params=["modality", "seed", "test-fraction", "val-fraction"], inputs=["features"], outputs=["split"],
            cpu="250m")
        train = _stage(
            options, "train", "train",
            [_p("model"), "--split", _in("split"), "--out", _out("model"), "--trainer", _p("trainer"),
             "--epochs", _p("epochs"), "--seed", _p("seed")],
            params=["model", "trainer", "epochs", "seed"], inputs=["split"], outputs=["model"],
            cpu="1", memory="2Gi", memory_limit="4Gi", deadline_seconds=options.training_deadline_seconds,
            max_duration=options.training_backoff_max_duration)
        evaluate = _stage(
            options, "evaluate", "evaluate",
            [*(arg for modality in MODALITIES for arg in ("--split", _in(f"split-{modality}"))),
             "--spectral", _in("spectral"), "--lightcurve", _in("lightcurve"), "--sed", _in("sed"),
             "--gates", _p("gates"), "--registry", _p("registry"), "--out", _out("evaluation")],
            params=["gates", "registry"], inputs=[*(f"split-{m}" for m in MODALITIES), *MODALITY],
            outputs=["evaluation"],
            memory_limit="3Gi", reads_registry=True)
        promote = _stage(
            options, "promote", "promote",
            ["--evaluation", _in("evaluation"), "--spectral", _in("spectral"), "--lightcurve", _in("lightcurve"),
             "--sed", _in("sed"), "--registry", _p("registry"), "--out", _out("promotion")],
            params=["registry"], inputs=["evaluation", *MODALITY], outputs=["promotion"],
            cpu="100m", memory="256Mi", memory_limit="512Mi", reads_registry=True)
        deploy = _stage(
            options, "deploy", "deploy",
            ["--promotion", _in("promotion"), "--registry", _p("registry"), "--out", _out("deployment"),
             "--target", _p("target"), "--release", _p("release"), "--namespace", "{{workflow.namespace}}",
             "--chart", _p("chart"), "--timeout", _p("timeout")],
            params=["registry", "target", "release", "chart", "timeout"], inputs=["promotion"],
            outputs=["deployment"],
            cpu="100m", memory="256Mi", memory_limit="512Mi", reads_registry=True,
            service_account=options.deploy_service_account)

        with DAG(name=ENTRYPOINT):
            features = {}
            for modality, archive in MODALITIES.items():
                raw = ingest(name=f"ingest-{archive}", arguments={
                    "modality": modality, "source": _wf(f"{modality}-source"), "samples": _wf("samples"),
                    "seed": _wf("seed"), "raw-cache": _wf("raw-cache")})
                length = {"spectra": {"length": _wf("spectrum-length")},
                          "lightcurves": {"length": _wf("view-length")}}.get(modality, {})
                features[modality] = preprocess[modality](
                    name=f"preprocess-{modality}",
                    arguments=[*_params({**length, "max-bad-fraction": _wf("max-bad-fraction")}),
                               raw.get_artifact("raw").with_name("raw")])
                raw >> features[modality]
            splits = {}
            for modality, task in features.items():  # one split per modality: new spectra retrain only spectra
                splits[modality] = split(
                    name=f"split-{modality}",
                    arguments=[*_params({"modality": modality, "seed": _wf("seed"),
                                         "test-fraction": _wf("test-fraction"), "val-fraction": _wf("val-fraction")}),
                               task.get_artifact("features").with_name("features")])
                task >> splits[modality]
            models = {}
            for model in MODALITY:
                split_task = splits[MODALITY[model]]
                models[model] = train(
                    name=f"train-{model}-model",
                    arguments=[*_params({"model": model, "trainer": _wf("trainer"), "epochs": _wf("epochs"),
                                         "seed": _wf("seed")}),
                               split_task.get_artifact("split").with_name("split")])
                split_task >> models[model]
            model_artifacts = [task.get_artifact("model").with_name(model) for model, task in models.items()]
            evaluate_task = evaluate(
                name="evaluate-models",
                arguments=[*_params({"gates": _wf("gates"), "registry": _wf("registry")}),
                           *(task.get_artifact("split").with_name(f"split-{modality}")
                             for modality, task in splits.items()), *model_artifacts])
            list(models.values()) >> evaluate_task
            promote_task = promote(
                name="promote-models",
                arguments=[*_params({"registry": _wf("registry")}),
                           evaluate_task.get_artifact("evaluation").with_name("evaluation"), *model_artifacts])
            evaluate_task >> promote_task
            deploy_task = deploy(
                name="deploy-api",
                arguments=[*_params({"registry": _wf("registry"), "target": _wf("deploy-target"),
                                     "release": _wf("api-release"), "chart": _wf("api-chart"),
                                     "timeout": _wf("deploy-timeout")}),
                           promote_task.get_artifact("promotion").with_name("promotion")])
            promote_task >> deploy_task
    return template


def _params(values: dict[str, str]) -> list[Parameter]:
    return [Parameter(name=key, value=value) for key, value in values.items()]


def build_cron_workflow(options: RenderOptions | None = None) -> CronWorkflow:
    """`stellar-weekly`: starts the WorkflowTemplate on a schedule (by default never two runs at once)."""
    options = options or RenderOptions()
    return CronWorkflow(
        name=CRON_NAME,
        namespace=options.namespace,
        schedules=list(options.schedules),
        timezone=options.timezone,
        concurrency_policy=options.concurrency_policy,
        starting_deadline_seconds=options.starting_deadline_seconds,
        successful_jobs_history_limit=4,
        failed_jobs_history_limit=4,
        workflow_template_ref=m.WorkflowTemplateRef(name=TEMPLATE_NAME),
        labels={"app.kubernetes.io/name": "stellar-pipeline"},
    )


def build_prune_cron_workflow(options: RenderOptions | None = None) -> CronWorkflow:
    """`stellar-prune`: `stellar models prune` on the registry the runs promote into, on a schedule. It keeps every
    version an alias points at, that one of the newest `keep-rollbacks` rollbacks of production can restore, that
    was rolled back by hand, and the newest `keep-versions` of each model; the runs' own artifacts go with their
    workflows (the template's `artifactGC`)."""
    options = options or RenderOptions()
    arguments = {"registry": workflow_parameters(options)["registry"], "keep-versions": str(options.keep_versions),
                 "keep-rollbacks": str(options.keep_rollbacks)}
    with CronWorkflow(
        name=PRUNE_CRON_NAME,
        namespace=options.namespace,
        schedules=list(options.prune_schedules),
        timezone=options.timezone,
        concurrency_policy="Forbid",
        starting_deadline_seconds=options.starting_deadline_seconds,
        successful_jobs_history_limit=2,
        failed_jobs_history_limit=4,
        entrypoint="prune-registry",
        service_account_name=options.service_account,
        arguments=_params(arguments),
        ttl_strategy=_ttl(),
        pod_gc=m.PodGC(strategy="OnPodSuccess"),
        security_context=_pod_security(),
        labels={"app.kubernetes.io/name": "stellar-pipeline"},
    ) as cron:
        Container(
            name="prune-registry",
            image=options.image("promote"),
            image_pull_policy=options.image_pull_policy,
            command=["stellar", "models", "prune"],
            args=[arg for name in arguments for arg in (f"--{name}", _wf(name))],
            env=_s3_env(options),
            resources=Resources(cpu_request="100m", memory_request="256Mi", memory_limit="512Mi"),
            retry_strategy=_retry(options),
            active_deadline_seconds=options.attempt_deadline_seconds,
            security_context=_container_security(),
        )
    return cron
