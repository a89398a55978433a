#!/usr/bin/env bash
# Shared settings of the cluster scripts (sourced, not run). Every one can be overridden from the environment.
# shellcheck disable=SC2034  # the scripts that source this use the variables

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The package version: the tag of every image, never `latest`.
VERSION="${VERSION:-$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO_ROOT/pyproject.toml")}"
IMAGE_REGISTRY="${IMAGE_REGISTRY:-ghcr.io/stellar-pipeline}"
# Images: the two bases, then one per stage and the API (stage -> the base target it builds on).
STAGE_IMAGES=(ingest preprocess split train evaluate promote deploy api)
CLUSTER_NAME="${CLUSTER_NAME:-stellar}"
# MinIO's root credentials (kind-up.sh) are the ones the stellar-pipeline chart's S3 Secret carries (deploy.sh); the
# defaults are that chart's dev-only values.
S3_ACCESS_KEY="${S3_ACCESS_KEY:-stellar-dev}"
S3_SECRET_KEY="${S3_SECRET_KEY:-stellar-dev-only-not-a-secret}"
NAMESPACE="${NAMESPACE:-stellar}"
# The kubeconfig context every kubectl, helm and argo call uses: the kind cluster's, whatever context is current (a
# user who switched to another cluster since `make kind-up` must not deploy there by accident).
KUBE_CONTEXT="${KUBE_CONTEXT:-kind-$CLUSTER_NAME}"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
need() { type -P "$1" >/dev/null 2>&1 || die "$1 is not installed (see README.md, On a cluster)"; }

# The cluster tools, held to KUBE_CONTEXT (the flag goes last: each parses flags after its arguments).
kubectl() { command kubectl "$@" --context "$KUBE_CONTEXT"; }
helm() { command helm "$@" --kube-context "$KUBE_CONTEXT"; }
argo() { command argo "$@" --context "$KUBE_CONTEXT"; }

# The base target a stage image builds on: only train, evaluate and the API carry TensorFlow.
base_target() {
  case "$1" in
    train | evaluate | api) echo runtime-tf ;;
    *) echo runtime ;;
  esac
}

image_ref() { echo "$IMAGE_REGISTRY/stellar-$1:$VERSION"; }

# docker when its engine answers, else podman (a docker client without an engine is common).
container_engine() {
  if [[ -n "${ENGINE:-}" ]]; then
    echo "$ENGINE"
  elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    echo docker
  elif command -v podman >/dev/null 2>&1; then
    echo podman
  else
    die "neither a working docker engine nor podman found"
  fi
}

[[ -n "$VERSION" && "$VERSION" != latest ]] || die "no usable version in pyproject.toml"
