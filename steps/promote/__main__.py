"""`python -m steps.promote --evaluation DIR --spectral DIR --lightcurve DIR --sed DIR --registry URI --out DIR`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from steps.core.artifacts import ArtifactWriter, checked_content_hash, read_manifest
from steps.core.logs import get_logger
from steps.core.names import MODEL_NAMES
from steps.core.registry import CANDIDATE, PRODUCTION, ModelRegistry, RegistryError, RolledBack
from steps.core.space import exit_status
from steps.evaluate import BASELINES, NO_PRODUCTION

log = get_logger("promote")


def promote(evaluation: Path, models: dict[str, Path], registry: ModelRegistry) -> dict[str, dict[str, Any]]:
    """Register each model (idempotent), alias it `candidate`, and make it `production` when its verdict passed,
    unless someone rolled production back from that very version (a retrain that reproduces it is not promoted
    again until someone promotes it by hand).

    A refused model whose verdict carries a passing `fallback` (no production version existed, or production was
    a baseline: see the evaluate stage) has its baseline, from the evaluation's `baselines/<model>/`, registered
    and made `production` instead.
    The production alias moves only if it still points where it pointed when the evaluation ran, so a verdict
    reached against one production version is never applied over another.
    """
    verdicts = json.loads((evaluation / "verdict.json").read_text())
    metrics = json.loads((evaluation / "metrics.json").read_text())
    baseline = json.loads((evaluation / "production.json").read_text())
    outcomes = {}
    for name, model_dir in models.items():
        verdict = verdicts[name]
        record = registry.register_evaluated(name, model_dir, evaluation, metrics.get(name, {}), verdict)
        registry.set_alias(name, CANDIDATE, record.version)
        compared_with = (baseline.get(name) or {}).get("version")
        outcome = {"version": record.version, "previous": compared_with, "reasons": verdict.get("reasons", [])}
        fallback = verdict.get("fallback") or {}
        if fallback:  # the refused model's baseline was judged too: why, and its reasons
            outcome.update({"because": fallback.get("because") or NO_PRODUCTION,
                            "reasons": [*outcome["reasons"], *(f"baseline: {r}" for r in fallback["reasons"])]})
        if fallback and not fallback.get("passed"):
            outcome["baseline_refused"] = True
        if not verdict.get("passed") and fallback.get("passed"):
            baseline_dir = evaluation / BASELINES / name
            fallback_metrics = {**metrics.get(name, {}), "model": metrics.get(name, {}).get("baseline")}
            record = registry.register_evaluated(name, baseline_dir, evaluation, fallback_metrics,
                                                 {**fallback, "instead_of": record.version})
            outcome.update({"refused_version": outcome["version"], "version": record.version, "model": "baseline"})
            verdict = fallback
            log.info("%s: the model (version %s) was refused (%s): its baseline (version %s) passed the gates",
                     name, outcome["refused_version"], outcome["because"], record.version)
        if not verdict.get("passed"):
            outcome["outcome"] = "refused"
            if compared_with == record.version:
                log.warning("%s version %s: production itself fails the current gates; it stays served", name,
                            record.version)
            else:
                log.info("%s version %s: refused by the quality gates", name, record.version)
        elif compared_with == record.version:
            outcome["outcome"] = "unchanged"
            log.info("%s version %s: already production", name, record.version)
        else:
            try:
                registry.set_alias(name, PRODUCTION, record.version, expected=compared_with, automatic=True)
                outcome["outcome"] = "promoted"
                log.info("%s: production %s -> %s", name, compared_with or "(none)", record.version)
            except RolledBack as error:
                outcome["outcome"] = "refused"
                outcome["reasons"] = [*outcome["reasons"], str(error)]
                log.info("%s version %s: passed the gates, but was rolled back by hand: not promoted again", name,
                         record.version)
            except RegistryError as error:
                outcome["outcome"] = "refused"
                outcome["reasons"] = [*outcome["reasons"], f"production moved during the run: {error}"]
                log.warning("%s: not promoted: %s", name, error)
        outcomes[name] = outcome
    return outcomes


def main(argv: list[str] | None = None) -> int:
    """The promote stage's command line (the module docstring); the exit status."""
    parser = argparse.ArgumentParser(prog="python -m steps.promote", description=__doc__)
    parser.add_argument("--evaluation", type=Path, required=True, help="output of the evaluate stage")
    for name in MODEL_NAMES:
        parser.add_argument(f"--{name}", type=Path, required=True, help=f"the trained {name} model directory")
    parser.add_argument("--registry", required=True, help="model registry URI (directory or s3://bucket/prefix)")
    parser.add_argument("--out", type=Path, required=True, help="where to write promotion.json")
    args = parser.parse_args(argv)
    models = {name: getattr(args, name) for name in MODEL_NAMES}
    for label, path in [("--evaluation", args.evaluation), *((f"--{n}", p) for n, p in models.items())]:
        if not (path / "manifest.json").is_file():
            parser.error(f"{label} {path}: not a finished artifact (no manifest.json)")
    try:  # every model checked before any is registered: a refusal leaves no promotion half done
        for path in models.values():
            checked_content_hash(path)
    except ValueError as error:
        log.error("%s", error)
        return 2
    outcomes = promote(args.evaluation, models, ModelRegistry.open(args.registry))
    with ArtifactWriter(args.out, stage="promote", parameters={"registry": args.registry},
                        inputs={"evaluation": args.evaluation, **models},
                        synthetic=read_manifest(args.evaluation).synthetic) as out:  # as every manifest before it
        out.write_json("promotion.json", outcomes)
        out.count("promoted", sum(o["outcome"] == "promoted" for o in outcomes.values()))
        out.count("refused", sum(o["outcome"] == "refused" for o in outcomes.values()))
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main))
