"""`stellar` as a shell user meets it: a reader that stops early, settings out of range, a store that cannot be used."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from workflows.cli import main


def test_a_reader_that_stops_early_ends_the_command_without_a_traceback():
    """`stellar models show ... | head`: the pipe is closed before the command writes 100 KB (a listing longer than
    the pipe's buffer, as a long `models show` is)."""
    read, write = os.pipe()
    os.close(read)
    child = ("import sys, workflows.cli as cli; cli.cmd_models = lambda args: print('x' * 100_000) or 0; "
             "sys.exit(cli.main(['models', 'list']))")
    try:
        result = subprocess.run([sys.executable, "-c", child], stdout=write, stderr=subprocess.PIPE, text=True,
                                timeout=120)
    finally:
        os.close(write)
    assert result.returncode == 1 and result.stderr == ""


def test_serve_settings_out_of_range_name_the_flag_or_the_variable(tmp_path, capsys, monkeypatch):
    assert main(["serve", "--home", str(tmp_path), "--port", "99999"]) == 2
    assert capsys.readouterr().err == "stellar serve: --port: Input should be less than or equal to 65535\n"
    monkeypatch.setenv("STELLAR_API_WORKERS", "0")
    assert main(["serve", "--home", str(tmp_path)]) == 2
    assert "stellar serve: STELLAR_API_WORKERS: Input should be greater than or equal to 1" in capsys.readouterr().err


def test_a_serve_variable_that_cannot_be_parsed_is_named_with_the_form_it_takes(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STELLAR_API_CORS_ORIGINS", "https://a.example")  # a list, not written in JSON
    assert main(["serve", "--home", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stellar serve: STELLAR_API_CORS_ORIGINS: cannot be parsed") and "in JSON" in err


def test_a_store_that_cannot_be_used_is_one_line_before_the_run(tmp_path, capsys, s3_server, s3_bucket):
    """A missing bucket, an endpoint nothing answers on, a URL that is none, a file for a folder: each is named with
    its option before any task runs (they used to fail every ingest task with botocore's text), and no home is
    made for it."""
    home = tmp_path / "home"
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    nothing_there = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    (tmp_path / "a-file").touch()
    cases = [
        (["--artifact-store", "s3://no-such-bucket/p", "--s3-endpoint", s3_server],
         f"--artifact-store s3://no-such-bucket/p: no bucket 'no-such-bucket' at {s3_server}"),
        (["--artifact-store", f"s3://{s3_bucket}/p", "--s3-endpoint", nothing_there],
         f"--artifact-store s3://{s3_bucket}/p: cannot connect to the S3 endpoint {nothing_there}"),
        (["--artifact-store", f"s3://{s3_bucket}/p", "--s3-endpoint", "notaurl"],
         "stellar run: --s3-endpoint 'notaurl' is not a URL (such as http://HOST:9000)"),
        (["--artifact-store", str(tmp_path / "a-file")],
         f"--artifact-store {tmp_path / 'a-file'}: a file, not a folder"),
        (["--s3-endpoint", s3_server, "-p", "registry=s3://no-such-bucket/registry"],
         "-p registry=s3://no-such-bucket/registry: no bucket 'no-such-bucket'"),
        (["-p", f"registry={tmp_path / 'a-file'}"], f"-p registry={tmp_path / 'a-file'}: a file, not a folder"),
        (["--home", str(tmp_path / "a-file" / "home")], f"--home {tmp_path / 'a-file' / 'home' / 'artifacts'}: "),
    ]
    for options, message in cases:
        assert main(["run", "--home", str(home), *options]) == 2, options
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
        assert not home.exists()


def test_serve_on_a_port_in_use_fails_before_loading_any_model(tmp_path, capsys):
    """uvicorn found the port taken only after loading and warming every model, and exited 3."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--home", str(tmp_path), "--port", str(port)]) == 1
    message = f"stellar serve: --port: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert capsys.readouterr().err == message


def test_serve_on_the_default_port_in_use_says_how_to_choose_another(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("STELLAR_API_PORT", raising=False)
    with socket.socket() as taken:
        try:
            taken.bind(("127.0.0.1", 8000))
        except OSError:
            pytest.skip("port 8000 is in use here by something else")
        taken.listen()
        assert main(["serve", "--home", str(tmp_path)]) == 1
    assert capsys.readouterr().err == ("stellar serve: cannot listen on 127.0.0.1:8000: Address already in use (the "
                                       "default --port: give another with --port)\n")


def test_a_home_that_is_not_there_is_said_so(tmp_path, capsys):
    """A mistyped --home listed no models and no runs as if it were an empty home."""
    missing = tmp_path / "no-such-home"
    assert main(["models", "list", "--home", str(missing)]) == 0
    assert "(no such folder: is --home right?)" in capsys.readouterr().out
    assert main(["runs", "list", "--home", str(missing)]) == 0
    assert "(no such folder: is --home right?)" in capsys.readouterr().out
    assert not missing.exists()


def test_a_registry_that_is_not_there_names_the_flag_that_gave_it(tmp_path, capsys):
    assert main(["models", "list", "--home", str(tmp_path), "--registry", str(tmp_path / "nope")]) == 0
    assert capsys.readouterr().out == f"no models in {tmp_path / 'nope'} (no such folder: is --registry right?)\n"


def test_a_reader_that_stops_early_ends_models_show_quietly(tmp_path):
    """`stellar models show sed | head -1` said "cannot write the registry:: Broken pipe" and exited 2."""
    from steps.core.artifacts import ArtifactWriter
    from steps.core.registry import ModelRegistry

    with ArtifactWriter(tmp_path / "model", stage="train.test") as writer:
        writer.path("weights.txt").write_text("w")
    registry = ModelRegistry.open(str(tmp_path / "registry"))
    registry.set_alias("sed", "production", registry.register("sed", tmp_path / "model").version)
    child = subprocess.Popen([sys.executable, "-m", "workflows.cli", "models", "show", "sed", "--registry",
                              str(tmp_path / "registry")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # before the command writes: its first write meets a closed pipe
    assert child.wait(timeout=120) == 1
    assert child.stderr.read() == b""


def test_serve_on_an_address_not_of_this_machine_names_the_host(tmp_path, capsys):
    assert main(["serve", "--home", str(tmp_path), "--host", "192.0.2.1", "--port", "8123"]) == 1  # TEST-NET-1
    assert capsys.readouterr().err.startswith("stellar serve: --host: cannot listen on 192.0.2.1:8123: ")


def test_home_may_come_before_the_models_or_runs_command(tmp_path, capsys):
    """`stellar models --home DIR list` was refused ("invalid choice: 'DIR'")."""
    home = tmp_path / "home"
    (home / "runs").mkdir(parents=True)
    assert main(["models", "--home", str(home), "list"]) == 0
    assert capsys.readouterr().out.startswith(f"no models in {home / 'registry'}")
    assert main(["runs", "--home", str(home), "list"]) == 0
    assert capsys.readouterr().out.startswith(f"no runs in {home / 'runs'}")
    assert main(["models", "--home", str(tmp_path / "other"), "list", "--home", str(home)]) == 0  # the last wins
    assert capsys.readouterr().out.startswith(f"no models in {home / 'registry'}")
