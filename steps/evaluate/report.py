"""The evaluation's HTML report: `report.html` and its PNG plots in `plots/`, beside `report.md`.

Per regression model: predicted vs true per target (with 1-sigma error bars), residuals against S/N and against
true Teff (for photometry, against its S/N and the number of bands measured: `residual_axes`), and an
interval-coverage diagram (observed share of
truths within the predicted central interval against its nominal probability: the regression reliability
diagram). Per classifier: the confusion matrix and the reliability diagram of the top-class probability, with
its expected calibration error. Where a refused model's baseline is promoted in its place (no production version
yet, or a baseline there), the baseline's plots follow: they show what will be served. The page has the verdicts,
the metric tables (model, null predictor, baseline, production), every gate reason, and how each model was trained
and calibrated; synthetic data is flagged at the top and in each model's heading.

Plots use matplotlib's Agg backend with the PNG `Software` metadata removed, so the same evaluation gives the same
bytes. matplotlib is imported only when a report is written.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from steps.core.names import MODALITY
from steps.core.statistics import robust_sigma
from steps.evaluate import INTERVAL_NOTE, SUBSET_TITLES, data_origin, domain_sentence, metrics_table, subset_rows
from steps.evaluate.gates import Verdict, fmt
from steps.models.inputs import Columns
from steps.models.keras.calibration import expected_calibration_error, reliability
from steps.models.splits import read_split

PLOTS = "plots"
REPORT = "report.html"
UNITS = {"teff": "K", "logg": "dex", "feh": "dex"}
LABELS = {"teff": "Teff", "logg": "log g", "feh": "[Fe/H]"}
NOMINAL = np.linspace(0.05, 0.95, 19)
MAG_ERROR_TO_SNR = 2.5 / np.log(10.0)  # a magnitude error of e is a flux S/N of 1.0857 / e
Axis = tuple[str, str, np.ndarray]  # (file key, axis label, one value per test row)
_DPI = 80


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 8, "axes.titlesize": 9, "figure.max_open_warning": 0})
    return plt


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI, format="png", metadata={"Software": None})
    fig.clear()


def _wide_axis(ax, axis: str, values: np.ndarray) -> None:
    """Log scale for an axis of positive values spanning more than a factor 3 (Teff from M dwarfs to B stars, S/N),
    labelled at 1, 2 and 5 times each power of ten in plain numbers (linear Teff ticks and log minor-tick labels ran
    into each other)."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    finite = values[np.isfinite(values)]
    if finite.size == 0 or finite.min() <= 0 or finite.max() < 3 * finite.min():
        return
    which = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    which.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 2000, 5000, 10000, 20000 ...
    which.set_major_formatter(ScalarFormatter())
    which.set_minor_formatter(NullFormatter())


def _residuals_in_view(ax, x: np.ndarray, res: np.ndarray, err: np.ndarray, unit: str | None) -> None:
    """Residuals against `x`, the y axis held to 8 robust sigmas about their median (one hot star's 6,000 K miss
    flattened the ~100 K bulk onto zero): a residual beyond is drawn at the edge as a red triangle pointing out,
    and the title gives their count with the median and robust sigma of all."""
    median, sigma = float(np.median(res)), robust_sigma(res)
    half = 8 * sigma if sigma > 0 else float(np.max(np.abs(res - median))) or 1.0
    low, high = median - half, median + half
    inside = (res >= low) & (res <= high)
    ax.errorbar(x[inside], res[inside], yerr=err[inside], fmt="o", ms=2.5, lw=0.6, alpha=0.7, color="tab:blue",
                ecolor="0.6")
    for beyond, edge, marker in ((res > high, high, "^"), (res < low, low, "v")):
        if beyond.any():
            ax.plot(x[beyond], np.full(int(beyond.sum()), edge), marker, color="tab:red", ms=4, clip_on=False)
    ax.set_ylim(low, high)
    outside = int((~inside).sum())
    ax.set_title(f"robust sigma {fmt(sigma)}{f' {unit}' if unit else ''}, median {fmt(median)}"
                 + (f"\n{outside} beyond the axis" if outside else ""), fontsize=7)


def _label(target: str) -> str:
    unit = UNITS.get(target)
    return f"{LABELS.get(target, target)}" + (f" [{unit}]" if unit else "")


