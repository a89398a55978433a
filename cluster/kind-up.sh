#!/usr/bin/env bash
# `make kind-up`: a kind cluster (kind-config.yaml) with MinIO and Argo Workflows from their official Helm charts,
# at pinned versions, the buckets the pipeline uses, and the namespace the stellar charts go to. Idempotent.
#   S3_ACCESS_KEY / S3_SECRET_KEY   MinIO's root credentials (default: the stellar-pipeline chart's dev-only values;
#                                   `make deploy` puts the same ones in the chart's S3 Secret)
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"
KUBE_CONTEXT="kind-$CLUSTER_NAME"  # what it installs goes to the cluster it made, whatever KUBE_CONTEXT says

ARGO_CHART_VERSION="${ARGO_CHART_VERSION:-2.0.1}"  # Argo Workflows v4.1.1 (chart 2.0.1 release notes)
MINIO_CHART_VERSION="${MINIO_CHART_VERSION:-5.4.0}"

for tool in kind kubectl helm; do need "$tool"; done

if kind get clusters 2>/dev/null | grep -x "$CLUSTER_NAME" >/dev/null; then  # not -q: kind would die of SIGPIPE
  log "kind cluster $CLUSTER_NAME exists"
else
  log "creating kind cluster $CLUSTER_NAME"
  kind create cluster --name "$CLUSTER_NAME" --config "$REPO_ROOT/kind-config.yaml" --wait 120s
fi

helm repo add argo https://argoproj.github.io/argo-helm --force-update >/dev/null
helm repo add minio https://charts.min.io/ --force-update >/dev/null
helm repo update argo minio >/dev/null

log "installing MinIO (chart $MINIO_CHART_VERSION) with buckets stellar and stellar-artifacts"
helm upgrade --install minio minio/minio --version "$MINIO_CHART_VERSION" \
  --namespace minio --create-namespace --values "$REPO_ROOT/cluster/values/minio.yaml" \
  --set-string "rootUser=$S3_ACCESS_KEY" --set-string "rootPassword=$S3_SECRET_KEY" --wait --timeout 5m

log "installing Argo Workflows (chart $ARGO_CHART_VERSION)"
helm upgrade --install argo-workflows argo/argo-workflows --version "$ARGO_CHART_VERSION" \
  --namespace argo --create-namespace --values "$REPO_ROOT/cluster/values/argo-workflows.yaml" \
  --wait --timeout 5m

# The stellar namespace: Pod Security "restricted" is audited and warned about (every pod of the charts meets
# it, tests/charts checks that); enforced is "baseline", so that a stricter check in a future Argo executor
# cannot stop the pipeline.
kubectl create namespace "$NAMESPACE" --dry-run=client --output yaml | kubectl apply --filename - >/dev/null
kubectl label namespace "$NAMESPACE" --overwrite \
  pod-security.kubernetes.io/enforce=baseline \
  pod-security.kubernetes.io/warn=restricted \
  pod-security.kubernetes.io/audit=restricted >/dev/null

log "cluster ready: next make kind-load, make deploy, make submit (Argo UI: http://127.0.0.1:2746)"
