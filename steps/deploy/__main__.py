"""`python -m steps.deploy --promotion DIR --registry URI --out DIR [--target local|helm ...]`.

Writes the serving record (`serving.json` at the registry's root): the production version of every model, with
the promotion outcome of this run. The prediction API serves exactly those versions. With `--target local` (the
default, and the local executor's) that is all: a running `stellar serve` follows the registry. With
`--target helm` (the cluster's) it then upgrades the stellar-api Helm release with those versions, atomically
(see steps/deploy/helm.py); a failed rollout exits 1, so Argo retries it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from steps.core.artifacts import ArtifactWriter, read_manifest
from steps.core.logs import get_logger
from steps.core.registry import PRODUCTION, ModelRegistry
from steps.core.space import exit_status

SERVING_RECORD = "serving.json"
TARGETS = ("local", "helm")
log = get_logger("deploy")


def serving_record(registry: ModelRegistry, promotion: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The production version of every model the promotion names (None where there is no production yet), with the
    promotion's outcome, and its reasons where the candidate was refused (its baseline promoted in its place or
    not)."""
    models = {}
    for name, outcome in sorted(promotion.items()):
        version = registry.aliases(name).get(PRODUCTION)
        record = registry.get_version(name, version) if version else None
        candidate = outcome.get("refused_version", outcome["version"])
        models[name] = {"version": version, "blob": record.blob if record else None,
                        "promotion": outcome["outcome"], "candidate": candidate}
        if outcome.get("model") == "baseline":  # the candidate was refused and its baseline took its place
            models[name]["baseline_version"] = outcome["version"]
        if outcome.get("model") == "baseline" or outcome.get("baseline_refused"):  # its baseline was judged too
            models[name]["because"] = outcome.get("because", "no production version yet")
            models[name]["baseline_refused"] = bool(outcome.get("baseline_refused"))
        if outcome["outcome"] == "refused" or "baseline_version" in models[name]:
            models[name]["reasons"] = outcome.get("reasons", [])
    return {"models": models}


def build_parser() -> argparse.ArgumentParser:
    """The deploy stage's arguments (the module docstring says what each does)."""
    parser = argparse.ArgumentParser(prog="python -m steps.deploy", description=__doc__.splitlines()[0])
    parser.add_argument("--promotion", type=Path, required=True, help="output of the promote stage")
    parser.add_argument("--registry", required=True, help="model registry URI (directory or s3://bucket/prefix)")
    parser.add_argument("--out", type=Path, required=True, help="where to write deployment.json")
    parser.add_argument("--target", choices=TARGETS, default="local",
                        help="local: write the serving record only; helm: also upgrade the API's Helm release")
    helm = parser.add_argument_group("--target helm")
    helm.add_argument("--release", default="stellar-api", help="Helm release of the stellar-api chart")
    helm.add_argument("--namespace", help="namespace of the release (the workflow's own in the cluster)")
    helm.add_argument("--chart", help="the stellar-api chart: a directory, a packaged chart or an oci:// reference")
    helm.add_argument("--timeout", type=int, default=600, metavar="SECONDS",
                      help="how long to wait for the new pods to be ready before rolling back")
    return parser


def main(argv: list[str] | None = None) -> int:
    """The deploy stage: record what is served and, with `--target helm`, roll the API out; the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    promotion_file = args.promotion / "promotion.json"
    if not promotion_file.is_file():
        parser.error(f"--promotion {args.promotion}: no promotion.json (not an output of the promote stage)")
    rollout = None
    if args.target == "helm":
        from steps.deploy.helm import Rollout

        if not args.namespace or not args.chart:
            parser.error("--target helm needs --namespace and --chart")
        rollout = Rollout(release=args.release, namespace=args.namespace, chart=args.chart,
                          timeout_seconds=args.timeout)
        try:
            rollout.validate()
        except ValueError as error:
            parser.error(str(error))
    registry = ModelRegistry.open(args.registry)
    record = serving_record(registry, json.loads(promotion_file.read_text()))
    registry.store.put(SERVING_RECORD, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    for name, model in record["models"].items():
        log.info("%s: serving version %s (%s this run)", name, model["version"] or "(none)", model["promotion"])
    deployment = record
    if rollout is not None:
        from steps.deploy.helm import ROLLOUT_FAILED, RolloutError, release_values, unservable, upgrade

        missing = unservable(record)
        if len(missing) == len(record["models"]):
            # The API is ready once one model is loaded: with none to load, a rollout could only time out.
            log.warning("not rolling out %s: no production version of %s yet", rollout.release, ", ".join(missing))
            deployment = {**record, "rollout": {"target": "helm", "skipped": f"no production version of "
                                                f"{', '.join(missing)}"}}
        else:
            values = release_values(record)
            try:
                result = upgrade(rollout, values)
            except RolloutError as error:
                log.error("%s", error)
                return ROLLOUT_FAILED
            log.info("release %s in %s: revision %s, %s", result["release"], result["namespace"],
                     result["revision"], result["status"])
            deployment = {**record, "rollout": {"target": "helm", "chart": rollout.chart, "values": values,
                                                **result}}
    parameters = {"registry": args.registry, "target": args.target,
                  **({"release": rollout.release, "namespace": rollout.namespace, "chart": rollout.chart}
                     if rollout else {})}
    with ArtifactWriter(args.out, stage="deploy", parameters=parameters, inputs={"promotion": args.promotion},
                        synthetic=read_manifest(args.promotion).synthetic) as out:  # as every manifest before it
        out.write_json("deployment.json", deployment)
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main))
