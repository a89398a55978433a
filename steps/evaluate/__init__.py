"""Evaluate stage: measure each trained model, its null predictor and its NumPy baseline on the test split, and
apply the gates.

`python -m steps.evaluate --split DIR --spectral DIR --lightcurve DIR --sed DIR [--gates YAML_OR_PATH]
[--production-metrics FILE | --registry URI] --out DIR` writes `metrics.json`, `verdict.json`, `production.json`,
`predictions/<model>.parquet`, `report.md` and, for each Keras model, `baselines/<model>/`: the baseline trained
on the same split (seconds, deterministic), which the gates compare the model with and which promotion takes instead
when the model is refused and no production version exists yet, or production is a baseline too. A model refused by
the gates is a result, not an error. The SED model and its baseline are also measured on the test stars with Gaia's
G, BP and RP alone (`metrics.json` `gaia_bands_only`; reported, not gated), the photometry most Gaia stars have; the
spectral model and its baseline also on the FGK test stars alone (`fgk`: 4000-7000 K by their label, the stars the
issue's targets are set on), so that the weekly report gives the figures the README quotes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from steps.core.logs import get_logger
from steps.ingest.bands import gaia_bands_only
from steps.evaluate.gates import Gates, ModelGates, Verdict, fmt, judge
from steps.models import MODALITY, load_model, null_for
from steps.models.domain import outside
from steps.models.inputs import Columns
from steps.models.io import object_keys
from steps.models.metrics import classification_metrics, period_metrics, regression_metrics
from steps.models.splits import read_split
from steps.train import train_from_split

log = get_logger("evaluate")
NO_PRODUCTION = "no production version yet"  # why a refused model's baseline may start the registry
BASELINES = "baselines"  # folder of the evaluation artifact holding the baselines trained for comparison
GAIA_ONLY = "gaia_bands_only"  # SED metrics of the test stars with Gaia's bands alone (reported, not gated)
FGK = "fgk"  # spectral metrics of the FGK test stars alone (reported, not gated)
FGK_TEFF = (4000.0, 7000.0)  # K, by the test star's label


@dataclass
class Evaluation:
    """One model measured on the test split."""

    name: str
    task: str
    outputs: list[str]  # targets (regression) or classes (classification)
    model: dict[str, Any]
    null: dict[str, Any]
    predictions: pd.DataFrame
    info: dict[str, Any]
    baseline: dict[str, Any] | None = None  # test metrics of the NumPy baseline (None: the model is one)
    baseline_dir: Path | None = None
    baseline_predictions: pd.DataFrame | None = None  # the baseline's, as `predictions` (plotted where it is promoted)


def domain_summary(predicted: pd.DataFrame) -> dict[str, Any] | None:
    """How many predicted objects the domain check put outside the training domain (None: no check ran)."""
    if "in_domain" not in predicted or not predicted["in_domain"].notna().any():
        return None
    flags = predicted["in_domain"][predicted["in_domain"].notna()]
    count = int(outside(flags).sum())
    return {"objects": int(len(flags)), "outside": count, "share_outside": count / len(flags)}


def test_metrics(task: str, outputs: list[str], test: pa.Table, predicted: pd.DataFrame) -> dict[str, Any]:
    """Metrics of one predictor's `predict_table` output against the test table's truth."""
    cols = Columns(test)
    if task == "regression":
        targets = {}
        for target in outputs:
            truth = cols.scalar(target) if cols.has(target) else np.full(cols.n, np.nan)
            err = predicted[f"{target}_err"].to_numpy(np.float64) if f"{target}_err" in predicted else None
            targets[target] = regression_metrics(truth, predicted[target].to_numpy(np.float64), err, intervals=True)
        out = {"task": task, "n_test": cols.n, "targets": targets}
    else:
        proba = predicted[[f"p_{c}" for c in outputs]].to_numpy(np.float64)
        out = {"task": task, "n_test": cols.n,
               **classification_metrics(cols.strings("class"), proba, outputs, intervals=True)}
        if "period" in predicted and cols.has("period_true"):
            out["period"] = period_metrics(cols.scalar("period_true"), predicted["period"].to_numpy(np.float64))
    domain = domain_summary(predicted)
    if domain is not None:
        out["domain"] = domain
    return out


CLASS_METRICS = ("accuracy", "balanced_accuracy", "roc_auc_macro", "log_loss")
PERIOD_METRICS = (("within_1pct", "share within 1%"), ("within_1pct_harmonic", "share within 1% or of a harmonic"),
                  ("median_abs_log10_ratio", "median |log10 ratio|"), ("n", "objects with a true period"),
                  ("n_predicted", "objects given a period"))


REGRESSION_ROWS = ("robust_sigma", "rmse", "bias", "outlier_fraction", "coverage_68", "coverage_95")
INTERVAL_NOTE = ("In brackets: the 16th and 84th percentiles of the figure over 1,000 bootstrap resamples of the test "
                 "objects (how far another draw of as many objects may move it).")


def with_interval(metrics: dict[str, Any], metric: str) -> str:
    """A metric in 4 significant digits, with its bootstrap interval where evaluation measured one."""
    interval, value = metrics.get(f"{metric}_interval"), metrics.get(metric)
    return fmt(value) + (f" [{fmt(interval[0])}, {fmt(interval[1])}]" if interval and value is not None else "")


def regression_rows(outputs: list[str], sources: list[dict[str, Any]],
                    metrics: tuple[str, ...] = REGRESSION_ROWS) -> list[list[str]]:
    """The regression rows (target, metric, one value per source) of the reports' metrics tables."""
    return [[target, metric, *(with_interval(source.get("targets", {}).get(target) or {}, metric)
                               for source in sources)] for target in outputs for metric in metrics]


