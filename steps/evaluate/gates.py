"""Quality gates: their YAML schema (validated, with errors that name the offending key) and the verdict.

A model passes when every check passes: enough test rows, few enough missing predictions, every absolute
threshold, better than the null predictor by `beat_null_by`, better than its NumPy baseline (trained on the
same split) by `beat_baseline_by`, and no worse than production by more than `max_regression`, on the metrics of
`compare`, and with 68% intervals that hold as many test truths as calibrated ones plausibly would
(`calibration_p_min`). Every check, passed or failed, becomes one human-readable reason with its numbers.

Margins are relative: on a scale (a robust sigma, an RMSE, a log loss) 10% better is 10% lower. On a share whose
best is 1 (accuracy, balanced accuracy, ROC-AUC) they apply to what it lacks of 1, its errors: 10% better is 10%
fewer errors, and at most 10% worse is at most 10% more errors, or one more misclassified test object where
production made almost none (a perfect production would otherwise refuse any candidate with one error). A margin on
the share itself let a perfect classifier's successor drop to 0.9 and asked an imbalanced null's 0.93 accuracy to
be beaten by a value above 1.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from steps.core.names import MODEL_NAMES
from steps.models.metrics import HIGHER_IS_BETTER

TASKS = {"spectral": "regression", "lightcurve": "classification", "sed": "regression"}
KNOWN_TARGETS = ("teff", "logg", "feh")
REGRESSION_METRICS = ("n", "missing_fraction", "robust_sigma", "rmse", "mae", "abs_bias", "abs_median_residual",
                      "outlier_fraction", "coverage_68", "coverage_95", "z_robust_sigma")
CLASSIFICATION_METRICS = ("n", "missing_fraction", "accuracy", "balanced_accuracy", "roc_auc_macro", "log_loss")
# Not the outlier share: each predictor's is counted beyond 3 of its own robust sigmas, so a broad-cored one has few.
COMPARABLE = {"regression": ("robust_sigma", "rmse", "mae", "abs_bias"),
              "classification": ("accuracy", "balanced_accuracy", "roc_auc_macro", "log_loss")}
ERROR_SHARES = ("accuracy", "balanced_accuracy", "roc_auc_macro")  # best 1: margins apply to 1 - value
ONE_OBJECT_SHARES = ("accuracy", "balanced_accuracy")  # a tolerance allows one more misclassified object
DEFAULT_COMPARE = {"regression": ["robust_sigma"], "classification": ["balanced_accuracy"]}
_THRESHOLD = re.compile(r"^(?P<metric>[a-z0-9_]+?)_(?P<bound>min|max)$")


class GateError(ValueError):
    """The gates are not valid YAML or do not follow the schema; the message names the parameter and key."""


class ModelGates(BaseModel):
    """The gates of one model."""

    model_config = ConfigDict(extra="forbid")

    absolute: dict[str, Any] = Field(default_factory=dict)
    beat_null_by: float | None = Field(0.1, ge=0, lt=1)
    beat_baseline_by: float | None = Field(0.0, gt=-1, lt=1)  # negative: a tolerance
    max_regression: float | None = Field(0.1, ge=0)
    compare: list[str] | None = None
    min_rows: int = Field(10, ge=0)
    max_missing_fraction: float = Field(0.0, ge=0, le=1)
    calibration_p_min: float | None = Field(0.001, gt=0, lt=0.5)


class Gates(BaseModel):
    """Gates per model (`parse_gates` fills a model left out from the packaged defaults)."""

    model_config = ConfigDict(extra="forbid")

    spectral: ModelGates | None = None
    lightcurve: ModelGates | None = None
    sed: ModelGates | None = None

    def for_model(self, name: str) -> ModelGates:
        """The gates of one model. `parse_gates` fills a model the YAML leaves out from the packaged defaults; one the
        YAML sets to null gets `ModelGates`' own field defaults: beat the null predictor by 10%, do not regress
        more than 10% on production, 68% intervals that calibrated ones plausibly give, at least 10 test rows, and
        no absolute threshold."""
        return getattr(self, name, None) or ModelGates()


def default_gates_text() -> str:
    """The gates shipped with the package (YAML text)."""
    return resources.files("steps.evaluate").joinpath("default_gates.yaml").read_text()


def _check_threshold_map(values: Any, metrics: tuple[str, ...], where: str) -> list[str]:
    errors = []
    if not isinstance(values, dict):
        return [f"{where}: expected a mapping of <metric>_min/<metric>_max to numbers, got {type(values).__name__}"]
    for key, value in values.items():
        match = _THRESHOLD.match(str(key))
        if not match or match["metric"] not in metrics:
            errors.append(f"{where}.{key}: unknown threshold; use <metric>_min or <metric>_max with a metric "
                          f"among {', '.join(metrics)}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            errors.append(f"{where}.{key}: expected a finite number, got {value!r}")
        else:
            errors += _impossible(match["metric"], match["bound"], value, f"{where}.{key}")
    for metric in {m["metric"] for m in map(_THRESHOLD.match, map(str, values)) if m}:
        low, high = values.get(f"{metric}_min"), values.get(f"{metric}_max")
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) and low > high:
            errors.append(f"{where}: {metric}_min {low:g} is above {metric}_max {high:g}: no model can pass")
    return errors


RATES = ("missing_fraction", "outlier_fraction", "coverage_68", "coverage_95", "accuracy", "balanced_accuracy",
         "roc_auc_macro")  # shares: from 0 to 1


def _impossible(metric: str, bound: str, value: float, where: str) -> list[str]:
    """Why a threshold no model can pass, or that every model passes, is a mistake ([] when it is not)."""
    if metric in RATES and not 0 <= value <= 1:
        return [f"{where}: {value:g}, but {metric} is a share from 0 to 1"]
    if metric == "n" and (value < 0 or value != int(value)):
        return [f"{where}: {value:g}, but n counts test objects (a whole number, 0 or more)"]
    if metric not in RATES and metric != "n" and (value < 0 or (bound == "max" and value == 0)):
        return [f"{where}: {value:g}, but {metric} is never below 0" + (" and 0 is never reached" if value == 0
                                                                        else "")]
    return []


def _check(data: dict[str, Any]) -> list[str]:
    """The mistakes inside the gates' thresholds and comparisons, which the schema leaves free-form (read from
    the YAML itself, so that they are named together with the schema's own)."""
    errors = []
    for name in MODEL_NAMES:
        model = data.get(name)
        if not isinstance(model, dict):
            continue
        task = TASKS[name]
        absolute = model.get("absolute") or {}
        if task == "regression" and isinstance(absolute, dict):
            for target, thresholds in absolute.items():
                if target not in KNOWN_TARGETS:
                    errors.append(f"{name}.absolute.{target}: unknown target; known: {', '.join(KNOWN_TARGETS)}")
                else:
                    errors += _check_threshold_map(thresholds, REGRESSION_METRICS, f"{name}.absolute.{target}")
        elif task == "classification" and isinstance(absolute, dict):
            errors += _check_threshold_map(absolute, CLASSIFICATION_METRICS, f"{name}.absolute")
        compare = model.get("compare") or []
        for i, entry in enumerate(compare if isinstance(compare, list) else []):
            if not isinstance(entry, str):
                continue
            target, _, metric = entry.rpartition(".")
            if metric not in COMPARABLE[task]:
                errors.append(f"{name}.compare.{i}: {metric!r} cannot be compared; use one of "
                              f"{', '.join(COMPARABLE[task])}")
            elif target and (task != "regression" or target not in KNOWN_TARGETS):
                errors.append(f"{name}.compare.{i}: {entry!r} names target {target!r}; "
                              + (f"known: {', '.join(KNOWN_TARGETS)}" if task == "regression"
                                 else "a classifier's metrics have no target"))
    return errors


