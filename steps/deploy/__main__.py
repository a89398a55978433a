"""`python -m steps.deploy --promotion DIR --registry URI --out DIR`.

Writes the serving record (`serving.json` at the registry's root): the production version of every model, with
the promotion outcome of this run. The prediction API serves exactly those versions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from steps.core.artifacts import ArtifactWriter
from steps.core.logs import get_logger
from steps.core.registry import PRODUCTION, ModelRegistry

SERVING_RECORD = "serving.json"
log = get_logger("deploy")


def serving_record(registry: ModelRegistry, promotion: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The production version of every model the promotion names (None where there is no production yet)."""
    models = {}
    for name, outcome in sorted(promotion.items()):
        version = registry.aliases(name).get(PRODUCTION)
        record = registry.get_version(name, version) if version else None
        models[name] = {"version": version, "blob": record.blob if record else None,
                        "promotion": outcome["outcome"], "candidate": outcome["version"]}
    return {"models": models}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m steps.deploy", description=__doc__.splitlines()[0])
    parser.add_argument("--promotion", type=Path, required=True, help="output of the promote stage")
    parser.add_argument("--registry", required=True, help="model registry URI (directory or s3://bucket/prefix)")
    parser.add_argument("--out", type=Path, required=True, help="where to write deployment.json")
    args = parser.parse_args(argv)
    promotion_file = args.promotion / "promotion.json"
    if not promotion_file.is_file():
        parser.error(f"--promotion {args.promotion}: no promotion.json (not an output of the promote stage)")
    registry = ModelRegistry.open(args.registry)
    record = serving_record(registry, json.loads(promotion_file.read_text()))
    registry.store.put(SERVING_RECORD, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    for name, model in record["models"].items():
        log.info("%s: serving version %s (%s this run)", name, model["version"] or "(none)", model["promotion"])
    with ArtifactWriter(args.out, stage="deploy", parameters={"registry": args.registry},
                        inputs={"promotion": args.promotion}) as out:
        out.write_json("deployment.json", record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