def metrics_table(ev: "Evaluation", production: dict[str, Any] | None) -> tuple[list[str], list[list[str]]]:
    """The reports' main metrics table of one model (header, rows): model, null predictor, baseline and production
    on the test split; where production was measured on the test objects new to it only, its column says how many,
    and one more column gives the model on those same objects (what the gates compared)."""
    production = production or {}
    columns = ["model", "null", "baseline", "production"]
    sources = [ev.model, ev.null, ev.baseline or {}, production.get("metrics") or {}]
    if production.get("candidate_metrics"):
        new = production["measured_here"]
        columns[-1] = f"production (on the {new} test objects new to it)"
        columns.append(f"model (on those {new})")
        sources.append(production["candidate_metrics"])
    if ev.task == "regression":
        return ["target", "metric", *columns], regression_rows(ev.outputs, sources)
    return ["metric", *columns], classification_rows(sources)


def classification_rows(sources: list[dict[str, Any]]) -> list[list[str]]:
    """The classifier rows of the reports' metrics tables, one value per source (model, null, baseline,
    production): the class metrics, then the period estimate's where a source has one."""
    rows = [[metric, *(with_interval(source, metric) for source in sources)] for metric in CLASS_METRICS]
    if any(source.get("period") for source in sources):
        rows += [[f"period: {label}", *(fmt((source.get("period") or {}).get(key)) for source in sources)]
                 for key, label in PERIOD_METRICS]
    return rows


# The reports' extra tables: metrics of a part or a variant of the test split, by their key in metrics.json
SUBSET_TITLES = {GAIA_ONLY: "The same test stars with Gaia's G, BP and RP alone (the photometry of most Gaia stars)",
                 FGK: f"The FGK test stars alone ({FGK_TEFF[0]:.0f}-{FGK_TEFF[1]:.0f} K by their label)"}


def subset_rows(ev: "Evaluation", key: str) -> list[list[str]]:
    """The reports' rows (target, metric, model, baseline) of the test split's part or variant `key`."""
    return regression_rows(ev.outputs, [(m or {}).get(key) or {} for m in (ev.model, ev.baseline)],
                           ("robust_sigma", "rmse", "coverage_68"))


DOMAIN_CHECKS = {"spectral": ", or farther off the training spectra's leading components than 99% of them, or with "
                             "fainter lines than all but 0.1%",
                 "lightcurve": ", or with a period outside the training curves' range"}


