#!/usr/bin/env bash
# `make submit`: run the training pipeline now, from the installed WorkflowTemplate, and follow it to the end.
# Extra arguments go to `argo submit`, e.g. `bash cluster/submit.sh -p samples=500`.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"

need argo
argo submit --namespace "$NAMESPACE" --from workflowtemplate/stellar-training --watch "$@"
