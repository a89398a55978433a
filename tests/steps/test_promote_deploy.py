"""Promotion moves production only on a pass and only from the version evaluated against; deploy records it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from steps.core.registry import CANDIDATE, PRODUCTION, ModelRegistry
from steps.deploy.__main__ import main as deploy
from steps.deploy.__main__ import serving_record
from steps.evaluate.__main__ import main as evaluate
from steps.promote.__main__ import main as promote
from workflows.run import file_models, promotion_lines
from workflows.runs_cli import _outcome
from split_fixtures import said_to_have_learnt_half_the_test, write_split

NAMES = ("spectral", "lightcurve", "sed")


def model_args(models: dict[str, Path]) -> list[str]:
    return [arg for name, path in models.items() for arg in (f"--{name}", str(path))]


def evaluate_and_promote(split: Path, models: dict[str, Path], registry: Path, out: Path) -> dict:
    assert evaluate(["--split", str(split), *model_args(models), "--registry", str(registry),
                     "--out", str(out / "evaluation")]) == 0
    return promote_only(models, registry, out)


def promote_only(models: dict[str, Path], registry: Path, out: Path) -> dict:
    if (out / "promotion").exists():
        shutil.rmtree(out / "promotion")
    assert promote(["--evaluation", str(out / "evaluation"), *model_args(models), "--registry", str(registry),
                    "--out", str(out / "promotion")]) == 0
    return json.loads((out / "promotion" / "promotion.json").read_text())


def test_first_pass_is_promoted_and_a_retry_changes_nothing(learnable, tmp_path):
    split, models = learnable
    registry = tmp_path / "registry"
    outcomes = evaluate_and_promote(split, models, registry, tmp_path / "run")
    assert {name: o["outcome"] for name, o in outcomes.items()} == dict.fromkeys(NAMES, "promoted")
    assert ModelRegistry.open(str(registry)).aliases("sed") == {PRODUCTION: "1", CANDIDATE: "1"}
    assert promote_only(models, registry, tmp_path / "run") == outcomes  # retried: same outcome, same registry
    assert [r.version for r in ModelRegistry.open(str(registry)).versions("sed")] == ["1"]


def test_a_worse_model_is_refused_and_production_stays(learnable, noise, tmp_path):
    registry = tmp_path / "registry"
    evaluate_and_promote(*learnable, registry, tmp_path / "good")
    outcomes = evaluate_and_promote(*noise, registry, tmp_path / "bad")
    assert {o["outcome"] for o in outcomes.values()} == {"refused"}
    assert any(reason.startswith("FAIL") for reason in outcomes["sed"]["reasons"])
    aliases = ModelRegistry.open(str(registry)).aliases("sed")
    assert aliases == {PRODUCTION: "1", CANDIDATE: "2"}
    assert deploy(["--promotion", str(tmp_path / "bad" / "promotion"), "--registry", str(registry),
                   "--out", str(tmp_path / "deployment")]) == 0
    served = json.loads((tmp_path / "deployment" / "deployment.json").read_text())["models"]["sed"]
    assert served["promotion"] == "refused" and served["reasons"] == outcomes["sed"]["reasons"]


def test_a_version_judged_again_shows_the_new_verdict(learnable, tmp_path):
    split, models = learnable
    registry = tmp_path / "registry"
    evaluate_and_promote(split, models, registry, tmp_path / "first")
    strict = tmp_path / "strict.yaml"
    strict.write_text("sed:\n  absolute:\n    teff: {robust_sigma_max: 0.001}\n")
    assert evaluate(["--split", str(split), *model_args(models), "--registry", str(registry), "--gates",
                     strict.read_text(), "--out", str(tmp_path / "second" / "evaluation")]) == 0
    outcomes = promote_only(models, registry, tmp_path / "second")
    assert outcomes["sed"] == {**outcomes["sed"], "outcome": "refused", "version": "1"}
    shown = ModelRegistry.open(str(registry)).latest("sed", "1")
    assert not shown.verdict["passed"] and shown.verdict["reasons"] == outcomes["sed"]["reasons"]


def test_a_stale_verdict_is_not_applied(learnable, tmp_path):
    split, models = learnable
    registry = tmp_path / "registry"
    assert evaluate(["--split", str(split), *model_args(models), "--registry", str(registry),
                     "--out", str(tmp_path / "run" / "evaluation")]) == 0
    # Someone promotes another version of sed between evaluation and promotion.
    other = ModelRegistry.open(str(registry)).register("sed", models["spectral"])
    ModelRegistry.open(str(registry)).set_alias("sed", PRODUCTION, other.version)
    outcomes = promote_only(models, registry, tmp_path / "run")
    assert outcomes["sed"]["outcome"] == "refused"
    assert "production moved" in outcomes["sed"]["reasons"][-1]
    assert ModelRegistry.open(str(registry)).aliases("sed")[PRODUCTION] == other.version


def test_deploy_records_what_is_served(learnable, tmp_path):
    registry = tmp_path / "registry"
    evaluate_and_promote(*learnable, registry, tmp_path / "run")
    assert deploy(["--promotion", str(tmp_path / "run" / "promotion"), "--registry", str(registry),
                   "--out", str(tmp_path / "deployment")]) == 0
    serving = json.loads((registry / "serving.json").read_text())
    assert serving == json.loads((tmp_path / "deployment" / "deployment.json").read_text())
    assert {name: model["version"] for name, model in serving["models"].items()} == dict.fromkeys(NAMES, "1")
    # a run on synthetic data is marked so in every manifest, the promotion's and the deployment's too
    from steps.core.artifacts import read_manifest

    assert read_manifest(tmp_path / "run" / "evaluation").synthetic
    assert read_manifest(tmp_path / "run" / "promotion").synthetic and read_manifest(tmp_path / "deployment").synthetic


def test_deploy_refuses_a_folder_that_is_no_promotion(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        deploy(["--promotion", str(tmp_path), "--registry", str(tmp_path / "r"), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2


def _list_files_again(model: Path) -> None:
    """Make a model directory's manifest list its files as they now are (as a trainer writing them would)."""
    from steps.core.artifacts import FileEntry, read_manifest, sha256_file

    manifest = read_manifest(model)
    manifest.files = [FileEntry(path=entry.path, sha256=sha256_file(model / entry.path),
                                bytes=(model / entry.path).stat().st_size, rows=entry.rows) for entry in manifest.files]
    (model / "manifest.json").write_text(manifest.model_dump_json(indent=2))


