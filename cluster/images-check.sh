#!/usr/bin/env bash
# `make images-check`: build the images (unless SKIP_BUILD=1), then run them as the cluster would, on this machine:
# every stage container in the DAG's order, each on mounted input folders writing its output folder (small synthetic
# data), the deploy container (--target local), and the API container with a read-only root filesystem, which must
# answer /readyz with 200 once it has loaded the production models the stages just promoted.
#   SAMPLES   objects per modality (default 200, as `make run`: enough for every model to pass the default gates)
#   TRAINER   the train stage's --trainer (default auto, as the WorkflowTemplate: the Keras models where TensorFlow
#             is in the image; baseline trains the NumPy baselines in seconds)
#   EPOCHS    the train stage's --epochs (default 100, as the WorkflowTemplate; early stopping ends sooner)
#   API_PORT  loopback port for the API (default 18000)
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"

ENGINE="$(container_engine)"
SAMPLES="${SAMPLES:-200}"
TRAINER="${TRAINER:-auto}"
EPOCHS="${EPOCHS:-100}"
API_PORT="${API_PORT:-18000}"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  bash "$REPO_ROOT/cluster/images.sh"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/stellar-images-check.XXXXXX")"
api_container="stellar-images-check-api-$$"
cleanup() {
  "$ENGINE" rm --force "$api_container" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work"/{raw,features,models,out}
chmod -R 0777 "$work"  # the containers run as uid 10001, not as the owner of these folders

# run STAGE [ARGS...]: `python -m steps.STAGE ARGS` in the stage's image, as the WorkflowTemplate runs it, with
# the work folder mounted read-only at /in, and /out and /registry writable; no network.
run() {
  local stage="$1" started
  shift
  started=$(date +%s)
  "$ENGINE" run --rm --network none \
    --volume "$work:/in:ro" --volume "$work/out:/out" --volume "$work/registry:/registry" \
    "$(image_ref "$stage")" python -m "steps.$stage" "$@"
  log "stellar-$stage ${1:-}: $(($(date +%s) - started)) s"
}
# publish OUT NAME: move a stage's output from /out into the input tree for the next stages.
publish() { mv "$work/out/$1" "$work/$2"; }

mkdir -p "$work/registry" && chmod 0777 "$work/registry"
for modality in spectra photometry lightcurves; do
  run ingest "$modality" --source synthetic --samples "$SAMPLES" --seed 42 \
    --cache /out/raw-cache --out "/out/raw-$modality"
  publish "raw-$modality" "raw/$modality"
done
run preprocess spectra --in /in/raw/spectra --out /out/spectra --length 1024 \
  --max-bad-fraction 0.2
run preprocess photometry --in /in/raw/photometry --out /out/photometry \
  --max-bad-fraction 0.2
run preprocess lightcurves --in /in/raw/lightcurves --out /out/lightcurves --length 201 \
  --max-bad-fraction 0.2
for modality in spectra photometry lightcurves; do publish "$modality" "features/$modality"; done
# one split per modality, as the DAG's split-spectra, split-photometry and split-lightcurves tasks
for modality in spectra photometry lightcurves; do
  run split "--$modality" "/in/features/$modality" --seed 42 --test-fraction 0.2 --val-fraction 0.1 \
    --out "/out/split-$modality"
  publish "split-$modality" "split-$modality"
done
declare -A split_of=([spectral]=spectra [lightcurve]=lightcurves [sed]=photometry)
for model in spectral lightcurve sed; do
  run train "$model" --split "/in/split-${split_of[$model]}" --out "/out/$model" --trainer "$TRAINER" \
    --epochs "$EPOCHS" --seed 42
  publish "$model" "models/$model"
done
gates="$(cat "$REPO_ROOT/steps/evaluate/default_gates.yaml")"
models=(--spectral /in/models/spectral --lightcurve /in/models/lightcurve --sed /in/models/sed)
splits=(--split /in/split-spectra --split /in/split-photometry --split /in/split-lightcurves)
run evaluate "${splits[@]}" "${models[@]}" --gates "$gates" --registry /registry \
  --out /out/evaluation
publish evaluation evaluation
run promote --evaluation /in/evaluation "${models[@]}" --registry /registry \
  --out /out/promotion
publish promotion promotion
run deploy --promotion /in/promotion --registry /registry --out /out/deployment \
  --target local
test -f "$work/out/deployment/manifest.json" || die "the deploy container wrote no manifest"
# The prune CronWorkflow's command, in its image: one version of each model, all among the newest 5: nothing goes.
pruned="$("$ENGINE" run --rm --network none --volume "$work/registry:/registry" "$(image_ref promote)" \
  stellar models prune --registry /registry --keep-versions 5 --keep-rollbacks 10)"
[[ "$pruned" == *"registry: nothing to prune" ]] || die "stellar models prune in the promote image said: $pruned"
log "every stage container ran; served: $(tr -d '\n ' <"$work/registry/serving.json" | head -c 300)"

# The API as the stellar-api chart runs it: read-only root, writable emptyDir-like /tmp and /var/lib/stellar.
# Kubernetes makes the emptyDir volumes writable through fsGroup; here the tmpfs options do (podman 4 ignores a
# tmpfs mode under --read-only, its U option gives the mount to the container's user instead).
writable="mode=1777"
[[ "$ENGINE" == podman ]] && writable="U"
"$ENGINE" run --detach --name "$api_container" --read-only \
  --tmpfs "/tmp:$writable" --tmpfs "/var/lib/stellar:$writable" \
  --volume "$work/registry:/var/lib/stellar-registry:ro" --publish "127.0.0.1:$API_PORT:8000" \
  "$(image_ref api)" --registry /var/lib/stellar-registry >/dev/null
started=$(date +%s)
until [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$API_PORT/readyz")" == 200 ]]; do
  running="$("$ENGINE" inspect --format '{{.State.Running}}' "$api_container" 2>/dev/null || echo false)"
  if [[ "$running" != true ]] || (($(date +%s) - started > 180)); then
    "$ENGINE" logs "$api_container" >&2 || true
    die "the API container is not ready (running: $running, after $(($(date +%s) - started)) s)"
  fi
  sleep 2
done
log "stellar-api ready after $(($(date +%s) - started)) s: $(curl -s "http://127.0.0.1:$API_PORT/readyz")"
served="$(curl -s "http://127.0.0.1:$API_PORT/v1/models")"  # not piped into head: its SIGPIPE fails pipefail
printf '%s\n' "${served:0:400}" >&2
echo >&2
log "images-check passed"