def _over_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """Gates given, over the packaged defaults: per model, key by key (a model's entry that is not a mapping is
    left for validation to name)."""
    defaults = yaml.safe_load(default_gates_text())
    merged = {name: dict(gates) for name, gates in defaults.items()}
    for name, gates in data.items():
        merged[name] = {**merged.get(name, {}), **gates} if isinstance(gates, dict) else gates
    return merged


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(map(str, error["loc"])) or "(top level)"
    if error["type"] == "extra_forbidden":
        known = MODEL_NAMES if len(error["loc"]) == 1 else tuple(ModelGates.model_fields)
        return f"{where}: unknown key; known: {', '.join(known)}"
    return f"{where}: {error['msg']}"


def read_gates_text(value: str | None, parameter: str = "--gates") -> tuple[str, str]:
    """(YAML text, where it came from) of a gates value: YAML text, or the path of a YAML file, which is read
    (`None`: the packaged defaults)."""
    if value is None:
        return default_gates_text(), "the default gates"
    candidate = value.strip()
    if candidate and "\n" not in candidate and len(candidate) < 4096:
        path = Path(candidate).expanduser()
        if path.is_dir():
            raise GateError(f"{parameter}: {candidate}: is a folder; give a YAML file or YAML text")
        if path.is_file():
            try:
                return path.read_text(encoding="utf-8"), str(path)
            except UnicodeDecodeError as error:
                raise GateError(f"{parameter}: {candidate}: not a YAML text file (byte {error.start} is not UTF-8)")
            except OSError as error:
                raise GateError(f"{parameter}: {candidate}: unreadable: {error.strerror or error}")
        if candidate.endswith((".yaml", ".yml", ".json")) and ":" not in candidate:
            raise GateError(f"{parameter}: {candidate}: no such file")
    return value, "YAML text"


