"""The images: each image's part of the lock is complete and TensorFlow-free where it should be, the Dockerfiles
match the WorkflowTemplate, and (with STELLAR_IMAGE_TESTS=1 and podman or docker) they build and run."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from workflows.pipeline import API_CHART_IN_IMAGE, RUN_AS_USER
from workflows.render import WORKFLOW_TEMPLATE_FILE, rendered_documents

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
TF_IMAGES = {"train", "evaluate", "api"}
TF_ONLY = {"tensorflow", "keras", "h5py", "grpcio", "protobuf", "ml-dtypes", "libclang"}
TEST_ONLY = {"pytest", "moto", "flask", "croniter", "kubernetes-validate", "jsonschema", "helm-python-sdk"}


@pytest.fixture(scope="module")
def lock_subset():
    spec = importlib.util.spec_from_file_location("lock_subset", IMAGES / "lock_subset.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def names(module, **options) -> set[str]:
    blocks = module.select(REPO / "requirements.lock", REPO / "pyproject.toml",
                           **{"without": set(), "with_": set(), "only_for": set(), **options})
    return {module.canonical(block.split("==", 1)[0]) for block in blocks}


def test_the_base_lock_has_no_tensorflow_and_no_test_tools(lock_subset):
    base = names(lock_subset, without={"tensorflow"})
    assert base.isdisjoint(TF_ONLY | TEST_ONLY)
    assert {"numpy", "boto3", "fastapi", "hera", "lightkurve", "pyarrow"} <= base


def test_tensorflow_layer_is_exactly_what_the_base_lacks(lock_subset):
    base = names(lock_subset, without={"tensorflow"})
    tf = names(lock_subset, only_for={"tensorflow"})
    assert TF_ONLY <= tf and base.isdisjoint(tf)
    assert base | tf == names(lock_subset)  # together: the whole runtime closure, test tools excluded


def test_each_subset_is_closed_under_its_packages_requirements(lock_subset):
    """What pip would have resolved, checked against the installed distributions' own metadata rather than the
    lock's comments: every requirement of a selected package is selected too (the project may lack TensorFlow)."""
    for subset, allowed in ((names(lock_subset, without={"tensorflow"}), {"tensorflow"}),
                            (names(lock_subset), set()),
                            (names(lock_subset, without={"tensorflow"}, with_={"helm-python-sdk"}), {"tensorflow"})):
        for name in subset | {"stellar-pipeline"}:
            for text in metadata.requires(name) or []:
                requirement = Requirement(text)
                if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                    continue
                needed = lock_subset.canonical(requirement.name)
                assert needed in subset or (name == "stellar-pipeline" and needed in allowed), f"{name} needs {text}"


def test_selected_entries_keep_their_hashes(lock_subset):
    blocks = lock_subset.select(REPO / "requirements.lock", None, set(), {"helm-python-sdk"}, set())
    assert len(blocks) == 1 and blocks[0].startswith("helm-python-sdk==") and "--hash=sha256:" in blocks[0]


def test_there_is_an_image_for_every_stage_the_template_runs():
    template = rendered_documents()[WORKFLOW_TEMPLATE_FILE]
    stages = {re.search(r"/stellar-(\w+):", t["container"]["image"]).group(1)
              for t in template["spec"]["templates"] if "container" in t}
    assert {path.parent.name for path in IMAGES.glob("*/Dockerfile")} == stages | {"api", "base"}


def base_target(stage: str) -> str:
    result = subprocess.run(["bash", "-c", f'source cluster/lib.sh && base_target {stage}'], cwd=REPO,
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


@pytest.mark.parametrize("stage", ["ingest", "preprocess", "split", "train", "evaluate", "promote", "deploy", "api"])
def test_only_train_evaluate_and_api_build_on_the_tensorflow_base(stage):
    assert base_target(stage) == ("runtime-tf" if stage in TF_IMAGES else "runtime")
    dockerfile = (IMAGES / stage / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE" in dockerfile and "FROM ${BASE_IMAGE}" in dockerfile
    assert f'org.opencontainers.image.title="stellar-{stage}"' in dockerfile
    assert "tensorflow" not in dockerfile.lower() or stage in TF_IMAGES


def test_the_base_runs_as_the_user_the_pods_name_and_keeps_build_tools_out():
    dockerfile = (IMAGES / "base" / "Dockerfile").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in dockerfile
    assert f"--uid {RUN_AS_USER}" in dockerfile and f"USER {RUN_AS_USER}:{RUN_AS_USER}" in dockerfile
    assert "--require-hashes --no-deps" in dockerfile
    runtime = dockerfile[dockerfile.index("AS runtime"):]
    assert "pip install" not in runtime  # everything is installed in the build stages


def test_the_deploy_image_carries_the_chart_where_the_template_looks():
    dockerfile = (IMAGES / "deploy" / "Dockerfile").read_text()
    assert f"COPY charts/stellar-api {API_CHART_IN_IMAGE}" in dockerfile


def engine() -> str | None:
    for candidate in ("podman", "docker"):
        if shutil.which(candidate) and subprocess.run([candidate, "info"], capture_output=True).returncode == 0:
            return candidate
    return None


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.skipif(os.environ.get("STELLAR_IMAGE_TESTS") != "1",
                    reason="image builds take many minutes: set STELLAR_IMAGE_TESTS=1 (with podman or docker) to run")
def test_images_build_and_run_every_stage_and_the_api():
    """`make images-check`: builds every image, runs each stage container on mounted folders in the DAG's order,
    and the API container (read-only root) until /readyz answers 200."""
    found = engine()
    if found is None:
        pytest.skip("no working podman or docker engine on this machine")
    result = subprocess.run(["bash", "cluster/images-check.sh"], cwd=REPO, env={**os.environ, "ENGINE": found},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "images-check passed" in result.stderr