def domain_sentence(domain: dict[str, Any], name: str) -> str:
    """The report's line on model `name`'s domain check (each modality's own checks named)."""
    return (f"Domain check: {domain['outside']} of {domain['objects']} test objects "
            f"({domain['share_outside']:.1%}) lie farther from every training object than 95% of training objects "
            f"from their nearest neighbour{DOMAIN_CHECKS.get(name, '')} (in_domain false; about 5% is expected of "
            "objects like the training ones).")


def evaluate_model(name: str, model_dir: str | os.PathLike, split_dir: str | os.PathLike,
                   baseline_dir: str | os.PathLike | None = None, leaving_out: set[str] | None = None) -> Evaluation:
    """Predict the test split with the model and with its null predictor (fitted on the training split); with
    `baseline_dir`, a Keras model's NumPy baseline is trained there on the same split and measured too. Test rows
    whose key (`io.object_keys`) is in `leaving_out` are left out (the objects another model learnt from)."""
    model = load_model(model_dir)
    if model.name != name:
        raise ValueError(f"--{name} {model_dir}: holds a {model.name!r} model, not {name!r}")
    tables, spec, _ = read_split(split_dir, MODALITY[name])
    test = tables["test"]
    if leaving_out:
        test = test.filter(pa.array([key not in leaving_out for key in object_keys(test)]))
    try:
        predicted = model.predict_table(test, blank_beyond_labels=False)
    except (KeyError, ValueError, TypeError) as error:
        raise ValueError(f"{name}: the model cannot read the test split of {split_dir}: {error}") from None
    null = null_for(model, tables["train"])
    null_predicted = null.predict_table(test)
    outputs = list(model.targets if model.task == "regression" else model.classes)
    metrics_model = test_metrics(model.task, outputs, test, predicted)
    metrics_null = test_metrics(model.task, outputs, test, null_predicted)
    gaia_only = gaia_bands_only(test, spec["bands"]) if name == "sed" and spec.get("bands") else None
    if gaia_only is not None:
        metrics_model[GAIA_ONLY] = test_metrics(model.task, outputs, test,
                                                model.predict_table(gaia_only, blank_beyond_labels=False))
    fgk = _fgk_rows(test) if name == "spectral" else None
    if fgk is not None:
        metrics_model[FGK] = _rows_metrics(model.task, outputs, test, predicted, fgk)
    evaluation = Evaluation(name, model.task, outputs, metrics_model, metrics_null,
                            prediction_frame(model.task, outputs, test, predicted), model.info)
    if baseline_dir is not None and (model.info.get("training") or {}).get("trainer") == "keras":
        trained = train_from_split(name, split_dir, baseline_dir, trainer="baseline")
        baseline = load_model(trained)
        baseline_predicted = baseline.predict_table(test, blank_beyond_labels=False)
        evaluation.baseline = test_metrics(model.task, outputs, test, baseline_predicted)
        evaluation.baseline_predictions = prediction_frame(model.task, outputs, test, baseline_predicted)
        if gaia_only is not None:
            evaluation.baseline[GAIA_ONLY] = test_metrics(
                model.task, outputs, test, baseline.predict_table(gaia_only, blank_beyond_labels=False))
        if fgk is not None:
            evaluation.baseline[FGK] = _rows_metrics(model.task, outputs, test, baseline_predicted, fgk)
        evaluation.baseline_dir = Path(trained)
    return evaluation


def prediction_frame(task: str, outputs: list[str], test: pa.Table, predicted: pd.DataFrame) -> pd.DataFrame:
    """One row per test object: its id, truth and prediction (with 1-sigma errors, or class probabilities), and the
    domain check's answer: what `predictions/<model>.parquet` holds and the plots show."""
    cols = Columns(test)
    frame: dict[str, Any] = {"id": cols.raw("id") if cols.has("id") else list(range(cols.n))}
    if task == "regression":
        for target in outputs:
            frame[f"{target}_true"] = cols.scalar(target) if cols.has(target) else np.full(cols.n, np.nan)
            frame[target], frame[f"{target}_err"] = predicted[target].to_numpy(), predicted[f"{target}_err"].to_numpy()
    else:
        frame["class_true"] = cols.strings("class") if cols.has("class") else [None] * cols.n
        frame["class"] = predicted["class"].to_numpy(dtype=object)
        frame.update({f"p_{c}": predicted[f"p_{c}"].to_numpy() for c in outputs})
        if "period" in predicted:
            frame["period"] = predicted["period"].to_numpy()
        if cols.has("period_true"):
            frame["period_true"] = cols.scalar("period_true")
    frame.update({c: predicted[c].to_numpy() for c in ("domain_distance", "in_domain") if c in predicted})
    return pd.DataFrame(frame, index=pd.RangeIndex(cols.n))