def parse_gates(value: str | None, parameter: str = "--gates") -> Gates:
    """Gates from YAML text or the path of a YAML file (`None`: the packaged defaults). A model, or a key of a
    model's gates, that the YAML leaves out keeps its default (an `absolute` given is taken whole): gates given
    for one model leave the others' as they are. Errors are `GateError`s naming the parameter and the
    offending key.
    """
    text, source = read_gates_text(value, parameter)
    if not text.strip():
        raise GateError(f"{parameter}: empty; give YAML text or the path of a YAML file")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise GateError(f"{parameter}: not valid YAML ({source}): {error}") from None
    if not isinstance(data, dict):
        raise GateError(f"{parameter}: expected a mapping of model name to gates, got {type(data).__name__} "
                        f"({source})")
    if value is not None:
        data = _over_defaults(data)
    gates, problems = None, _check(data)
    try:
        gates = Gates.model_validate(data)
    except ValidationError as error:
        problems = [_describe(e) for e in error.errors()] + problems
    if problems:
        raise GateError(f"{parameter}: invalid gates ({source}): " + "; ".join(problems))
    return gates


# ----------------------------------------------------------------------------------------------- the verdict


@dataclass
class Verdict:
    """Whether a model passed, every reason (pass and fail), and the checks as data."""

    passed: bool = True
    reasons: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    fallback: "Verdict | None" = None  # the baseline's verdict, where it may be promoted instead
    fallback_because: str = ""  # why the baseline may be: "no production version yet", or one is in production
    # targets no gate covers whose test robust sigma is worse than the training mean's (`stellar predict` warns)
    uninformative: list[dict[str, Any]] = field(default_factory=list)

    def add(self, passed: bool, gate: str, metric: str, value: Any, limit: Any, text: str,
            target: str | None = None) -> None:
        """Record one check and its reason; a failed check fails the verdict."""
        self.passed &= bool(passed)
        self.reasons.append(f"{'PASS' if passed else 'FAIL'} {text}")
        self.checks.append({"gate": gate, "target": target, "metric": metric, "value": value, "limit": limit,
                            "passed": bool(passed)})

    def note(self, text: str) -> None:
        """Record a reason that is not a check (a comparison that could not be made)."""
        self.reasons.append(f"NOTE {text}")

    def fallback_title(self) -> str:
        """Why the baseline's verdict follows, as the start of a sentence."""
        return self.fallback_because[:1].upper() + self.fallback_because[1:]

    def as_dict(self) -> dict[str, Any]:
        """The verdict as written to `verdict.json`."""
        out = {"passed": self.passed, "reasons": self.reasons, "checks": self.checks}
        if self.uninformative:
            out["uninformative"] = self.uninformative
        if self.fallback is not None:
            out["fallback"] = {"model": "baseline", "because": self.fallback_because, **self.fallback.as_dict()}
        return out


