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

# Run again, it keeps what was set on each release since (a schedule; the model versions the pipeline's deploy task
# rolled out): `helm get values` gives only values set, so the charts' own defaults still come from the charts.
kept="$(mktemp -d)"
trap 'rm -rf "$kept"' EXIT
# Only a release that is not there starts from the chart's defaults: any other failure to read it (a timeout, RBAC)
# stops here rather than reset what was set on it.
for release in stellar-pipeline stellar-api; do
  : >"$kept/$release.yaml"
  if status="$(helm status "$release" --namespace "$NAMESPACE" 2>&1)"; then
    helm get values "$release" --namespace "$NAMESPACE" --output yaml >"$kept/$release.yaml"
  elif [[ "$status" != *"release: not found"* ]]; then
    die "helm status $release: $status"
  fi
done

# SCHEDULE (one cron line: the chart's values.schema.json checks it as Argo would) and TIMEZONE (IANA) set the
# CronWorkflow; unset, the release keeps its own (the chart's default: Monday 03:00 UTC).
json_string() { local text="${1//\\/\\\\}"; printf '"%s"' "${text//\"/\\\"}"; }
cron=() # expanded as ${cron[@]+...}: bash before 4.4 (macOS's 3.2) calls an empty array unbound under set -u
if [[ -n "${SCHEDULE:-}" ]]; then cron+=(--set-json "cron.schedules=[$(json_string "$SCHEDULE")]"); fi
if [[ -n "${TIMEZONE:-}" ]]; then cron+=(--set-json "cron.timezone=$(json_string "$TIMEZONE")"); fi

log "stellar-pipeline: WorkflowTemplate, CronWorkflows, artifact repository, S3 Secret, RBAC"
helm upgrade --install stellar-pipeline "$REPO_ROOT/charts/stellar-pipeline" --namespace "$NAMESPACE" \
  --create-namespace --values "$kept/stellar-pipeline.yaml" "${image[@]}" ${cron[@]+"${cron[@]}"} \
  --set-string "s3.accessKeyId=$S3_ACCESS_KEY" --set-string "s3.secretAccessKey=$S3_SECRET_KEY" --wait --timeout 2m

log "stellar-api: one replica on nodePort 30080 (http://127.0.0.1:8080 on this host)"
helm upgrade --install stellar-api "$REPO_ROOT/charts/stellar-api" --namespace "$NAMESPACE" \
  --values "$kept/stellar-api.yaml" "${image[@]}" --set service.type=NodePort --set service.nodePort=30080 \
  --set autoscaling.enabled=false --set replicaCount=1

kubectl --namespace "$NAMESPACE" get workflowtemplates,cronworkflows,deployments,services
