"""The cluster scripts pass shellcheck, kind-config.yaml maps the ports the charts and scripts use, and
`images-check.sh` runs every stage with a stand-in engine."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from steps.core.version import package_version

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "cluster").glob("*.sh"))


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck is not installed (apt-get install -y shellcheck)")
def test_scripts_pass_shellcheck():
    result = subprocess.run(["shellcheck", "--external-sources", *map(str, SCRIPTS)], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_every_make_target_has_its_script():
    makefile = (REPO / "Makefile").read_text()
    for target in ("images", "images-check", "kind-up", "kind-load", "deploy", "submit", "kind-down"):
        assert f"{target}:\n\tbash cluster/{target}.sh" in makefile
        assert (REPO / "cluster" / f"{target}.sh").is_file()


def test_kind_maps_the_api_and_argo_ui_node_ports():
    config = yaml.safe_load((REPO / "kind-config.yaml").read_text())
    assert [node["role"] for node in config["nodes"]] == ["control-plane", "worker"]
    mappings = {m["containerPort"]: m["hostPort"] for m in config["nodes"][0]["extraPortMappings"]}
    argo = yaml.safe_load((REPO / "cluster" / "values" / "argo-workflows.yaml").read_text())
    assert mappings == {30080: 8080, argo["server"]["serviceNodePort"]: 2746}
    assert "service.nodePort=30080" in (REPO / "cluster" / "deploy.sh").read_text()


def test_chart_versions_are_pinned_and_images_never_latest():
    kind_up = (REPO / "cluster" / "kind-up.sh").read_text()
    assert 'ARGO_CHART_VERSION="${ARGO_CHART_VERSION:-2.0.1}"' in kind_up
    assert 'MINIO_CHART_VERSION="${MINIO_CHART_VERSION:-5.4.0}"' in kind_up
    assert kind_up.count("--version") == 2
    ref = subprocess.run(["bash", "-c", "source cluster/lib.sh && image_ref api"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert ref == f"ghcr.io/stellar-pipeline/stellar-api:{package_version()}"  # the charts' default image


def test_minio_and_the_pipeline_chart_get_the_same_credentials(tmp_path):
    """`S3_ACCESS_KEY=... make kind-up` sets MinIO's root user; `make deploy` must put the same credentials in the
    chart's S3 Secret, or every stage and the API get 403 from MinIO. kind, kubectl and helm are stubs that log
    their arguments."""
    stubs, calls = tmp_path / "bin", tmp_path / "calls.log"
    stubs.mkdir()
    for tool in ("kind", "kubectl", "helm"):
        (stubs / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> "{calls}"\n')
        (stubs / tool).chmod(0o755)
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "HOME": str(tmp_path), "S3_ACCESS_KEY": "key-1",
           "S3_SECRET_KEY": "secret-1"}
    for script in ("kind-up.sh", "deploy.sh"):
        subprocess.run(["bash", f"cluster/{script}"], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    installs = {line.split()[3]: line for line in calls.read_text().splitlines() if line.startswith("helm upgrade")}
    assert "rootUser=key-1" in installs["minio"] and "rootPassword=secret-1" in installs["minio"]
    assert "s3.accessKeyId=key-1" in installs["stellar-pipeline"]
    assert "s3.secretAccessKey=secret-1" in installs["stellar-pipeline"]
    # run again, `make deploy` keeps the values set on the API release since (the models the pipeline rolled out)
    assert "helm get values stellar-api --namespace stellar --output yaml" in calls.read_text()
    assert " --values " in installs["stellar-api"]


def test_deploy_keeps_the_pipeline_release_values_and_sets_the_schedule_it_is_given(tmp_path):
    """`make deploy` run again keeps a schedule set on the stellar-pipeline release; `SCHEDULE=... TIMEZONE=...
    make deploy` sets one (as JSON, so that a list in a cron field stays one schedule)."""
    stubs, calls = tmp_path / "bin", tmp_path / "calls.log"
    stubs.mkdir()
    for tool in ("kubectl", "helm"):
        (stubs / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> "{calls}"\n')
        (stubs / tool).chmod(0o755)
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "HOME": str(tmp_path)}
    subprocess.run(["bash", "cluster/deploy.sh"], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    first = [line for line in calls.read_text().splitlines()
             if line.startswith("helm upgrade --install stellar-pipeline")]
    assert "helm get values stellar-pipeline --namespace stellar --output yaml" in calls.read_text()
    assert " --values " in first[0] and "cron." not in first[0]

    calls.unlink()
    env.update(SCHEDULE="0 4 * * 2,5", TIMEZONE="Europe/Paris")
    subprocess.run(["bash", "cluster/deploy.sh"], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    [install] = [line for line in calls.read_text().splitlines()
                 if line.startswith("helm upgrade --install stellar-pipeline")]
    assert '--set-json cron.schedules=["0 4 * * 2,5"] --set-json cron.timezone="Europe/Paris"' in install


@pytest.mark.parametrize("context", [None, "other-cluster"])
def test_every_cluster_call_names_the_kind_context_whichever_is_current(tmp_path, context):
    """A user who switched kubectl to another cluster since `make kind-up` must not deploy or submit there: every
    kubectl, helm and argo call of deploy and submit carries the kind cluster's context, or the one KUBE_CONTEXT
    names; kind-up's always the cluster it made."""
    stubs, calls = tmp_path / "bin", tmp_path / "calls.log"
    stubs.mkdir()
    for tool in ("kind", "kubectl", "helm", "argo"):
        (stubs / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> "{calls}"\n'
                                  + ('[ "$1" = submit ] && echo wf-1\n' if tool == "argo" else "")
                                  + ('case "$*" in *phase*) printf Succeeded;; esac\n' if tool == "kubectl" else ""))
        (stubs / tool).chmod(0o755)
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "HOME": str(tmp_path), **({"KUBE_CONTEXT": context} if context else {})}
    kind_up_calls = 0
    for script in ("kind-up.sh", "deploy.sh", "submit.sh"):
        result = subprocess.run(["bash", f"cluster/{script}"], cwd=REPO, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        if script == "kind-up.sh":
            kind_up_calls = len([line for line in calls.read_text().splitlines() if not line.startswith("kind ")])
    lines = [line for line in calls.read_text().splitlines() if not line.startswith("kind ")]
    assert {line.split()[0] for line in lines} == {"kubectl", "helm", "argo"}
    assert not any("use-context" in line for line in lines)  # the user's current context is left as it was
    assert kind_up_calls > 0
    for number, line in enumerate(lines):
        flag = "--kube-context" if line.startswith("helm ") else "--context"
        # kind-up installs into the cluster it made, whatever KUBE_CONTEXT names; deploy and submit obey it
        expected = "kind-stellar" if number < kind_up_calls else (context or "kind-stellar")
        assert line.endswith(f" {flag} {expected}"), line


def test_submit_reports_the_phase_when_the_watch_is_cut_short(tmp_path):
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "argo").write_text('#!/bin/sh\n[ "$1" = submit ] && echo wf-1 && exit 0\nexit 1\n')
    (stubs / "kubectl").write_text("#!/bin/sh\nprintf Running\n")
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    result = subprocess.run(["bash", "cluster/submit.sh"], cwd=REPO, capture_output=True, text=True,
                            env={"PATH": f"{stubs}:/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 1
    assert "argo watch stopped before the workflow ended" in result.stderr
    assert "workflow wf-1 is still Running: follow it with argo watch --namespace stellar wf-1" in result.stderr


@pytest.mark.parametrize("status, installed", [("Error: release: not found", True),
                                               ("Error: Kubernetes cluster unreachable", False)])
def test_deploy_starts_from_defaults_only_where_no_release_is_there(tmp_path, status, installed):
    """A release not there installs from the chart's defaults; a release that cannot be read stops the deploy
    rather than reset the values set on it."""
    stubs, calls = tmp_path / "bin", tmp_path / "calls.log"
    stubs.mkdir()
    (stubs / "kubectl").write_text(f'#!/bin/sh\necho "kubectl $*" >> "{calls}"\n')
    (stubs / "helm").write_text(f'#!/bin/sh\necho "helm $*" >> "{calls}"\n'
                                f'if [ "$1" = status ]; then echo "{status}" >&2; exit 1; fi\n')
    for tool in ("kubectl", "helm"):
        (stubs / tool).chmod(0o755)
    result = subprocess.run(["bash", "cluster/deploy.sh"], cwd=REPO, capture_output=True, text=True,
                            env={"PATH": f"{stubs}:/usr/bin:/bin", "HOME": str(tmp_path)})
    assert (result.returncode == 0) is installed
    upgrades = [line for line in calls.read_text().splitlines() if line.startswith("helm upgrade")]
    assert "helm get values" not in calls.read_text()
    if installed:
        assert len(upgrades) == 2
    else:
        assert not upgrades and f"helm status stellar-pipeline: {status}" in result.stderr


@pytest.mark.parametrize("phase", ["Succeeded", "Failed", "Error"])
def test_submit_exits_non_zero_unless_the_workflow_succeeded(tmp_path, phase):
    """`argo submit --watch` exits 0 once the workflow ends, failed or not, so `make submit` reported a failed run
    as a success. argo and kubectl are stubs: argo names the workflow, kubectl gives its phase."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "argo").write_text('#!/bin/sh\n[ "$1" = submit ] && echo stellar-training-abc12\nexit 0\n')
    (stubs / "kubectl").write_text(f'#!/bin/sh\necho "$*" > "{tmp_path}/kubectl.args"\nprintf {phase}\n')
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    result = subprocess.run(["bash", "cluster/submit.sh", "-p", "samples=50"], cwd=REPO, capture_output=True,
                            text=True, env={"PATH": f"{stubs}:/usr/bin:/bin", "HOME": str(tmp_path)})
    assert (result.returncode == 0) == (phase == "Succeeded"), result.stderr
    assert "get workflow stellar-training-abc12" in (tmp_path / "kubectl.args").read_text()
    if phase != "Succeeded":
        assert f"workflow stellar-training-abc12 ended {phase}" in result.stderr


def test_images_are_built_without_default_attestations(tmp_path):
    """With Docker's containerd image store, a provenance attestation beside each image made `kind load` fail
    ("content digest ... not found"). The engine is a stub that logs what it is asked and with which variable."""
    engine, calls = tmp_path / "engine", tmp_path / "calls.log"
    engine.write_text(f'#!/bin/sh\necho "attestations-off=$BUILDX_NO_DEFAULT_ATTESTATIONS $1" >> "{calls}"\n')
    engine.chmod(0o755)
    subprocess.run(["bash", "cluster/images.sh"], cwd=REPO, capture_output=True, text=True, check=True,
                   env={**os.environ, "ENGINE": str(engine), "IMAGES": "ingest"})
    builds = [line for line in calls.read_text().splitlines() if line.endswith(" build")]
    assert builds == ["attestations-off=1 build"] * 3  # the two bases and the ingest image


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.skipif(shutil.which("curl") is None, reason="images-check.sh asks the API with curl")
def test_images_check_runs_every_stage_as_the_dag_does_with_a_stand_in_engine(tmp_path):
    """`cluster/images-check.sh` with `tests/images/fake_engine.py` as its engine: each stage's arguments, the
    per-modality split and the API's readiness on what the stages promoted, checked against the stages themselves
    where no container can run (the real images: `test_images.py`, with STELLAR_IMAGE_TESTS=1)."""
    engine = tmp_path / "engine"
    engine.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{REPO / "tests/images/fake_engine.py"}" "$@"\n')
    engine.chmod(0o755)
    env = {**os.environ, "ENGINE": str(engine), "SKIP_BUILD": "1", "API_PORT": str(free_port()),
           "FAKE_ENGINE_STATE": str(tmp_path / "state"), "TMPDIR": str(tmp_path), "TRAINER": "baseline"}
    result = subprocess.run(["bash", "cluster/images-check.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    for step in ("stellar-split --spectra", "stellar-split --photometry", "stellar-split --lightcurves",
                 "stellar-train sed", "stellar-deploy --promotion", "stellar-api ready", "images-check passed"):
        assert step in result.stderr