def _as_keras(models: dict[str, Path], out: Path) -> dict[str, Path]:
    """Copies of `models` recorded as Keras models: the evaluation trains and compares their baselines."""
    copies = {}
    for name, path in models.items():
        copies[name] = out / name
        shutil.copytree(path, copies[name])
        info = json.loads((copies[name] / "model.json").read_text())
        info["training"]["trainer"] = "keras"
        (copies[name] / "model.json").write_text(json.dumps(info))
        _list_files_again(copies[name])
    return copies


def test_a_refused_model_gives_way_to_its_baseline_while_production_is_none_or_a_baseline(learnable, noise,
                                                                                          tmp_path):
    """Models that learnt nothing, recorded as Keras models, are compared with the baselines the evaluation trains
    on the same split: refused, and with an empty registry their baselines are promoted instead. Next week, on new
    objects, the models are refused again and production is a baseline: this week's baselines, judged against it
    on the same objects, take its place."""
    split, _ = learnable
    models = _as_keras(noise[1], tmp_path / "models")
    registry = tmp_path / "registry"
    outcomes = evaluate_and_promote(split, models, registry, tmp_path / "first")
    evaluation = tmp_path / "first" / "evaluation"
    verdicts = json.loads((evaluation / "verdict.json").read_text())
    metrics = json.loads((evaluation / "metrics.json").read_text())
    for name in NAMES:
        assert (evaluation / "baselines" / name / "model.json").is_file() and "baseline" in metrics[name]
        assert not verdicts[name]["passed"] and verdicts[name]["fallback"]["passed"]
        assert any(r.startswith("FAIL") and "of the NumPy baseline" in r for r in verdicts[name]["reasons"])
        assert outcomes[name]["outcome"] == "promoted" and outcomes[name]["model"] == "baseline"
        served = ModelRegistry.open(str(registry))
        assert served.aliases(name) == {CANDIDATE: outcomes[name]["refused_version"], PRODUCTION: "2"}
        assert served.resolve(name, PRODUCTION).metrics["model"] == metrics[name]["baseline"]
        serving = serving_record(served, outcomes)["models"][name]
        assert serving["baseline_version"] == "2" and serving["reasons"] == outcomes[name]["reasons"]
    for report in ("report.md", "report.html"):
        assert ("the NumPy baseline, PASS: the promote step registers it in the model's place"
                in (evaluation / report).read_text())
    page = (evaluation / "report.html").read_text()
    assert page.count("Plots of the NumPy baseline, promoted in the model's place") == len(NAMES)
    for name in NAMES:  # what production serves is plotted, and its test predictions kept
        first = "confusion" if name == "lightcurve" else "pred_vs_true"
        assert f'src="plots/{name}_baseline_{first}.png"' in page
        assert (evaluation / "plots" / f"{name}_baseline_{first}.png").is_file()
        baseline = pd.read_parquet(evaluation / "predictions" / f"{name}_baseline.parquet")
        assert len(baseline) == len(pd.read_parquet(evaluation / "predictions" / f"{name}.parquet"))
    outcomes = evaluate_and_promote(split, models, registry, tmp_path / "again")  # the same split: the same baseline
    assert {(o["outcome"], o["model"]) for o in outcomes.values()} == {("unchanged", "baseline")}
    next_week = write_split(tmp_path / "next-week", n=300, seed=22)
    outcomes = evaluate_and_promote(next_week, models, registry, tmp_path / "next")
    evaluation = tmp_path / "next" / "evaluation"
    verdicts = json.loads((evaluation / "verdict.json").read_text())
    production = json.loads((evaluation / "production.json").read_text())
    run_dir = tmp_path / "runs" / "next"  # what `stellar runs show` reads back: the models filed in run.json
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"tasks": {}}))
    file_models(run_dir, serving_record(ModelRegistry.open(str(registry)), outcomes)["models"])
    filed = json.loads((run_dir / "run.json").read_text())["models"]
    for name in NAMES:
        assert production[name]["trainer"] == "baseline" and production[name]["measured_here"] > 0
        fallback = verdicts[name]["fallback"]
        assert fallback["because"] == "a NumPy baseline in production (version 2)"
        against = [r for r in fallback["reasons"] if "production version 2 on this test split" in r]
        assert against and fallback["passed"] == all(r.startswith("PASS") for r in against)
        served = ModelRegistry.open(str(registry)).aliases(name)[PRODUCTION]
        summary = promotion_lines(name, filed[name])
        if fallback["passed"]:
            assert outcomes[name]["outcome"] == "promoted" and outcomes[name]["model"] == "baseline"
            assert served == outcomes[name]["version"] != "2"
            assert summary[0].endswith(f"refused by the quality gates, and as there was a NumPy baseline in "
                                       f"production (version 2), its NumPy baseline was promoted as version {served} "
                                       f"(all its checks: stellar models show {name}@1)")
        else:  # this week's baseline is worse than production on the same objects: production stays
            assert outcomes[name]["outcome"] == "refused" and served == "2" and outcomes[name]["baseline_refused"]
            assert summary[0].endswith("; as there was a NumPy baseline in production (version 2), this run's NumPy "
                                       "baseline was judged too, and refused as well")
            assert any(line.startswith("    baseline: FAIL") and "production version 2" in line for line in summary)
            assert _outcome(name, filed[name]) == f"{name}: candidate 1 refused, its baseline too; serving v2"
    assert {name for name in NAMES if outcomes[name]["outcome"] == "promoted"} == {"spectral", "lightcurve"}
    assert "A NumPy baseline in production (version 2): the NumPy baseline, PASS" in (
        evaluation / "report.md").read_text()


