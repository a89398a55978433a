#!/usr/bin/env bash
# `make deploy`: install or upgrade both charts in the stellar namespace, with the images `make kind-load` put on the
# nodes (same registry name and version tag; pulled only when missing). The API starts unready until the first run
# promotes a model: its pods load the registry's production versions, and the pipeline's deploy task then
# rolls them with the versions it promoted.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"

for tool in kubectl helm; do need "$tool"; done
image=(--set-string "image.registry=$IMAGE_REGISTRY" --set-string "image.tag=$VERSION"
  --set-string image.pullPolicy=IfNotPresent)

log "stellar-pipeline: WorkflowTemplate, CronWorkflow, artifact repository, S3 Secret, RBAC"
helm upgrade --install stellar-pipeline "$REPO_ROOT/charts/stellar-pipeline" --namespace "$NAMESPACE" \
  --create-namespace "${image[@]}" --set-string "s3.accessKeyId=$S3_ACCESS_KEY" \
  --set-string "s3.secretAccessKey=$S3_SECRET_KEY" --wait --timeout 2m

# Run again, it keeps what was set on the release since (the model versions the pipeline's deploy task rolled out):
# `helm get values` gives only values set, so the chart's own defaults still come from the chart.
previous="$(mktemp)"
trap 'rm -f "$previous"' EXIT
if helm status stellar-api --namespace "$NAMESPACE" >/dev/null 2>&1; then
  helm get values stellar-api --namespace "$NAMESPACE" --output yaml >"$previous"
fi

log "stellar-api: one replica on nodePort 30080 (http://127.0.0.1:8080 on this host)"
helm upgrade --install stellar-api "$REPO_ROOT/charts/stellar-api" --namespace "$NAMESPACE" --values "$previous" \
  "${image[@]}" --set service.type=NodePort --set service.nodePort=30080 \
  --set autoscaling.enabled=false --set replicaCount=1

kubectl --namespace "$NAMESPACE" get workflowtemplates,cronworkflows,deployments,services