def fmt(value: Any) -> str:
    """A number in 4 significant digits (`n/a` when missing)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{value:.4g}"


def metric_of(metrics: dict[str, Any] | None, target: str | None, metric: str) -> float | None:
    """One metric from an evaluation's metrics (`targets.<t>.<metric>` for regression, `<metric>` otherwise)."""
    if not metrics:
        return None
    source = metrics.get("targets", {}).get(target, {}) if target else metrics
    value = source.get(metric) if isinstance(source, dict) else None
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _slots(task: str, gates: ModelGates, targets: list[str]) -> list[tuple[str | None, str]]:
    """(target, metric) pairs to compare: `metric` covers every target, `target.metric` one target."""
    slots = []
    for entry in gates.compare or DEFAULT_COMPARE[task]:
        target, _, metric = entry.rpartition(".")
        if task != "regression":
            slots.append((None, metric))
        else:
            slots += [(t, metric) for t in targets if not target or t == target]
    return slots


def _label(name: str, target: str | None, metric: str) -> str:
    return f"{name} {target} {metric}" if target else f"{name} {metric}"


def meets(value: float | None, limit: float, higher: bool) -> bool:
    """Whether `value` reaches `limit` (from above when `higher` is better), equal to within rounding: a limit
    computed as 1 - (errors + one object) lands a float step above the share it is meant to equal."""
    if value is None:
        return False
    slack = 1e-9 * max(1.0, abs(limit))
    return value >= limit - slack if higher else value <= limit + slack


def limit_for(metric: str, reference: float, margin: float, one_object: float = 0.0) -> float:
    """The value a model must reach to be better than `reference` by the relative `margin` (negative: at most that
    much worse). On an `ERROR_SHARES` metric the margin applies to its errors (1 - value), and a tolerance allows at
    least `one_object` more of them."""
    if metric in ERROR_SHARES:
        errors = (1 - reference) * (1 - margin)
        return 1 - (max(errors, 1 - reference + one_object) if margin < 0 else errors)
    return reference * (1 + margin) if HIGHER_IS_BETTER[metric] else reference * (1 - margin)


def _how(metric: str, margin: float) -> str:
    """How a limit was set, for a reason's text."""
    if metric in ERROR_SHARES:
        allowance = ", or one more object" if metric in ONE_OBJECT_SHARES else ""
        return (f" ({margin:.0%} fewer errors)" if margin > 0 else
                f" (at most {-margin:.0%} more errors{allowance})" if margin < 0 else "")
    better = "higher" if HIGHER_IS_BETTER[metric] else "lower"
    return f" ({margin:.0%} {better})" if margin > 0 else f" (at most {-margin:.0%} worse)" if margin < 0 else ""


def one_object(metrics: dict[str, Any] | None, metric: str) -> float:
    """The most that one more misclassified test object can lower `metric` (from the confusion matrix: for balanced
    accuracy, an object of the smallest class; 0 where unknown, and for ROC-AUC, which counts pairs, not objects)."""
    matrix = np.asarray(((metrics or {}).get("confusion") or {}).get("matrix") or [], np.float64)
    counts = matrix.sum(axis=1) if matrix.ndim == 2 else np.array([])
    counts = counts[counts > 0]
    if not counts.size:
        return 0.0
    return {"accuracy": 1 / counts.sum(), "balanced_accuracy": 1 / (counts.size * counts.min())}.get(metric, 0.0)


