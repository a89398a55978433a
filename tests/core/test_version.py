"""Each task's cache key hashes the code its stage can run, so an edit re-runs only the stages that import it."""

from __future__ import annotations

import shutil

import pytest

from steps.core import version


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A copy of the `steps` sources that the version functions read instead of the installed ones."""
    root = tmp_path / "steps"
    shutil.copytree(version.ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(version, "ROOT", root)
    for cached in (version.code_version, version.stage_code_version):
        cached.cache_clear()
    yield root
    for cached in (version.code_version, version.stage_code_version):
        cached.cache_clear()


def _versions(modules):
    version.stage_code_version.cache_clear()
    return {module: version.stage_code_version(module) for module in modules}


def test_a_stage_hashes_its_own_modules_and_what_they_import_lazily_too(package):
    ingest = {str(path.relative_to(package)) for path in version.stage_sources("steps.ingest")}
    train = {str(path.relative_to(package)) for path in version.stage_sources("steps.train")}
    evaluate = {str(path.relative_to(package)) for path in version.stage_sources("steps.evaluate")}
    assert {"__init__.py", "ingest/__init__.py", "ingest/__main__.py", "core/artifacts.py"} <= ingest
    assert not any(path.startswith(("models/", "train/")) for path in ingest)
    assert "models/keras/training.py" in train  # imported inside a function, where TensorFlow is wanted
    assert "ingest/bands.py" in train
    assert "evaluate/default_gates.yaml" in evaluate and "evaluate/default_gates.yaml" not in train


def test_an_edit_changes_the_version_of_the_stages_that_can_run_it_and_no_other(package):
    stages = ["steps.ingest", "steps.preprocess", "steps.split", "steps.train", "steps.evaluate", "steps.deploy"]
    before = _versions(stages)
    assert len(set(before.values())) == len(stages)

    with open(package / "models" / "keras" / "training.py", "a") as source:
        source.write("\n# an edit\n")
    after = _versions(stages)
    assert {stage for stage in stages if after[stage] != before[stage]} == {"steps.train", "steps.evaluate"}

    (package / "evaluate" / "default_gates.yaml").write_text("changed: true\n")
    gates = _versions(stages)
    assert {stage for stage in stages if gates[stage] != after[stage]} == {"steps.evaluate"}

    with open(package / "train" / "__main__.py", "a") as source:  # the train CLI: only `python -m steps.train` runs it
        source.write("\n# an edit\n")
    cli = _versions(stages)
    assert {stage for stage in stages if cli[stage] != gates[stage]} == {"steps.train"}
    gates = cli

    (package / "models" / "keras" / ".training.py.swp").write_text("an editor's swap file")
    (package / "models" / "keras" / "training.py.orig").write_text("a merge's leftover")
    assert _versions(stages) == gates

    with open(package / "core" / "artifacts.py", "a") as source:
        source.write("\n# an edit\n")
    assert all(version != gates[stage] for stage, version in _versions(stages).items() if stage != "steps.deploy")


def test_a_command_that_is_not_a_steps_module_gets_the_whole_package_version(package):
    assert version.command_code_version(["python", "-m", "steps.split", "--seed", "1"]) == \
        version.stage_code_version("steps.split")
    assert version.command_code_version(["helm", "upgrade"]) == version.code_version()
    assert version.command_code_version(["python", "-m", "json.tool"]) == version.code_version()
