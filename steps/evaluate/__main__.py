"""`python -m steps.evaluate --split DIR [--split DIR ...] [--spectral DIR] [--lightcurve DIR] [--sed DIR]
[--gates YAML_OR_PATH] [--production-metrics FILE | --registry URI] --out DIR`.

Measures each given model, its null predictor and (for a Keras model) its NumPy baseline, trained here on the
same split, on the split's test rows, compares with the production version measured again on those rows (its
recorded metrics where it cannot be), applies the
gates, and publishes `metrics.json` ({model: {"model", "null", "baseline"}}), `verdict.json` ({model: {"passed",
"reasons", "checks", "fallback"}}), `production.json` ({model: {"version", "metrics", "source"} | null}),
`baselines/<model>/` (model directories), `predictions/<model>.parquet` (and the baseline's,
`predictions/<model>_baseline.parquet`), `report.md`, and `report.html` with its `plots/*.png` (the baseline's too
where it is promoted in the model's place).
Exit status: 0 when the evaluation is complete, whether or not the models passed; 2 bad usage or input
(invalid gates, a missing or mismatched directory) or no space left (`steps.core.space`); 1 anything else.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import pyarrow as pa

from steps.core.artifacts import ArtifactWriter, read_manifest
from steps.core.logs import get_logger
from steps.core.names import MODALITY, MODEL_NAMES
from steps.core.registry import RegistryError
from steps.core.space import exit_status
from steps.evaluate import (
    BASELINES,
    judge_all,
    evaluate_model,
    production_from_file,
    measure_production_here,
    production_from_registry,
    report,
)
from steps.evaluate.gates import GateError, parse_gates
from steps.evaluate.report import residual_axes, write_report
from steps.models.splits import split_holding

log = get_logger("evaluate")


def main(argv: list[str] | None = None) -> int:
    """Run the stage; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m steps.evaluate", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", type=Path, required=True, action="append",
                        help="split directory (its test rows are used); repeat it for splits of other modalities")
    for name in MODEL_NAMES:
        parser.add_argument(f"--{name}", type=Path, help=f"the trained {name} model directory")
    parser.add_argument("--gates", default=None,
                        help="quality gates: YAML text or the path of a YAML file (default: the packaged gates)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--production-metrics", default=None, metavar="FILE",
                        help='JSON {"<model>": {"version": ..., "metrics": {...}} | null}; empty or missing: '
                             "no production version")
    source.add_argument("--registry", default=None, metavar="URI",
                        help="model registry (directory or s3://bucket/prefix) whose production versions to compare")
    parser.add_argument("--out", type=Path, required=True, help="evaluation directory to publish")
    args = parser.parse_args(argv)

    models = {name: getattr(args, name) for name in MODEL_NAMES if getattr(args, name) is not None}
    if not models:
        parser.error("give at least one model directory (--spectral, --lightcurve, --sed)")
    for label, path in [*(("--split", s) for s in args.split), *((f"--{n}", p) for n, p in models.items())]:
        if not (path / "manifest.json").is_file():
            parser.error(f"{label} {path}: not a finished artifact (no manifest.json)")
    try:
        gates = parse_gates(args.gates)
        splits = {name: split_holding(args.split, MODALITY[name], f"--{name}") for name in models}
    except (GateError, FileNotFoundError) as error:
        parser.error(str(error))

    scratch = tempfile.TemporaryDirectory(prefix="baselines-")  # the baselines, until the artifact is written
    try:
        evaluations = [evaluate_model(name, path, splits[name], Path(scratch.name) / name)
                       for name, path in models.items()]
        if args.registry:
            production = production_from_registry(args.registry, list(models))
            measure_production_here(args.registry, production, models, splits, Path(scratch.name) / "production",
                                    gates, {ev.name: ev.baseline_dir for ev in evaluations if ev.baseline_dir})
        else:
            production = production_from_file(args.production_metrics, list(models))
    except (FileNotFoundError, ValueError, RegistryError) as error:  # RegistryError: a record that does not parse
        log.error("%s", error)
        scratch.cleanup()
        return 2
    verdicts = judge_all(evaluations, gates, production)
    synthetic_data = {name: read_manifest(splits[name]).synthetic or read_manifest(path).synthetic
                      for name, path in models.items()}  # per model: one run may mix real and generated data
    synthetic = any(synthetic_data.values())
    parameters = {"gates": gates.model_dump(mode="json"),
                  "production": {n: (p or {}).get("version") for n, p in production.items()}}
    with ArtifactWriter(args.out, stage="evaluate", parameters=parameters,
                        inputs={**_split_inputs(splits), **models}, synthetic=synthetic) as out:
        out.write_json("metrics.json", {ev.name: {"model": ev.model, "null": ev.null,
                                                  **({"baseline": ev.baseline} if ev.baseline else {})}
                                        for ev in evaluations})
        for ev in evaluations:
            if ev.baseline_dir is not None:
                shutil.copytree(ev.baseline_dir, out.path(f"{BASELINES}/{ev.name}"))
        out.write_json("verdict.json", {name: verdict.as_dict() for name, verdict in verdicts.items()})
        out.write_json("production.json", production)
        for ev in evaluations:
            out.write_table(f"predictions/{ev.name}.parquet", pa.Table.from_pandas(ev.predictions,
                                                                                   preserve_index=False))
            if ev.baseline_predictions is not None:
                out.write_table(f"predictions/{ev.name}_baseline.parquet",
                                pa.Table.from_pandas(ev.baseline_predictions, preserve_index=False))
            out.count(f"{ev.name}_test_rows", ev.model.get("n_test", 0))
        out.path("report.md").write_text(report(evaluations, verdicts, production, synthetic_data))
        write_report(out.path("report.md").parent, evaluations, verdicts, production, synthetic_data,
                     against=residual_axes(splits))
        out.count("passed", sum(v.passed for v in verdicts.values()))
        out.count("refused", sum(not v.passed for v in verdicts.values()))
    scratch.cleanup()
    for name, verdict in verdicts.items():
        failed = [r for r in verdict.reasons if r.startswith("FAIL")]
        log.info("%s: %s%s", name, "passed the gates" if verdict.passed else "refused: ",
                 "" if verdict.passed else "; ".join(failed))
        if verdict.fallback is not None:
            log.info("%s: %s; its baseline %s", name, verdict.fallback_because,
                     "passed the gates: the promote step registers it in the model's place" if verdict.fallback.passed
                     else "was refused too")
    return 0


def _split_inputs(splits: dict[str, Path]) -> dict[str, Path]:
    """The manifest's split inputs: `split` when one split served every model, else one `split-<modality>` each."""
    if len(set(splits.values())) == 1:
        return {"split": next(iter(splits.values()))}
    return {f"split-{MODALITY[name]}": path for name, path in splits.items()}


if __name__ == "__main__":
    sys.exit(exit_status(main))
