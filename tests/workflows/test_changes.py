"""Why a task ran again (`workflows.local.changes`): the differences between two materials of its cache key."""

from __future__ import annotations

import json

from workflows.local.changes import describe_change, last_materials

MATERIAL = {"image": "stellar/ingest:1", "command": ["python", "-m", "steps.ingest"],
            "args": ["spectra", "--source", "synthetic", "--cache", "/a/raw-cache", "--out", "/out/raw"],
            "env": {"LOG": "info"}, "inputs": {"split": "1f"}, "outputs": ["raw"], "code": "0.1.0+abc"}


def test_nothing_changed_says_nothing():
    assert describe_change(MATERIAL, dict(MATERIAL)) == ""


def test_a_moved_home_names_the_argument_that_holds_its_path():
    moved = {**MATERIAL, "args": [arg.replace("/a/", "/b/") for arg in MATERIAL["args"]]}
    assert describe_change(MATERIAL, moved) == "argument --cache changed (/a/raw-cache -> /b/raw-cache)"
    deep = "/tmp/pytest-of-someone/pytest-264/test_a_deploy_record_whose_bytes_changed0/home"
    far = {**MATERIAL, "args": [arg.replace("/a/", f"{deep}/") for arg in MATERIAL["args"]]}
    assert describe_change(MATERIAL, far) == f"argument --cache changed (/a/raw-cache -> {deep}/raw-cache)"


def test_each_kind_of_change_is_named_and_many_arguments_are_counted():
    changed = {**MATERIAL, "code": "0.1.0+def", "inputs": {"split": "2e", "raw": "3d"}, "env": {},
               "args": ["lightcurves", "--source=kepler", "--cache", "/a/raw-cache", "--samples", "9", "--out"]}
    assert describe_change(MATERIAL, changed) == (
        "its stage's code changed (0.1.0+abc -> 0.1.0+def); argument #1 changed (spectra -> lightcurves); "
        "argument --source changed (synthetic -> kepler); 2 more argument(s) changed; environment variable LOG "
        "changed; its inputs 'raw', 'split' changed")


def test_each_task_is_compared_with_its_newest_recorded_run_and_odd_records_are_passed_over(tmp_path):
    """A task the last run never reached (interrupted, failed) is compared with the run before; records cut short
    or of another shape are passed over, not raised."""
    runs = {"r1": (100, {"ingest": {"material": {**MATERIAL, "code": "old"}},
                         "split": {"material": {**MATERIAL, "code": "split-old"}}}),
            "r2": (200, {"ingest": {"material": {**MATERIAL, "code": "new"}}, "split": {}}),
            "r3": (300, {"ingest": {"material": "abc"}, "split": None})}
    for run, (started, tasks) in runs.items():
        (tmp_path / run).mkdir()
        (tmp_path / run / "run.json").write_text(json.dumps({"run": run, "started": started, "tasks": tasks}))
    for name, text in (("r4", "{cut short"), ("r5", "null"), ("r6", '{"tasks": []}')):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(text)
    materials = last_materials(tmp_path)
    assert materials["ingest"]["code"] == "new" and materials["split"]["code"] == "split-old"
    assert last_materials(tmp_path / "none") == {}


def test_long_values_are_shown_by_their_first_differing_line_and_odd_shapes_do_not_raise():
    gates = "# Quality gates\nspectral:\n  absolute:\n    teff_robust_sigma_max: 400\n" + "# note\n" * 200
    before = {**MATERIAL, "args": ["--gates", gates]}
    after = {**MATERIAL, "args": ["--gates", gates.replace("400", "450")]}
    assert describe_change(before, after) == (
        "argument --gates changed (line 4: teff_robust_sigma_max: 400 -> teff_robust_sigma_max: 450)")
    assert describe_change({"args": [1, "--a"], "env": ["x"]}, {"args": ["--a"], "inputs": "y"}) == (
        "argument #1 changed (1 -> (absent))")
    for old, new in ((["--flag"], ["--flag="]), (["--v", ""], ["--v"]), (["--x", "a", "b"], ["--x", "a b"])):
        assert describe_change({"args": old}, {"args": new}).startswith(f"argument {old[0].rstrip('=')} changed")
    afresh = {**MATERIAL, "location": "read afresh in run-2"}
    assert describe_change({**MATERIAL, "location": "read afresh in run-1"}, afresh) == (
        "its source is read afresh on every run")
