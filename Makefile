# Every target that needs Python first makes .venv from the lock file (once), so a fresh clone needs only
# `make run` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STELLAR_HOME ?= .stellar
PYTEST_ARGS ?=
# make test's pytest-xdist workers (tests/conftest.py groups the tests so that shared fixtures are made once)
TEST_WORKERS ?= 2

.PHONY: venv run test test-fast render golden lock serve clean

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

## The main job on the embedded default: the whole DAG on synthetic data, on this machine.
run: venv
	$(BIN)/stellar run --home $(STELLAR_HOME)

## The test suite (includes an end-to-end run at small size).
test: venv
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

## Write the Argo objects (WorkflowTemplate, CronWorkflow) that the chart ships.
render: venv
	$(BIN)/stellar render --out rendered

## Regenerate the golden rendered YAML after an intended change to the DAG (review the diff).
golden: venv
	STELLAR_UPDATE_GOLDEN=1 $(BIN)/python -m pytest -q tests/workflows/test_pipeline.py -k golden

serve: venv
	$(BIN)/stellar serve --home $(STELLAR_HOME)

## Re-resolve the lock file after changing dependencies in pyproject.toml (needs uv: pip install uv).
lock:
	uv pip compile pyproject.toml --extra test --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --generate-hashes -o requirements.lock

clean:
	rm -rf $(VENV) $(STELLAR_HOME) rendered

# ---------------------------------------------------------------------------------------------------------------
# cluster: stage images, a kind cluster with Argo Workflows and MinIO, both Helm charts, a run (README: On a cluster).
# The scripts are in cluster/; each says what it needs (docker or podman; kind, kubectl, helm, argo).
.PHONY: images images-check kind-up kind-load deploy submit kind-down chart-sync

## Build the base and every stage image, tagged with the package version (docker, or podman without a docker engine).
images:
	bash cluster/images.sh

## Build, then run every stage container on mounted folders and the API container until /readyz answers 200.
images-check:
	bash cluster/images-check.sh

## A kind cluster with MinIO and Argo Workflows (pinned chart versions) and the stellar namespace.
kind-up:
	bash cluster/kind-up.sh

## Load the images into the kind nodes.
kind-load:
	bash cluster/kind-load.sh

## Install or upgrade charts/stellar-pipeline and charts/stellar-api in the stellar namespace.
deploy:
	bash cluster/deploy.sh

## Run the pipeline on the cluster now and watch it (argo submit --from workflowtemplate/stellar-training --watch).
submit:
	bash cluster/submit.sh

kind-down:
	bash cluster/kind-down.sh

## Regenerate the chart files derived from workflows/pipeline.py (after `make golden`; review the diff).
chart-sync: venv
	$(BIN)/python charts/sync.py
