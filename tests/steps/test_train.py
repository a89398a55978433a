"""`python -m steps.train`: the model directory it publishes, its manifest, determinism, and its errors."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from steps.core.artifacts import manifest_hash, read_manifest
from split_fixtures import write_split
from steps.train import train_from_split

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    return write_split(tmp_path_factory.mktemp("split") / "split", n=200, seed=11)


def train_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "steps.train", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_cli_publishes_a_model_directory_with_its_lineage(split, tmp_path):
    out = tmp_path / "spectral"
    result = train_cli("spectral", "--split", split, "--out", out, "--force-dummy", "--epochs", "5", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.json", "spec.json",
                                                      "train_metrics.json", "training_ids.json", "weights.npz"]
    learnt = json.loads((out / "training_ids.json").read_text())  # what it learnt from: by id and labels
    assert len(learnt) == 120 + 40 and all(key.count("|") == 3 for key in learnt)
    manifest = read_manifest(out)
    assert manifest.stage == "train.spectral"
    assert manifest.inputs == {"split": manifest_hash(split)}
    assert manifest.counts == {"train_rows": 120, "val_rows": 40}
    assert manifest.parameters["trainer"] == "baseline" and manifest.parameters["seed"] == 3
    assert manifest.synthetic
    assert (out / "spec.json").read_bytes() == (split / "spectra" / "spec.json").read_bytes()
    info = json.loads((out / "model.json").read_text())
    assert info["format_version"] == 1 and info["kind"] == "ridge-pca" and info["task"] == "regression"
    assert info["targets"] == ["teff", "logg", "feh"] and info["training"]["n_train"] == 120
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert set(metrics["val"]) == {"teff", "logg", "feh"} and metrics["val"]["teff"]["n"] == 40
    assert not list(tmp_path.glob(".*tmp*")), "no temporary directory is left behind"


@pytest.mark.parametrize("name", ["spectral", "lightcurve", "sed"])
def test_training_is_deterministic(split, tmp_path, name):
    first = train_from_split(name, split, tmp_path / "a", trainer="baseline", seed=1)
    second = train_from_split(name, split, tmp_path / "b", trainer="baseline", seed=1)
    for file in ("weights.npz", "model.json", "train_metrics.json", "spec.json"):
        assert (first / file).read_bytes() == (second / file).read_bytes(), file
    assert manifest_hash(first) == manifest_hash(second)


@pytest.mark.parametrize("cores, cpu_limit, expected", [(range(16), None, 2), (range(2), None, 2), (range(1), None, 1),
                                                      (range(16), 1.0, 1), (range(16), 1.5, 1), (range(16), 4.0, 2)])
def test_training_runs_blas_on_a_fixed_number_of_threads_whatever_the_cores(split, tmp_path, monkeypatch, cores,
                                                                          cpu_limit, expected):
    """How many threads split a product changes its last bits, and the closed-form fits' choices can follow: a model
    must not depend on how many cores its machine (or a pod's node) has. Training sees two BLAS threads, and one
    where the process may use one core only, by its affinity or by a cgroup CPU limit (a pod's `limits.cpu` on a
    16-core node: two threads would spin in turn on one CPU's quota); the setting is restored after."""
    from threadpoolctl import threadpool_info, threadpool_limits

    import steps.train as train_module

    def blas_threads() -> set[int]:
        return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}

    seen = []

    def recording(*args, **kwargs):
        seen.append(blas_threads())
        return train_module.train_baseline(*args, **kwargs)

    monkeypatch.setattr(train_module.os, "sched_getaffinity", lambda pid: set(cores), raising=False)
    monkeypatch.setattr(train_module, "cgroup_cpu_limit", lambda: cpu_limit)
    monkeypatch.setitem(train_module.TRAINERS, "baseline", recording)
    importlib.import_module("scipy.linalg")  # SciPy's BLAS loaded first, so that the setting below covers it too
    with threadpool_limits(limits=3, user_api="blas"):  # the process's own setting, unlike any expected one
        train_from_split("spectral", split, tmp_path / "model", trainer="baseline")
        assert blas_threads() == {3}
    assert seen == [{expected}]


@pytest.mark.parametrize("files, expected", [
    ({"cpu.max": "100000 100000\n"}, 1.0), ({"cpu.max": "250000 100000\n"}, 2.5), ({"cpu.max": "max 100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None), ({}, None)])
def test_cgroup_cpu_limit_reads_a_containers_cpu_limit(tmp_path, files, expected):
    """A pod's CPU limit is a cgroup quota (v2's cpu.max, v1's CFS quota over its period), which the CPU affinity
    does not show; "max" and -1 mean none, and so does a machine without those files."""
    from steps.train import cgroup_cpu_limit

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_limit(tmp_path) == expected


def test_training_limits_scipys_blas_too_though_training_loads_it(split, tmp_path):
    """SciPy ships its own OpenBLAS, loaded when training first imports scipy.optimize (inside the limit): a limit
    covers only the libraries loaded when it is set, so training loads SciPy's before. A fresh interpreter, as a
    stage runs: here SciPy may already be loaded by another test."""
    script = f"""
import sys
from threadpoolctl import threadpool_info
import steps.train as train
assert "scipy.linalg" not in sys.modules
seen = []
def recording(*args, **kwargs):
    from scipy.optimize import minimize  # noqa: F401  (as steps.models.linear imports it when it fits)
    seen.extend((pool["filepath"], pool["num_threads"]) for pool in threadpool_info() if pool["user_api"] == "blas")
    return train.train_baseline(*args, **kwargs)
train.TRAINERS["baseline"] = recording
train.blas_threads = lambda: 1
train.train_from_split("spectral", {str(split)!r}, {str(tmp_path / "model")!r}, trainer="baseline")
print(sorted(seen))
assert seen and all(threads == 1 for _, threads in seen), seen  # SciPy may share NumPy's library
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_usage_and_input_errors_exit_2(split, tmp_path):
    result = train_cli("sed", "--split", tmp_path / "missing", "--out", tmp_path / "x", "--force-dummy")
    assert result.returncode == 2 and "not a finished artifact" in result.stderr
    result = train_cli("stars", "--split", split, "--out", tmp_path / "x")
    assert result.returncode == 2 and "invalid choice" in result.stderr
    assert not (tmp_path / "x").exists()


def test_a_split_file_cut_short_exits_2_naming_it(split, tmp_path):
    import shutil

    broken = tmp_path / "split"
    shutil.copytree(split, broken)
    train = broken / "photometry" / "train.parquet"
    train.write_bytes(train.read_bytes()[:-100])
    result = train_cli("sed", "--split", broken, "--out", tmp_path / "x", "--force-dummy")
    assert result.returncode == 2, result.stderr
    assert f"{train}: not a readable Parquet file (the train rows of photometry)" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "x").exists()


def test_a_spec_naming_absent_feature_columns_is_refused(split, tmp_path):
    import shutil

    broken = tmp_path / "split"
    shutil.copytree(split, broken)
    spec_path = broken / "photometry" / "spec.json"
    spec = json.loads(spec_path.read_text())
    spec_path.write_text(json.dumps({**spec, "features": spec["features"] + ["mag_Z"]}))
    result = train_cli("sed", "--split", broken, "--out", tmp_path / "sed", "--force-dummy")
    assert result.returncode == 2
    assert "mag_Z" in result.stderr
    assert not (tmp_path / "sed").exists()


def _trained_without(labels: tuple[str, ...], split, tmp_path):
    """(`stellar train spectral`'s result on a copy of `split` whose training rows lack `labels`, training rows)."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    broken = tmp_path / "split"
    shutil.copytree(split, broken)
    train = broken / "spectra" / "train.parquet"
    table = pq.read_table(train)
    for label in labels:
        table = table.set_column(table.column_names.index(label), label, pa.nulls(table.num_rows, pa.float64()))
    pq.write_table(table, train)
    return train_cli("spectral", "--split", broken, "--out", tmp_path / "x", "--force-dummy"), table.num_rows


def test_unlabelled_training_rows_are_refused_saying_so(split, tmp_path):
    """Spectra from a source without labels (an SDSS folder): the message says so, not that a target is short."""
    result, rows = _trained_without(("teff", "logg", "feh"), split, tmp_path)
    assert result.returncode == 2, result.stderr
    assert (f"spectral: none of the {rows} training rows of spectra has a Teff, log g or [Fe/H] label: "
            "the source gives unlabelled spectra") in result.stderr
    assert not (tmp_path / "x").exists()


def test_a_label_no_training_row_has_is_named(split, tmp_path):
    """A labels table without its teff column: the message names the label, not a target's index."""
    result, rows = _trained_without(("teff",), split, tmp_path)
    assert result.returncode == 2, result.stderr
    assert (f"spectral: of the {rows} training rows of spectra, 0 have a teff label (at least 2 needed): "
            "the source gives no teff (a labels table without that column?)") in result.stderr
    assert not (tmp_path / "x").exists()
