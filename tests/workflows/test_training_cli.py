"""The seed's manual training commands: each trains and evaluates one model from the synthetic source."""

from __future__ import annotations

import json

import pytest

from workflows.cli import main


@pytest.mark.parametrize("model, extra", [
    ("spectral", ["--length", "256"]),
    ("lightcurve", ["--length", "101"]),
    ("sed", ["--bands", "5"]),
])
def test_train_command_writes_a_model_and_its_evaluation(tmp_path, capsys, model, extra):
    assert main([f"train-{model}", "--force-dummy", "--samples", "96", "--output-dir", str(tmp_path), *extra]) == 0
    out = capsys.readouterr().out
    assert f"{model} model: {tmp_path / model / 'model'}" in out
    spec = json.loads((tmp_path / model / "model" / "spec.json").read_text())
    if model == "spectral":
        assert spec["grid"]["length"] == 256
    elif model == "lightcurve":
        assert spec["global_length"] == 101
    else:
        assert spec["bands"] == ["G", "BP", "RP", "J", "H"]
    assert json.loads((tmp_path / model / "model" / "model.json").read_text())["training"]["trainer"] == "baseline"
    assert (tmp_path / model / "evaluation" / "verdict.json").is_file()


def test_bands_outside_the_range_are_refused(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["train-sed", "--bands", "2", "--output-dir", str(tmp_path)])
    assert exit_info.value.code == 2
