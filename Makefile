# Every target that needs Python first makes .venv from the lock file (once), so a fresh clone needs only
# `make run` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STELLAR_HOME ?= .stellar
PYTEST_ARGS ?=

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
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

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
