#!/usr/bin/env bash
# `make kind-down`: delete the kind cluster and everything in it (MinIO's data included).
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"

need kind
kind delete cluster --name "$CLUSTER_NAME"