def _fgk_rows(test: pa.Table) -> np.ndarray | None:
    """Where the test stars' labelled Teff is in FGK_TEFF (None: none is, or there is no Teff label)."""
    cols = Columns(test)
    if not cols.has("teff"):
        return None
    teff = cols.scalar("teff")
    rows = (teff >= FGK_TEFF[0]) & (teff <= FGK_TEFF[1])
    return rows if rows.any() else None


def _rows_metrics(task: str, outputs: list[str], test: pa.Table, predicted: pd.DataFrame,
                  rows: np.ndarray) -> dict[str, Any]:
    """`test_metrics` of the test rows where `rows` is true."""
    return test_metrics(task, outputs, test.filter(pa.array(rows)), predicted[rows].reset_index(drop=True))


def _normalise_production(entry: Any, name: str, source: str) -> dict[str, Any] | None:
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise ValueError(f"{source}: {name}: expected an object or null, got {type(entry).__name__}")
    version = entry.get("version")
    metrics = entry.get("metrics", entry)
    if isinstance(metrics, dict) and isinstance(metrics.get("model"), dict):
        metrics = metrics["model"]
    metrics = {k: v for k, v in (metrics or {}).items() if k != "version"} or None
    return {"version": None if version is None else str(version), "metrics": metrics, "source": source}