def _regression_plots(plt, name: str, targets: list[str], pred: pd.DataFrame, against: list[Axis],
                      folder: Path) -> list[tuple[str, str]]:
    """predicted vs true, residuals vs each of `against` and vs Teff, interval coverage: [(file, caption)]."""
    made: list[tuple[str, str]] = []
    n = len(targets)
    truth = {t: pred[f"{t}_true"].to_numpy(np.float64) for t in targets}
    value = {t: pred[t].to_numpy(np.float64) for t in targets}
    err = {t: pred[f"{t}_err"].to_numpy(np.float64) for t in targets}

    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.0), squeeze=False)
    for ax, t in zip(axes[0], targets):
        ok = np.isfinite(truth[t]) & np.isfinite(value[t])
        ax.errorbar(truth[t][ok], value[t][ok], yerr=np.where(np.isfinite(err[t][ok]), err[t][ok], 0.0), fmt="o",
                    ms=2.5, lw=0.6, alpha=0.7, color="tab:blue", ecolor="0.6")
        if ok.any():
            lo, hi = (float(min(truth[t][ok].min(), value[t][ok].min())),
                      float(max(truth[t][ok].max(), value[t][ok].max())))
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            if t == "teff":
                _wide_axis(ax, "x", truth[t][ok])
                _wide_axis(ax, "y", np.r_[truth[t][ok], value[t][ok]])
        ax.set_xlabel(f"true {_label(t)}")
        ax.set_ylabel(f"predicted {_label(t)}")
        ax.set_title(f"{LABELS.get(t, t)}: {int(ok.sum())} stars")
    fig.tight_layout()
    _save(fig, folder / f"{name}_pred_vs_true.png")
    made.append((f"{name}_pred_vs_true.png", "Predicted against true value, with 1-sigma error bars; dashed: 1:1."))

    axes_against = [axis for axis in against if np.isfinite(axis[2]).any()]
    if "teff" in truth:
        axes_against.append(("teff", "true Teff [K]", truth["teff"]))
    for key, xlabel, x in axes_against:
        fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 2.8), squeeze=False)
        for ax, t in zip(axes[0], targets):
            res = value[t] - truth[t]
            ok = np.isfinite(res) & np.isfinite(x)
            if ok.any():
                _residuals_in_view(ax, x[ok], res[ok], np.where(np.isfinite(err[t][ok]), err[t][ok], 0.0),
                                   UNITS.get(t))
            ax.axhline(0.0, color="k", lw=0.8, ls="--")
            if key == "bands":
                ax.xaxis.get_major_locator().set_params(integer=True)
            else:
                _wide_axis(ax, "x", x[ok])
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"residual {_label(t)}")
        fig.tight_layout()
        _save(fig, folder / f"{name}_residuals_{key}.png")
        made.append((f"{name}_residuals_{key}.png", f"Residual (predicted - true) against {xlabel}, within 8 robust "
                                                     "sigmas of the median; red triangles: residuals beyond, at the "
                                                     "edge."))

    fig, ax = plt.subplots(figsize=(3.4, 3.2))
    for t in targets:
        z = (value[t] - truth[t]) / err[t]
        z = np.abs(z[np.isfinite(z)])
        if z.size:
            from scipy.stats import norm

            observed = [float(np.mean(z <= norm.ppf(0.5 + p / 2))) for p in NOMINAL]
            ax.plot(NOMINAL, observed, "o-", ms=3, label=LABELS.get(t, t))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("nominal probability of the central interval")
    ax.set_ylabel("observed share of truths inside")
    ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    fig.tight_layout()
    _save(fig, folder / f"{name}_coverage.png")
    made.append((f"{name}_coverage.png", "Uncertainty calibration: the observed coverage of each central interval "
                                          "against its nominal probability (on the diagonal when calibrated)."))
    return made