def test_a_refused_model_leaves_a_keras_model_in_production(learnable, noise, tmp_path):
    """A baseline never replaces a Keras model in production: the refused model changes nothing."""
    registry = tmp_path / "registry"
    evaluate_and_promote(learnable[0], _as_keras(learnable[1], tmp_path / "good"), registry, tmp_path / "first")
    next_week = write_split(tmp_path / "next-week", n=300, seed=22)
    outcomes = evaluate_and_promote(next_week, _as_keras(noise[1], tmp_path / "bad"), registry, tmp_path / "next")
    verdicts = json.loads((tmp_path / "next" / "evaluation" / "verdict.json").read_text())
    for name in NAMES:
        assert outcomes[name]["outcome"] == "refused" and "model" not in outcomes[name]
        assert "fallback" not in verdicts[name]
        assert ModelRegistry.open(str(registry)).aliases(name)[PRODUCTION] == "1"


def test_a_model_changed_after_training_stops_the_promotion_before_any_registration(learnable, tmp_path):
    split, models = learnable
    changed = {**models, "sed": tmp_path / "sed"}
    shutil.copytree(models["sed"], changed["sed"])
    (changed["sed"] / "model.json").write_text((changed["sed"] / "model.json").read_text() + " ")
    registry = tmp_path / "registry"
    assert evaluate(["--split", str(split), *model_args(models), "--registry", str(registry),
                     "--out", str(tmp_path / "evaluation")]) == 0
    assert promote(["--evaluation", str(tmp_path / "evaluation"), *model_args(changed), "--registry",
                    str(registry), "--out", str(tmp_path / "promotion")]) == 2
    assert ModelRegistry.open(str(registry)).names() == [] and not (tmp_path / "promotion").exists()


