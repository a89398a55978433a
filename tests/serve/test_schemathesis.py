"""Schemathesis against the running API: every check it has, on bodies generated from the served OpenAPI schema
(which the loaded models' input specs shape), with zero server errors and zero schema violations."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from api_helpers import live_server, settings_for

CONFIG = Path(__file__).with_name("schemathesis.toml")


def test_schemathesis_finds_no_failure(api_home, tmp_path):
    st = Path(sys.executable).with_name("st")
    with live_server(settings_for(api_home)) as url:
        result = subprocess.run([str(st), "--config-file", str(CONFIG), "run", f"{url}/openapi.json",
                                 "--checks", "all", "--max-examples", "25", "--seed", "20261127",
                                 "--report", "junit", "--report-dir", str(tmp_path)],
                                capture_output=True, text=True, timeout=600, cwd=tmp_path)
    summary = result.stdout[result.stdout.find("SUMMARY"):]
    assert result.returncode == 0, result.stdout[-8000:]
    assert "Tested: 7" in summary and "generated" in summary