def _classification_plots(plt, name: str, classes: list[str], pred: pd.DataFrame, metrics: dict[str, Any],
                          folder: Path) -> list[tuple[str, str]]:
    """Confusion matrix and reliability diagram: [(file, caption)]."""
    made: list[tuple[str, str]] = []
    confusion = metrics.get("confusion") or {}
    labels, matrix = confusion.get("labels") or list(classes), np.asarray(confusion.get("matrix") or [], float)
    if matrix.size:
        fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(labels), 0.8 + 0.7 * len(labels)))
        rows = matrix.sum(axis=1, keepdims=True)
        ax.imshow(np.where(rows > 0, matrix / np.maximum(rows, 1), 0.0), cmap="Blues", vmin=0, vmax=1)
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if rows[i, 0] and matrix[i, j] / rows[i, 0] > 0.6 else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        fig.tight_layout()
        _save(fig, folder / f"{name}_confusion.png")
        made.append((f"{name}_confusion.png", "Confusion matrix (counts; shading: share of each true class)."))

    proba = pred[[f"p_{c}" for c in classes]].to_numpy(np.float64)
    truth = pred["class_true"].to_numpy(dtype=object)
    ok = np.isfinite(proba).all(axis=1) & np.array([t is not None for t in truth], bool)
    correct = np.array([classes[k] == t for k, t in zip(np.argmax(np.nan_to_num(proba, nan=-1), axis=1), truth)],
                       bool)
    bins = reliability(proba[ok], correct[ok])
    ece = expected_calibration_error(proba[ok], correct[ok])
    fig, ax = plt.subplots(figsize=(3.4, 3.2))
    centres = [0.5 * (a + b) for a, b in zip(bins["edges"][:-1], bins["edges"][1:])]
    filled = [(c, a, f, n) for c, a, f, n in zip(centres, bins["accuracy"], bins["confidence"], bins["count"]) if n]
    if filled:
        ax.bar([c for c, *_ in filled], [a for _, a, *_ in filled], width=0.09, color="tab:blue", alpha=0.7,
               label="accuracy")
        ax.plot([f for *_, f, _ in filled], [a for _, a, *_ in filled], "o", color="tab:red", ms=4, clip_on=False,
                zorder=3, label="(mean confidence, accuracy)")
        for centre, accuracy, _, count in filled:  # how many objects each bar is
            ax.text(centre, min(accuracy, 1.0) / 2, f"n={count}", ha="center", va="center", rotation=90, fontsize=6)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlim(0, 1), ax.set_ylim(0, 1.02)
    ax.set_xlabel("top-class probability")
    ax.set_ylabel("share correct")
    ax.set_title(f"ECE {fmt(ece)}", loc="right", fontsize=9)
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), fontsize=7, frameon=False)  # above the bars
    fig.tight_layout()
    _save(fig, folder / f"{name}_reliability.png")
    made.append((f"{name}_reliability.png", "Reliability diagram: accuracy of the predicted class in bins of its "
                                             "probability (on the diagonal when calibrated), n objects in each; "
                                             "ECE = expected calibration error."))
    return made


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _metrics_table(ev: Any, production: dict[str, Any] | None) -> str:
    return _table(*metrics_table(ev, production)) + f"<p>{html.escape(INTERVAL_NOTE)}</p>"


def _fallback(verdict: Any) -> str:
    """The baseline's verdict, where the model was refused with no production version yet, or a baseline there."""
    if verdict.fallback is None:
        return ""
    outcome = ("PASS: the promote step registers it in the model's place" if verdict.fallback.passed
               else "REFUSED too: the promote step promotes nothing")
    return (f"<h3>{html.escape(verdict.fallback_title())}: the NumPy baseline, {outcome}</h3><ul>"
            + "".join(_reason(r) for r in verdict.fallback.reasons) + "</ul>")


def _kind(info: dict[str, Any]) -> str:
    """What trained a model, for a heading: 'Keras model', 'NumPy baseline'."""
    return "Keras model" if (info.get("training") or {}).get("trainer") == "keras" else "NumPy baseline"