def _trained_again_from_other_inputs(model: Path, out: Path) -> Path:
    """`model`'s files under a manifest that names other inputs: a retrain after an unrelated input changed."""
    shutil.copytree(model, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["inputs"] = {name: "0" * 64 for name in manifest["inputs"]} or {"split": "0" * 64}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_a_version_rolled_back_by_hand_is_not_promoted_again(learnable, tmp_path):
    split, models = learnable
    registry = tmp_path / "registry"
    older = ModelRegistry.open(str(registry)).register("sed", models["spectral"])  # any other model: version 1
    ModelRegistry.open(str(registry)).set_alias("sed", PRODUCTION, older.version)
    assert evaluate_and_promote(split, models, registry, tmp_path / "run")["sed"]["outcome"] == "promoted"
    assert ModelRegistry.open(str(registry)).rollback("sed") == "1"
    assert ModelRegistry.open(str(registry)).alias_state("sed").rolled_back == {PRODUCTION: ["2"]}
    retried = promote_only(models, registry, tmp_path / "run")["sed"]  # next week's run reproduces version 2
    assert retried["outcome"] == "refused" and "rolled back from production by hand" in retried["reasons"][-1]
    assert ModelRegistry.open(str(registry)).aliases("sed")[PRODUCTION] == "1"
    retrained = {**models, "sed": _trained_again_from_other_inputs(models["sed"], tmp_path / "retrained")}
    later = evaluate_and_promote(split, retrained, registry, tmp_path / "later")["sed"]  # the same bytes, new lineage
    assert later["outcome"] == "refused" and "rolled back from production by hand" in later["reasons"][-1]
    assert [r.version for r in ModelRegistry.open(str(registry)).versions("sed")] == ["1", "2"]
    assert ModelRegistry.open(str(registry)).aliases("sed")[PRODUCTION] == "1"
    ModelRegistry.open(str(registry)).set_alias("sed", PRODUCTION, "2")  # a person promotes it again
    assert ModelRegistry.open(str(registry)).alias_state("sed").rolled_back == {PRODUCTION: []}


def test_a_baseline_in_production_that_learnt_some_test_objects_is_compared_on_the_others(learnable, noise,
                                                                                         tmp_path):
    """The refused model's baseline is judged against production on the test objects production did not learn
    from, and measured on the same ones (`baseline_metrics`), as the candidate is."""
    from steps.models.io import object_keys
    from steps.models.splits import read_split

    split, models = learnable
    test_ids = object_keys(read_split(split, "photometry")[0]["test"])
    production, learnt = said_to_have_learnt_half_the_test(split, models["sed"], tmp_path / "production-sed")
    registry = tmp_path / "registry"
    opened = ModelRegistry.open(str(registry))
    opened.set_alias("sed", PRODUCTION, opened.register("sed", production).version)
    candidates = _as_keras(noise[1], tmp_path / "candidates")
    outcome = evaluate_and_promote(split, candidates, registry, tmp_path / "run")["sed"]
    evaluation = tmp_path / "run" / "evaluation"
    measured = json.loads((evaluation / "production.json").read_text())["sed"]
    left = len(test_ids) - len(learnt)
    assert measured["measured_here"] == left
    assert measured["baseline_metrics"]["n_test"] == measured["candidate_metrics"]["n_test"] == left
    assert measured["baseline_metrics"]["targets"] == measured["metrics"]["targets"]  # the same ridge, same objects
    fallback = json.loads((evaluation / "verdict.json").read_text())["sed"]["fallback"]
    assert fallback["passed"] and any(f"of production version 1 on the {left} test objects it did not learn from"
                                      in reason for reason in fallback["reasons"])
    assert outcome["model"] == "baseline" and outcome["outcome"] == "promoted" and outcome["version"] != "1"