NOMINAL_68 = 0.6827  # the share of a Gaussian within one sigma of its mean


def coverage_probability(share: float, n: int) -> float:
    """How likely calibrated 68% intervals are to hold a share as far from 68% as `share` of `n` test truths: the
    smaller binomial tail beyond the observed count, doubled (two-sided), at most 1."""
    from scipy.stats import binom

    inside = round(share * n)
    return min(1.0, 2 * min(binom.cdf(inside, n, NOMINAL_68), binom.sf(inside - 1, n, NOMINAL_68)))


def _calibration(verdict: Verdict, name: str, targets: list[str], model: dict[str, Any],
                 p_min: float | None) -> None:
    """Checks that each gated target's 68% intervals hold as many test truths as calibrated ones plausibly would:
    overconfident (too few) and uselessly wide (too many) intervals are refused. A fixed floor would decide on noise
    for a dozen test objects (5 or fewer of 11 inside happens to calibrated intervals once in 10 draws); the binomial
    probability does not. The 95% intervals are reported, not gated: real residuals have heavier tails than a
    Gaussian (on MILES the spectral model's 95% intervals hold 77% of the test stars; its 68% intervals 57-66%)."""
    if p_min is None:
        verdict.note(f"{name}: its uncertainties are not checked (calibration_p_min is off)")
        return
    for target in targets:
        values = model.get("targets", {}).get(target) or {}
        share, n = values.get("coverage_68"), values.get("n_err") or 0
        if share is None or not n:
            verdict.note(f"{_label(name, target, 'coverage_68')}: no predicted uncertainty to check")
            continue
        probability = coverage_probability(share, n)
        side = "fewer" if share < NOMINAL_68 else "more"
        verdict.add(probability >= p_min, "calibration_p_min", "coverage_68_probability", probability, p_min,
                    f"{_label(name, target, 'coverage_68')} = {fmt(share)} of {n} test truths inside the 68% "
                    f"intervals: calibrated intervals hold so {side} with probability {probability:.2g} (needs >= "
                    f"{fmt(p_min)})", target)


def _compare(verdict: Verdict, name: str, slots: list[tuple[str | None, str]], model: dict[str, Any],
             reference_metrics: dict[str, Any], margin: float | None, gate: str, reference_name: str) -> None:
    """Checks that the model beats a reference predictor by a relative `margin` on every compared metric."""
    if margin is None:
        verdict.note(f"{name}: not compared with {reference_name} ({gate} is off)")
        return
    for target, metric in slots:
        value, reference = metric_of(model, target, metric), metric_of(reference_metrics, target, metric)
        higher = HIGHER_IS_BETTER[metric]
        if reference is None:
            verdict.note(f"{_label(name, target, metric)}: {reference_name} has no value; not compared")
            continue
        limit = limit_for(metric, reference, margin, one_object(model, metric))
        ok = meets(value, limit, higher)
        how = _how(metric, margin)
        verdict.add(ok, gate, metric, value, limit,
                    f"{_label(name, target, metric)} = {fmt(value)} vs {fmt(reference)} of {reference_name}: "
                    f"needs {'>=' if higher else '<='} {fmt(limit)}{how}", target)