def _figures(plt, ev: Any, name: str, predictions: pd.DataFrame, metrics: dict[str, Any],
             against: dict[str, list[Axis]], folder: Path) -> str:
    """The plots of one model's test predictions (files named after `name`), as HTML figures."""
    if ev.task == "regression":
        plots = _regression_plots(plt, name, ev.outputs, predictions, against.get(ev.name, []), folder / PLOTS)
    else:
        plots = _classification_plots(plt, name, ev.outputs, predictions, metrics, folder / PLOTS)
    return '<div class="figures">' + "".join(
        f'<figure><img src="{PLOTS}/{html.escape(file)}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>" for file, caption in plots) + "</div>"


def _training_summary(info: dict[str, Any]) -> list[str]:
    training, calibration = info.get("training", {}), info.get("calibration", {})
    lines = [f"kind {info.get('kind')}, trainer {training.get('trainer')}, {training.get('n_train')} training and "
             f"{training.get('n_val')} validation rows"]
    if training.get("epochs_run"):
        lines.append(f"{training['epochs_run']} epochs (best {training.get('best_epoch')}, at most "
                     f"{training.get('epochs')}), early stopping on the {training.get('early_stopping')}")
    if info.get("architecture"):
        lines.append(f"network {info['architecture']['network']}: {info['architecture']['parameters']:,} "
                     "parameters")
    if "sigma_scale" in calibration:
        scales = ", ".join(f"{t} x{fmt(v)}" for t, v in calibration["sigma_scale"].items())
        lines.append(f"uncertainties scaled on the {calibration.get('split', 'val')} split ({scales}) so that "
                     "median |res/sigma| = 0.6745")
    if "temperature" in calibration:
        lines.append(f"temperature {fmt(calibration['temperature'])} fitted on the {calibration.get('split')} "
                     f"split: ECE {fmt(calibration.get('ece_before'))} before, {fmt(calibration.get('ece_after'))} "
                     "after")
    return lines


def _reason(reason: str) -> str:
    status = reason.split(" ", 1)[0].lower()
    return f'<li class="{html.escape(status)}">{html.escape(reason)}</li>'


def write_report(folder: Path, evaluations: list[Any], verdicts: dict[str, Verdict],
                 production: dict[str, dict[str, Any] | None], synthetic: dict[str, bool],
                 against: dict[str, list[Axis]] | None = None) -> Path:
    """Write `report.html` and `plots/*.png` into `folder` (the pending evaluation directory); return the page.

    `evaluations` are `steps.evaluate.Evaluation`s; `against` maps a model to what its test rows' residuals are
    plotted against besides Teff (`residual_axes`).
    """
    plt = _pyplot()
    folder = Path(folder)
    against = against or {}
    sections, summary = [], []
    for ev in evaluations:
        verdict = verdicts[ev.name]
        prod = production.get(ev.name) or {}
        summary.append([ev.name, str(ev.info.get("kind")), "PASS" if verdict.passed else "REFUSED",
                        f"version {prod['version']}" if prod.get("metrics") else "none"])
        figures = (f"<h3>Plots of the {html.escape(_kind(ev.info))}</h3>"
                   + _figures(plt, ev, ev.name, ev.predictions, ev.model, against, folder))
        if verdict.fallback is not None and verdict.fallback.passed and ev.baseline_predictions is not None:
            figures += ("<h3>Plots of the NumPy baseline, promoted in the model's place</h3>"
                        + _figures(plt, ev, f"{ev.name}_baseline", ev.baseline_predictions, ev.baseline or {},
                                   against, folder))
        tag = ' <span class="synthetic">synthetic data</span>' if synthetic.get(ev.name) else ""
        sections.append(
            f'<section id="{html.escape(ev.name)}"><h2>{html.escape(ev.name)}: '
            f'<span class="{"pass" if verdict.passed else "fail"}">{"PASS" if verdict.passed else "REFUSED"}</span>'
            f"{tag}</h2>"
            f"<p>{ev.model.get('n_test', 0)} test objects. "
            + "; ".join(html.escape(line) for line in _training_summary(ev.info)) + ".</p>"
            + (f"<p>{html.escape(domain_sentence(ev.model['domain'], ev.name))}</p>" if ev.model.get("domain") else "")
            + _metrics_table(ev, prod)
            + "".join(f"<h3>{html.escape(title)}</h3>" + _table(["target", "metric", "model", "baseline"],
                                                                 subset_rows(ev, key))
                      for key, title in SUBSET_TITLES.items() if ev.model.get(key))
            + "<h3>Gate reasons</h3><ul>" + "".join(_reason(r) for r in verdict.reasons) + "</ul>"
            + _fallback(verdict)
            + f"{figures}</section>")
    banner = (f'<p class="synthetic banner">Data: {html.escape(data_origin(synthetic, "SYNTHETIC"))}. A generated '
              "split's figures say how its model does on stars simulated from physical models, not on real ones.</p>"
              if any(synthetic.values()) else "")
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Model evaluation</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}.pass{color:#1a7f37}.fail{color:#c0392b}"
        ".note{color:#666}.synthetic{background:#fff3cd;padding:2px 6px}.banner{padding:8px;font-weight:bold}"
        "figure{display:inline-block;margin:.5em;vertical-align:top;max-width:100%}img{max-width:100%}"
        "figcaption{font-size:small;max-width:420px}</style></head><body>"
        "<h1>Model evaluation</h1>" + banner
        + _table(["model", "kind", "verdict", "production compared"], summary)
        + "".join(sections) + "</body></html>\n")
    target = folder / REPORT
    target.write_text(page)
    return target


def residual_axes(splits: dict[str, str | os.PathLike]) -> dict[str, list[Axis]]:
    """Per model (and the split it was tested on), what its test rows' residuals are plotted against besides true
    Teff, in row order: their S/N (the `snr` column of spectra and light curves); for photometry, its S/N, the
    median over the measured bands of 1.0857 / magnitude error (a flux's S/N), and the number of bands measured,
    since the SED model must hold up with bands missing."""
    out: dict[str, list[Axis]] = {}
    for name, split_dir in splits.items():
        test = read_split(split_dir, MODALITY[name])[0]["test"]
        cols = Columns(test)
        if "snr" in test.column_names:
            out[name] = [("snr", "S/N", cols.scalar("snr"))]
            continue
        bands = [c.removeprefix("mag_") for c in test.column_names if c.startswith("mag_")]
        if not bands:
            continue
        measured = np.column_stack([np.isfinite(cols.scalar(f"mag_{band}")) for band in bands])
        errors = np.column_stack([cols.scalar(f"err_{band}") for band in bands])
        with np.errstate(divide="ignore", invalid="ignore"):
            snr = np.where(measured & (errors > 0), MAG_ERROR_TO_SNR / errors, np.nan)
        median = np.full(cols.n, np.nan)
        some = np.isfinite(snr).any(axis=1)
        median[some] = np.nanmedian(snr[some], axis=1)
        out[name] = [("snr", "photometric S/N (median over bands)", median),
                     ("bands", "bands measured", measured.sum(axis=1).astype(np.float64))]
    return out
