#!/usr/bin/env bash
# `make kind-load`: copy the stage and API images (built by `make images`, tagged with the package version, never
# `latest`) into every node of the kind cluster. Goes through an image archive, so docker and podman both work.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"

need kind
ENGINE="$(container_engine)"
archive_dir="$(mktemp -d "${TMPDIR:-/tmp}/stellar-kind-load.XXXXXX")"
trap 'rm -rf "$archive_dir"' EXIT

for name in "${STAGE_IMAGES[@]}"; do
  ref="$(image_ref "$name")"
  "$ENGINE" image inspect "$ref" >/dev/null 2>&1 || die "$ref is not built (make images)"
  log "loading $ref into kind cluster $CLUSTER_NAME"
  "$ENGINE" save --output "$archive_dir/$name.tar" "$ref"
  kind load image-archive "$archive_dir/$name.tar" --name "$CLUSTER_NAME"
  rm -f "$archive_dir/$name.tar"
done