def production_from_file(path: str | None, names: list[str]) -> dict[str, dict[str, Any] | None]:
    """Production metrics from a JSON file `{model: {"version", "metrics"} | {metrics...} | null}`.

    An empty path or a missing file means there is no production version; a malformed file is a ValueError.
    """
    if not path:
        return {name: None for name in names}
    file = Path(path)
    if not file.is_file():
        log.warning("--production-metrics %s: no such file; comparing with no production version", path)
        return {name: None for name in names}
    try:
        data = json.loads(file.read_text() or "{}")
    except json.JSONDecodeError as error:
        raise ValueError(f"--production-metrics {path}: not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"--production-metrics {path}: expected an object keyed by model name")
    return {name: _normalise_production(data.get(name), name, f"--production-metrics {path}") for name in names}


def production_from_registry(uri: str, names: list[str]) -> dict[str, dict[str, Any] | None]:
    """The recorded test metrics of each model's `production` version in the registry (None where unset)."""
    from steps.core.registry import PRODUCTION, CorruptRecord, ModelRegistry, RegistryError

    registry = ModelRegistry.open(uri)
    out: dict[str, dict[str, Any] | None] = {}
    for name in names:
        try:
            record = registry.resolve(name, PRODUCTION)
        except CorruptRecord:  # not "no production": a run must not promote over a record it cannot read
            raise
        except RegistryError:
            out[name] = None
            continue
        out[name] = _normalise_production({"version": record.version, "metrics": record.metrics}, name,
                                          f"registry {uri}")
    return out


def measure_production_here(uri: str, production: dict[str, dict[str, Any] | None], models: dict[str, Path],
                            splits: dict[str, Path], scratch: Path, gates: Gates,
                            baselines: dict[str, Path] | None = None) -> None:
    """Replace, in `production`, each production version's recorded test metrics by the same metrics measured on
    this run's test objects that it did not learn from (its `training_ids.json`), and where some test objects are
    left out so, add the candidate's metrics on the same objects (`candidate_metrics`), and its baseline's where
    `baselines` has one (`baseline_metrics`). Each version's `trainer` ("keras", "baseline") is noted where its
    files could be read (`judge_all` refreshes a baseline in production only where it says so). The recorded ones
    come from the split of the run that promoted it: over the few dozen test objects of a split a robust sigma
    scatters by more than `max_regression` (the same ridge, retrained on new draws, gave 20.5-36.3 K), so a
    comparison across splits passed or refused by chance. Where a version cannot be measured here (its files are
    gone, its input spec does not fit this split, it does not record what it learnt from, or fewer test objects
    are new to it than the gates' `min_rows`), its recorded metrics stay, all of them, and its `source` says why."""
    from steps.core.registry import ModelRegistry, RegistryError
    from steps.models.io import MODEL_JSON, TRAINING_IDS

    registry = ModelRegistry.open(uri)
    for name, entry in production.items():
        if not entry or not entry.get("version") or name not in splits:
            continue
        try:
            _, model_dir = registry.download(name, entry["version"], scratch / name)
            entry["trainer"] = (json.loads((model_dir / MODEL_JSON).read_text()).get("training") or {}).get("trainer")
            if not (model_dir / TRAINING_IDS).is_file():
                raise ValueError("it does not record which objects it learnt from (trained before it did)")
            learnt = set(json.loads((model_dir / TRAINING_IDS).read_text()))
            test_ids = object_keys(read_split(splits[name], MODALITY[name])[0]["test"])
            new = sum(key not in learnt for key in test_ids)
            if new < gates.for_model(name).min_rows:
                raise ValueError(f"only {new} of this split's {len(test_ids)} test objects are new to it")
            measured = {"metrics": evaluate_model(name, model_dir, splits[name], leaving_out=learnt).model,
                        "measured_here": new}
            if new < len(test_ids):  # the candidate too, on the same objects
                others = {"candidate_metrics": models[name], "baseline_metrics": (baselines or {}).get(name)}
                measured.update({key: evaluate_model(name, path, splits[name], leaving_out=learnt).model
                                 for key, path in others.items() if path is not None})
            entry.update(measured)
        except (RegistryError, ValueError, KeyError, OSError) as error:
            unknown = "" if entry.get("trainer") else "; what trained it is unknown, so no baseline replaces it"
            log.warning("%s: production version %s could not be measured on this test split (%s): compared by the "
                        "metrics recorded when it was promoted%s", name, entry["version"], error, unknown)
            entry["source"] = f"{entry.get('source')}; its recorded metrics: not measurable on this split ({error})"


def data_origin(synthetic: dict[str, bool], generated: str = "synthetic", observed: str = "observed") -> str:
    """Which models' splits were generated and which observed, in words ("synthetic (generated, not observed) for
    spectral and sed; observed for lightcurve")."""
    words = {True: f"{generated} (generated, not observed)", False: observed}
    if len(set(synthetic.values())) == 1:
        return words[next(iter(synthetic.values()))]

    def listed(names: list[str]) -> str:
        return " and ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"

    return "; ".join(f"{words[flag]} for {listed([n for n, value in synthetic.items() if value is flag])}"
                     for flag in (True, False))


def report(evaluations: list[Evaluation], verdicts: dict[str, Verdict],
           production: dict[str, dict[str, Any] | None], synthetic: dict[str, bool]) -> str:
    """A short Markdown summary: verdicts, key metrics of model / null / baseline / production, every reason.
    `synthetic`: per model, whether its split was generated rather than observed."""
    lines = ["# Model evaluation", ""]
    if any(synthetic.values()):
        lines += [f"Data: {data_origin(synthetic, '**synthetic**', 'observed')}.", ""]
    lines += ["| model | verdict | production compared |", "|---|---|---|"]
    for ev in evaluations:
        prod = production.get(ev.name)
        where = f"version {prod['version']}" if prod and prod.get("metrics") else "none"
        lines.append(f"| {ev.name} | {'PASS' if verdicts[ev.name].passed else 'REFUSED'} | {where} |")
    for ev in evaluations:
        lines += ["", f"## {ev.name} ({ev.info.get('kind')}, {ev.model.get('n_test', 0)} test objects)", ""]
        if ev.model.get("domain"):
            lines += [domain_sentence(ev.model["domain"], ev.name), ""]
        header, rows = metrics_table(ev, production.get(ev.name))
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows] + ["", INTERVAL_NOTE]
        if ev.task == "regression":
            for key, title in SUBSET_TITLES.items():
                if ev.model.get(key):
                    lines += ["", f"{title}:", "", "| target | metric | model | baseline |", "|---|---|---|---|"]
                    lines += ["| " + " | ".join(row) + " |" for row in subset_rows(ev, key)]
        else:
            confusion = ev.model.get("confusion") or {}
            if confusion.get("labels"):
                labels = confusion["labels"]
                lines += ["", "Confusion (rows: truth, columns: prediction)", "",
                          "| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
                lines += [f"| {label} | " + " | ".join(str(v) for v in row) + " |"
                          for label, row in zip(labels, confusion["matrix"])]
        lines += ["", "Reasons:", ""] + [f"- {reason}" for reason in verdicts[ev.name].reasons]
        fallback = verdicts[ev.name].fallback
        if fallback is not None:
            outcome = "PASS: the promote step registers it in the model's place" if fallback.passed else "REFUSED too"
            lines += ["", f"{verdicts[ev.name].fallback_title()}: the NumPy baseline, {outcome}:", ""]
            lines += [f"- {reason}" for reason in fallback.reasons]
    return "\n".join(lines) + "\n"


def _prefer_a_better_baseline(verdict: Verdict, ev: Evaluation, targets: list[str], gates: ModelGates) -> None:
    """With no production version, a passing model that its tolerance (`beat_baseline_by` < 0) let through while
    its baseline does better on every compared metric is refused where the baseline passes the same gates: the
    registry starts from the better of the two (the baseline's verdict becomes `fallback`)."""
    strict = judge(ev.name, ev.task, targets, ev.model, ev.null, gates.model_copy(update={"beat_baseline_by": 0.0}),
                   None, ev.baseline)
    against = [check for check in strict.checks if check["gate"] == "beat_baseline_by"]
    if not against or any(check["passed"] for check in against):
        return
    baseline = judge(f"{ev.name} baseline", ev.task, targets, ev.baseline, ev.null, gates)
    if baseline.passed:
        verdict.add(False, "better_of_two", "-", None, None,
                    f"{ev.name}: no production version yet and the NumPy baseline does better on the compared "
                    f"metrics ({'; '.join(r[5:] for r in strict.reasons if r.startswith('FAIL'))}): the registry "
                    "starts from the baseline")
        verdict.fallback, verdict.fallback_because = baseline, NO_PRODUCTION


def judge_all(evaluations: list[Evaluation], gates: Gates,
              production: dict[str, dict[str, Any] | None]) -> dict[str, Verdict]:
    """The verdict on every evaluated model. A refused model with a baseline and no production version gets the
    baseline's own verdict as `fallback` (the same gates, less the comparison with itself): the registry then
    starts from the better of the two that passes. A `beat_baseline_by` below 0 tolerates a model somewhat worse
    than its baseline; with no production version the baseline still starts the registry where it does better
    (`_prefer_a_better_baseline`).

    Where production is itself a NumPy baseline (one promoted so), a refused model's baseline is judged by the
    same gates, the comparison with production included (on the same objects: `baseline_metrics`), and is its
    `fallback`: a weekly run whose model keeps being refused still brings production this week's data, instead of
    serving the first week's baseline for ever. A model in production is never replaced by a baseline this way."""
    verdicts = {}
    for ev in evaluations:
        targets = ev.outputs if ev.task == "regression" else []
        model_gates = gates.for_model(ev.name)
        current = production.get(ev.name) or {}
        verdict = judge(ev.name, ev.task, targets, ev.model, ev.null, model_gates, production.get(ev.name),
                        ev.baseline)
        first = ev.baseline is not None and not current.get("version")
        if first and verdict.passed and (model_gates.beat_baseline_by or 0.0) < 0:
            _prefer_a_better_baseline(verdict, ev, targets, model_gates)
        elif first and not verdict.passed:
            verdict.fallback = judge(f"{ev.name} baseline", ev.task, targets, ev.baseline, ev.null, model_gates)
            verdict.fallback_because = NO_PRODUCTION
        elif ev.baseline is not None and not verdict.passed and current.get("trainer") == "baseline":
            against = {**current, "candidate_metrics": current.get("baseline_metrics")}
            verdict.fallback = judge(f"{ev.name} baseline", ev.task, targets, ev.baseline, ev.null, model_gates,
                                     against)
            verdict.fallback_because = f"a NumPy baseline in production (version {current['version']})"
        verdicts[ev.name] = verdict
    return verdicts
