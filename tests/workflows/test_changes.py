"""Why a task ran again (`workflows.local.changes`): the differences between two materials of its cache key."""

from __future__ import annotations

import json
import os

from workflows.local.changes import describe_change, last_materials

MATERIAL = {"image": "stellar/ingest:1", "command": ["python", "-m", "steps.ingest"],
            "args": ["spectra", "--source", "synthetic", "--cache", "/a/raw-cache", "--out", "/out/raw"],
            "env": {"LOG": "info"}, "inputs": {"split": "1f"}, "outputs": ["raw"], "code": "0.1.0+abc"}


def test_nothing_changed_says_nothing():
    assert describe_change(MATERIAL, dict(MATERIAL)) == ""


def test_a_moved_home_names_the_argument_that_holds_its_path():
    moved = {**MATERIAL, "args": [arg.replace("/a/", "/b/") for arg in MATERIAL["args"]]}
    assert describe_change(MATERIAL, moved) == "argument --cache changed (/a/raw-cache -> /b/raw-cache)"


def test_each_kind_of_change_is_named_and_many_arguments_are_counted():
    changed = {**MATERIAL, "code": "0.1.0+def", "inputs": {"split": "2e", "raw": "3d"}, "env": {},
               "args": ["lightcurves", "--source=kepler", "--cache", "/a/raw-cache", "--samples", "9", "--out"]}
    assert describe_change(MATERIAL, changed) == (
        "the pipeline's code changed (0.1.0+abc -> 0.1.0+def); argument #1 changed (spectra -> lightcurves); "
        "argument --source changed (synthetic -> kepler); 2 more argument(s) changed; environment variable LOG "
        "changed; its inputs 'raw', 'split' changed")


def test_the_newest_readable_run_record_is_used(tmp_path):
    older, newer, broken = (tmp_path / name for name in ("r1", "r2", "r3"))
    for folder, code in ((older, "old"), (newer, "new")):
        folder.mkdir()
        (folder / "run.json").write_text(json.dumps(
            {"run": folder.name, "tasks": {"ingest": {"material": {**MATERIAL, "code": code}}, "split": {}}}))
    broken.mkdir()
    (broken / "run.json").write_text("{cut short")
    os.utime(older / "run.json", (1, 1))
    run, materials = last_materials(tmp_path)
    assert run == "r2" and list(materials) == ["ingest"] and materials["ingest"]["code"] == "new"
    assert last_materials(tmp_path / "none") == ("", {})
