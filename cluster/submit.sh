#!/usr/bin/env bash
# `make submit`: run the training pipeline now, from the installed WorkflowTemplate, and follow it to the end.
# Exits non-zero unless the workflow succeeded (`argo submit --watch` exits 0 whatever the workflow's phase).
# Extra arguments go to `argo submit`, e.g. `bash cluster/submit.sh -p samples=500`.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"

for tool in argo kubectl; do need "$tool"; done
name="$(argo submit --namespace "$NAMESPACE" --from workflowtemplate/stellar-training --output name "$@")"
log "submitted $name"
# a watch cut short (a dropped connection) still ends in the workflow's phase below, not in a silent exit
argo watch --namespace "$NAMESPACE" "$name" || log "argo watch stopped before the workflow ended"
phase="$(kubectl --namespace "$NAMESPACE" get workflow "$name" --output 'jsonpath={.status.phase}')"
case "$phase" in
  Succeeded) ;;
  Failed | Error) die "workflow $name ended $phase: argo get --namespace $NAMESPACE $name" ;;
  *) die "workflow $name is still ${phase:-pending}: follow it with argo watch --namespace $NAMESPACE $name" ;;
esac
log "workflow $name succeeded"
