"""The split stage: id-grouped, deterministic, stable as data grows; and the three data stages end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steps.core.artifacts import ArtifactWriter, manifest_hash, read_manifest
from steps.core.names import MODALITIES
from steps.split.__main__ import SplitError, main, split_features, split_table
from steps.split.assign import SPLITS, assign, unit_hash

REPO = Path(__file__).resolve().parents[2]


def fake_features(path: Path, modality: str, ids: list[str]) -> Path:
    """A preprocess artifact with one numeric column per id, enough for splitting."""
    table = pa.table({"id": pa.array(ids, pa.string()), "value": pa.array(np.arange(len(ids), dtype=float))})
    with ArtifactWriter(path, stage=f"preprocess.{modality}", synthetic=True) as writer:
        writer.write_table("features.parquet", table)
        writer.write_json("spec.json", {"modality": modality, "features": ["value"]})
    return path


def test_unit_hash_is_stable_and_uniform():
    assert unit_hash(42, "synth-spec-000001") == unit_hash(42, "synth-spec-000001")
    assert unit_hash(42, "synth-spec-000001") != unit_hash(43, "synth-spec-000001")
    draws = np.array([unit_hash(1, f"object-{index}") for index in range(5000)])
    assert draws.min() >= 0 and draws.max() < 1
    assert np.histogram(draws, bins=10, range=(0, 1))[0].min() > 400


def test_fractions_are_respected_and_seed_matters():
    ids = [f"object-{index}" for index in range(5000)]
    sets = assign(ids, 7, test_fraction=0.2, val_fraction=0.1)
    assert abs(np.mean(sets == "test") - 0.2) < 0.02 and abs(np.mean(sets == "val") - 0.1) < 0.015
    assert np.mean(assign(ids, 8, 0.2, 0.1) != sets) > 0.3


def test_an_object_keeps_its_set_as_the_data_grows():
    week_one = [f"object-{index}" for index in range(100)]
    week_two = week_one[::-1] + [f"object-{index}" for index in range(100, 300)]
    first = dict(zip(week_one, assign(week_one, 3, 0.2, 0.1)))
    second = dict(zip(week_two, assign(week_two, 3, 0.2, 0.1)))
    assert all(first[object_id] == second[object_id] for object_id in week_one)


def test_rows_of_one_object_stay_together():
    ids = [f"object-{index % 40}" for index in range(400)]                 # ten rows per object
    table = pa.table({"id": ids, "row": np.arange(400)})
    sets = split_table(table, 5, 0.2, 0.1)
    members = {name: set(sets[name].column("id").to_pylist()) for name in SPLITS}
    assert sum(sets[name].num_rows for name in SPLITS) == 400
    assert not (members["train"] & members["val"] or members["train"] & members["test"] or
                members["val"] & members["test"])


def test_split_artifact_holds_every_modality_with_its_spec(tmp_path):
    inputs = {modality: fake_features(tmp_path / modality, modality, [f"{modality}-{index}" for index in range(60)])
              for modality in MODALITIES}
    split_features(inputs, tmp_path / "split", seed=11, test_fraction=0.2, val_fraction=0.1)
    manifest = read_manifest(tmp_path / "split")
    assert manifest.inputs == {modality: manifest_hash(path) for modality, path in inputs.items()}
    assert manifest.synthetic and manifest.parameters == {"seed": 11, "test_fraction": 0.2, "val_fraction": 0.1}
    for modality in MODALITIES:
        ids = [pq.read_table(tmp_path / "split" / modality / f"{name}.parquet").column("id").to_pylist()
               for name in SPLITS]
        assert sorted(sum(ids, [])) == sorted(f"{modality}-{index}" for index in range(60))
        assert [manifest.counts[f"{modality}.{name}"] for name in SPLITS] == [len(part) for part in ids]
        assert ((tmp_path / "split" / modality / "spec.json").read_bytes()
                == (inputs[modality] / "spec.json").read_bytes())
    split_features(inputs, tmp_path / "again", seed=11, test_fraction=0.2, val_fraction=0.1)
    assert read_manifest(tmp_path / "again").files == manifest.files


def test_an_empty_set_fails_naming_the_modality_and_sizes(tmp_path):
    inputs = {modality: fake_features(tmp_path / modality, modality, [f"{modality}-{index}" for index in range(60)])
              for modality in MODALITIES}
    inputs["photometry"] = fake_features(tmp_path / "few", "photometry", ["only-one", "only-two"])
    with pytest.raises(SplitError, match=r"photometry: a set is empty \(train \d, val \d, test \d of 2 objects\)"):
        split_features(inputs, tmp_path / "split", seed=1, test_fraction=0.2, val_fraction=0.1)
    assert not (tmp_path / "split").exists()
    args = [arg for modality, path in inputs.items() for arg in (f"--{modality}", str(path))]
    assert main([*args, "--out", str(tmp_path / "split"), "--seed", "1"]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--out", str(tmp_path / "split"), "--test-fraction", "0.7", "--val-fraction", "0.4"])
    assert exit_info.value.code == 2


def test_a_features_file_cut_short_is_bad_input_that_names_it(tmp_path, caplog):
    inputs = {modality: fake_features(tmp_path / modality, modality, [f"{modality}-{index}" for index in range(60)])
              for modality in MODALITIES}
    features = inputs["photometry"] / "features.parquet"
    features.write_bytes(features.read_bytes()[:200])
    args = [arg for modality, path in inputs.items() for arg in (f"--{modality}", str(path))]
    assert main([*args, "--out", str(tmp_path / "split")]) == 2
    assert f"--photometry: {features}: not a readable Parquet file (the photometry features)" in caplog.text
    assert not (tmp_path / "split").exists()


def test_the_data_stages_run_end_to_end_from_the_command_line(tmp_path):
    """ingest -> preprocess -> split for all three modalities, as separate processes, as Argo runs them."""
    def stage(*args) -> None:
        result = subprocess.run([sys.executable, "-m", *map(str, args)], cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr

    lengths = {"spectra": ["--length", 256], "photometry": [], "lightcurves": ["--length", 101, "--workers", 1]}
    for modality in MODALITIES:
        stage("steps.ingest", modality, "--source", "synthetic", "--samples", 30, "--seed", 42,
              "--cache", tmp_path / "cache", "--out", tmp_path / "raw" / modality)
        stage("steps.preprocess", modality, "--in", tmp_path / "raw" / modality, "--out",
              tmp_path / "features" / modality, "--max-bad-fraction", 0.2, *lengths[modality])
    stage("steps.split", *[arg for modality in MODALITIES for arg in (f"--{modality}", tmp_path / "features" / modality)],
          "--out", tmp_path / "split", "--seed", 42, "--test-fraction", 0.2, "--val-fraction", 0.1)

    manifest = read_manifest(tmp_path / "split")
    assert manifest.synthetic and sum(manifest.counts.values()) == sum(
        read_manifest(tmp_path / "features" / modality).counts["objects_out"] for modality in MODALITIES)
    spec = json.loads((tmp_path / "split" / "spectra" / "spec.json").read_text())
    assert spec["grid"]["length"] == 256
    train = pq.read_table(tmp_path / "split" / "lightcurves" / "train.parquet")
    assert len(train.column("global_view")[0]) == 101
    raw_hash = manifest_hash(tmp_path / "raw" / "spectra")
    assert read_manifest(tmp_path / "features" / "spectra").inputs["raw"] == raw_hash
