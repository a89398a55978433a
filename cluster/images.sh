#!/usr/bin/env bash
# `make images`: build the base images and every stage image with docker (or podman when `docker info` fails),
# tagged $IMAGE_REGISTRY/stellar-<name>:<package version>. Prints each image's build time and size.
#   PYTHON_IMAGE  base of everything (default python:3.11-slim)
#   WHEELS        a folder of the locked wheels and sdists (pip download -r requirements.lock) to install from
#                 instead of the index, for offline builds; optional
#   IMAGES        which stage images to build (default: all of them)
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"

ENGINE="$(container_engine)"
# One manifest per image, no provenance attestation beside it: with Docker's containerd image store, `kind load`
# fails on an attestation it cannot find the content of ("content digest ... not found", kind #3795). podman and the
# classic builder ignore the variable.
export BUILDX_NO_DEFAULT_ATTESTATIONS=1
PYTHON_IMAGE="${PYTHON_IMAGE:-python:3.11-slim}"
read -r -a wanted <<<"${IMAGES:-${STAGE_IMAGES[*]}}"
REVISION="$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

# A small build context: only what the Dockerfiles copy (never .venv, caches or local runs).
context="$REPO_ROOT/build/images/context"
rm -rf "$context"
mkdir -p "$context/wheels" "$context/charts"
cp -r "$REPO_ROOT"/{requirements.lock,pyproject.toml,README.md,steps,workflows,images} "$context/"
cp -r "$REPO_ROOT/charts/stellar-api" "$context/charts/"
find "$context" -name __pycache__ -prune -exec rm -rf {} +
if [[ -n "${WHEELS:-}" ]]; then
  [[ -d "$WHEELS" ]] || die "WHEELS=$WHEELS is not a folder"
  cp -l "$WHEELS"/* "$context/wheels/" 2>/dev/null || cp "$WHEELS"/* "$context/wheels/"
fi

build() {  # name dockerfile [build args...]
  local name="$1" dockerfile="$2" started
  shift 2
  started=$(date +%s)
  log "building $(image_ref "$name") ($ENGINE)"
  "$ENGINE" build --file "$dockerfile" --tag "$(image_ref "$name")" \
    --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --build-arg "VERSION=$VERSION" \
    --build-arg "REVISION=$REVISION" --build-arg "CREATED=$CREATED" "$@" "$context"
  printf '%-16s built in %4d s\n' "stellar-$name" "$(($(date +%s) - started))" >>"$REPO_ROOT/build/images/times.txt"
}

: >"$REPO_ROOT/build/images/times.txt"
build base "$context/images/base/Dockerfile" --target runtime
build base-tf "$context/images/base/Dockerfile" --target runtime-tf
for name in "${wanted[@]}"; do
  case "$name" in
    base | base-tf) continue ;;
  esac
  [[ -f "$context/images/$name/Dockerfile" ]] || die "no images/$name/Dockerfile"
  base="base"
  [[ "$(base_target "$name")" == runtime-tf ]] && base="base-tf"
  build "$name" "$context/images/$name/Dockerfile" --build-arg "BASE_IMAGE=$(image_ref "$base")"
done

cat "$REPO_ROOT/build/images/times.txt"
for name in base base-tf "${wanted[@]}"; do
  "$ENGINE" image inspect --format "{{.Size}}" "$(image_ref "$name")" |
    awk -v n="stellar-$name" '{printf "%-16s %6.0f MB\n", n, $1 / 1e6}'
done
