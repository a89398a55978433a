"""A stand-in for `podman`/`docker` that runs an image's command on this machine, for `cluster/images-check.sh`.

It understands what that script asks of an engine: `run` (with `--volume SRC:DST[:ro]`, whose DST prefixes in the
arguments become SRC, `--publish HOST:PORT:8000`, `--detach --name N`; other options are taken and ignored),
`inspect --format ... N`, `logs N` and `rm --force N`. A stage image runs its arguments (`python -m steps.X ...`,
or `stellar ...`) with this interpreter; the API image runs its entrypoint, `stellar serve`, on the published port.
So the script's stage order and every stage's arguments are checked against the stages' own command lines where no
container can run; what only a container checks (the images' contents, the read-only root, uid 10001) is not.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

STATE = Path(os.environ.get("FAKE_ENGINE_STATE", "/tmp/fake-engine"))
OPTIONS_WITH_VALUE = {"--network", "--volume", "--name", "--tmpfs", "--publish", "--format"}
API_HOME = "/var/lib/stellar"


def mapped(argument: str, volumes: list[tuple[str, str]]) -> str:
    """The argument with its container path prefix replaced by the host folder mounted there."""
    for source, target in sorted(volumes, key=lambda v: -len(v[1])):
        if argument == target or argument.startswith(target + "/"):
            return source + argument[len(target):]
    return argument


def run(args: list[str]) -> int:
    volumes, options, rest = [], {}, list(args)
    while rest and rest[0].startswith("--"):
        option = rest.pop(0)
        if option in OPTIONS_WITH_VALUE:
            value = rest.pop(0)
            if option == "--volume":
                source, target = value.split(":")[:2]
                volumes.append((source, target))
            options[option] = value
        else:
            options[option] = ""
    image, command = rest[0], rest[1:]
    if "stellar-api" in image:
        home = STATE / "api-home"
        home.mkdir(parents=True, exist_ok=True)
        volumes.append((str(home), API_HOME))
        port = options["--publish"].split(":")[1]
        command = [sys.executable, "-m", "workflows.cli", "serve", "--home", API_HOME, "--host", "127.0.0.1",
                   "--port", port, *command]
    elif command[:1] == ["python"]:
        command[0] = sys.executable
    elif command[:1] == ["stellar"]:  # the images' console script
        command = [sys.executable, "-m", "workflows.cli", *command[1:]]
    command = [mapped(part, volumes) for part in command]
    if "--detach" not in options:
        return subprocess.run(command).returncode
    name = options["--name"]
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / f"{name}.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    (STATE / f"{name}.pid").write_text(str(process.pid))
    print(name)
    return 0


def pid_of(name: str) -> int | None:
    path = STATE / f"{name}.pid"
    return int(path.read_text()) if path.exists() else None


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # a zombie has ended


def main(argv: list[str]) -> int:
    verb, args = argv[0], argv[1:]
    if verb == "run":
        return run(args)
    name = args[-1]
    if verb == "inspect":
        print("true" if alive(pid_of(name)) else "false")
        return 0
    if verb == "logs":
        print((STATE / f"{name}.log").read_text(), file=sys.stderr)
        return 0
    if verb == "rm":
        pid = pid_of(name)
        if alive(pid):
            os.killpg(pid, signal.SIGTERM)
        return 0
    print(f"fake engine: {verb} is not supported", file=sys.stderr)
    return 125


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