def judge(name: str, task: str, targets: list[str], model: dict[str, Any], null: dict[str, Any],
          gates: ModelGates, production: dict[str, Any] | None = None,
          baseline: dict[str, Any] | None = None) -> Verdict:
    """The verdict on one model from its test metrics, the null predictor's, production's (if any) and its
    baseline's (if any: None when the model is itself a baseline).

    `production`: `{"version": str | None, "metrics": <model metrics> | None, "source": str}` or None.
    """
    verdict = Verdict()
    scopes = [(t, model.get("targets", {}).get(t, {})) for t in targets] if task == "regression" else [(None, model)]
    for target, values in scopes:
        label = _label(name, target, "")
        n = values.get("n", 0) or 0
        verdict.add(n >= gates.min_rows, "min_rows", "n", n, gates.min_rows,
                    f"{label}test rows with truth and prediction: {n} (need >= {gates.min_rows})", target)
        missing = values.get("missing_fraction")
        ok = missing is not None and missing <= gates.max_missing_fraction
        verdict.add(ok, "max_missing_fraction", "missing_fraction", missing, gates.max_missing_fraction,
                    f"{label}share without a prediction: {fmt(missing)} (allowed <= {fmt(gates.max_missing_fraction)})",
                    target)

    absolute: list[tuple[str | None, str, str, float]] = []
    if task == "regression":
        for target, thresholds in gates.absolute.items():
            if target not in targets:
                verdict.add(False, "absolute", "-", None, None,
                            f"{name}: gates name target {target!r}, which the model does not predict "
                            f"(targets: {', '.join(targets)})", target)
                continue
            absolute += [(target, *_THRESHOLD.match(k).group("metric", "bound"), float(v))
                         for k, v in thresholds.items()]
    else:
        absolute += [(None, *_THRESHOLD.match(k).group("metric", "bound"), float(v)) for k, v in gates.absolute.items()]
    for target, metric, bound, limit in absolute:
        value = metric_of(model, target, metric)
        ok = meets(value, limit, bound == "min")
        sign = "<=" if bound == "max" else ">="
        verdict.add(ok, "absolute", metric, value, limit,
                    f"{_label(name, target, metric)} = {fmt(value)} (absolute: needs {sign} {fmt(limit)})", target)

    slots = _slots(task, gates, targets)
    if task == "regression":
        compared = {target for target, _ in slots}
        _calibration(verdict, name, [t for t in targets if t in compared], model, gates.calibration_p_min)
    _compare(verdict, name, slots, model, null, gates.beat_null_by, "beat_null_by", "the null predictor")
    for target in sorted(set(targets) - {t for t, _ in slots}) if task == "regression" else []:
        value, reference = metric_of(model, target, "robust_sigma"), metric_of(null, target, "robust_sigma")
        if value is not None and reference is not None and value > reference:
            verdict.note(f"{name} {target} robust_sigma = {fmt(value)} is worse than the null predictor's "
                         f"{fmt(reference)} (the training mean): not gated, but no better than that mean by this "
                         "measure")
            verdict.uninformative.append({"target": target, "robust_sigma": value, "null_robust_sigma": reference})
    if baseline is not None:
        _compare(verdict, name, slots, model, baseline, gates.beat_baseline_by, "beat_baseline_by",
                 "the NumPy baseline")

    if gates.max_regression is None:
        verdict.note(f"{name}: not compared with production (max_regression is off)")
    elif not production or not production.get("metrics"):
        verdict.note(f"{name}: no production version to compare with"
                     + (f" ({production['source']})" if production and production.get("source") else ""))
    else:
        tolerance = gates.max_regression
        where = f"production version {production.get('version') or '?'}" + (
            (" on this test split" if not production.get("candidate_metrics") else
             f" on the {production['measured_here']} test objects it did not learn from")
            if production.get("measured_here") else " (recorded on another test split)")
        candidate = production.get("candidate_metrics") or model  # on the same objects
        for target, metric in slots:
            value, reference = metric_of(candidate, target, metric), metric_of(production["metrics"], target, metric)
            if reference is None:
                verdict.note(f"{_label(name, target, metric)}: {where} has no value; not compared")
                continue
            higher = HIGHER_IS_BETTER[metric]
            limit = limit_for(metric, reference, -tolerance, one_object(candidate, metric))
            ok = meets(value, limit, higher)
            verdict.add(ok, "max_regression", metric, value, limit,
                        f"{_label(name, target, metric)} = {fmt(value)} vs {fmt(reference)} of {where}: needs "
                        f"{'>=' if higher else '<='} {fmt(limit)}{_how(metric, -tolerance)}", target)
    return verdict
