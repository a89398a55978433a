"""Prediction API throughput and latency against two naive servers on the same models, in one run.

    .venv/bin/python bench/bench_api.py [--home bench/.api-home] [--duration 10] [--connections 16]

Models: the spectral network on 4,000-pixel spectra, the SED ensemble and the light-curve CNN, trained once by the
manual training CLI (`stellar train-*`, synthetic data) and registered as `production` in `HOME/registry` (reused on
the next run). Servers, each alone on the machine while it is measured, one worker each:
- `api`: `stellar serve` (micro-batching, compiled graph, JSON or `.npz` bodies, access log on);
- `naive-predict`: FastAPI calling Keras `predict()` per request (`bench/naive_server.py`);
- `naive-function`: FastAPI calling the SavedModel's `tf.function` per request.
Load: `wrk -t1 -c16` for `--duration` seconds per scenario on loopback (wrk and the server share the cores),
single-object and 64-object requests. Every scenario checks that all answers were 2xx. The table goes to stdout
and to `bench/results/api.md`; raw numbers to `bench/results/api.json`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BATCH = 64
TRAIN = {"spectral": ["--samples", "256", "--length", "4000", "--epochs", "3"],
         "sed": ["--samples", "512", "--epochs", "10"],
         "lightcurve": ["--samples", "200", "--epochs", "3"]}


def prepare_models(home: Path) -> dict[str, Path]:
    """Train (once) and register each model as production; return each production model directory."""
    from steps.core.registry import PRODUCTION, ModelRegistry, RegistryError

    registry = ModelRegistry.open(str(home / "registry"))
    dirs = {}
    for name, flags in TRAIN.items():
        try:
            record, path = registry.download(name, PRODUCTION, home / "serving")
        except RegistryError:
            out = home / "trained"
            subprocess.run([str(BIN / "stellar"), f"train-{name}", *flags, "--output-dir", str(out)], check=True,
                           stdout=subprocess.DEVNULL)
            record = registry.register(name, out / name / "model")
            registry.set_alias(name, PRODUCTION, record.version)
            record, path = registry.download(name, PRODUCTION, home / "serving")
        dirs[name] = path
    return dirs


def bodies(model_dirs: dict[str, Path], folder: Path) -> dict[str, tuple[Path, str]]:
    """Request bodies written to files: name -> (file, content type)."""
    from steps.models import load_model

    rng = np.random.default_rng(7)
    spectral = load_model(model_dirs["spectral"])
    length = int(spectral.spec["grid"]["length"])
    lightcurve = load_model(model_dirs["lightcurve"])
    views = {"global_view": int(lightcurve.spec["global_length"]), "local_view": int(lightcurve.spec["local_length"])}

    def spectra(n: int) -> np.ndarray:
        return (1.0 + 0.02 * rng.standard_normal((n, length))).astype(np.float32)

    def sed_object() -> dict[str, float]:
        g = float(rng.uniform(9, 15))
        mags = {"G": g, "BP": g + 0.4, "RP": g - 0.5, "J": g - 1.2, "H": g - 1.6, "Ks": g - 1.7}
        errors = {"G": 0.003, "BP": 0.005, "RP": 0.005, "J": 0.02, "H": 0.02, "Ks": 0.02}
        return {**{f"mag_{band}": mag for band, mag in mags.items()},
                **{f"err_{band}": error for band, error in errors.items()},
                "parallax": float(rng.uniform(1, 10)), "parallax_error": 0.05}

    def json_body(instances: list[dict]) -> bytes:
        return json.dumps({"instances": instances}).encode()

    def npz_body(flux: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, flux=flux)
        return buffer.getvalue()

    one, many = spectra(1), spectra(BATCH)
    made = {
        "sed-1": (json_body([sed_object()]), "application/json"),
        "sed-64": (json_body([sed_object() for _ in range(BATCH)]), "application/json"),
        "spectral-1": (json_body([{"flux": [round(float(v), 5) for v in one[0]]}]), "application/json"),
        "spectral-1-npz": (npz_body(one), "application/x-npz"),
        "spectral-64": (json_body([{"flux": [round(float(v), 5) for v in row]} for row in many]), "application/json"),
        "spectral-64-npz": (npz_body(many), "application/x-npz"),
        "lightcurve-1": (json_body([{name: [float(v) for v in rng.normal(0, 0.3, size)]
                                     for name, size in views.items()} | {"period": 2.5}]), "application/json"),
    }
    out = {}
    for name, (body, media_type) in made.items():
        path = folder / f"{name}.body"
        path.write_bytes(body)
        out[name] = (path, media_type)
    return out


SCENARIOS = [  # (scenario, model, body, objects per request, servers)
    ("SED, 1 object, JSON", "sed", "sed-1", 1, ("api", "naive-predict", "naive-function")),
    ("SED, 64 objects, JSON", "sed", "sed-64", BATCH, ("api", "naive-function")),
    ("spectral, 1 object, JSON", "spectral", "spectral-1", 1, ("api", "naive-predict", "naive-function")),
    ("spectral, 1 object, npz", "spectral", "spectral-1-npz", 1, ("api",)),
    ("spectral, 64 objects, JSON", "spectral", "spectral-64", BATCH, ("api", "naive-predict", "naive-function")),
    ("spectral, 64 objects, npz", "spectral", "spectral-64-npz", BATCH, ("api",)),
    ("light curve, 1 object, JSON", "lightcurve", "lightcurve-1", 1, ("api", "naive-function")),
]


def wrk(url: str, body: Path, media_type: str, duration: int, connections: int, folder: Path) -> dict:
    """One wrk run: requests/s, p50 and p99 in ms, and how many requests failed (non-2xx or socket errors)."""
    script = folder / f"{body.stem}.lua"
    script.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "{media_type}"\n'
                      f'local f = io.open("{body}", "rb")\nwrk.body = f:read("*all")\nf:close()\n')
    result = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "--latency",
                             "-s", str(script), url], capture_output=True, text=True, check=True).stdout
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", result).group(1)),
            "p50_ms": _ms(re.search(r"50%\s+(\S+)", result).group(1)),
            "p99_ms": _ms(re.search(r"99%\s+(\S+)", result).group(1)),
            "requests": int(re.search(r"(\d+) requests in", result).group(1)),
            "errors": sum(int(n) for n in re.findall(r"(?:Non-2xx or 3xx responses:|connect|read|write|timeout) (\d+)",
                                                     result))}


def _ms(text: str) -> float:
    """wrk's latency text (`812.00us`, `1.20ms`, `2.00s`) in ms; NaN when no request finished."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        return float("nan")
    return float(match.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[match.group(2)]


class Server:
    """A server process on a port, ready once `ready_path` answers 200."""

    def __init__(self, command: list[str], port: int, ready_path: str, env: dict[str, str], log: Path):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                raise RuntimeError(f"port {port} is already in use: another server would answer the benchmark")
        self.port, self.ready_path = port, ready_path
        self.process = subprocess.Popen(command, env={**os.environ, **env}, stdout=log.open("w"),
                                        stderr=subprocess.STDOUT, cwd=ROOT)

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server on port {self.port} exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{self.ready_path}", timeout=1):
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"server on port {self.port} not ready after {timeout:.0f} s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start(server: str, model: str, home: Path, model_dirs: dict[str, Path], port: int, logs: Path) -> Server:
    """Start `server` (the API with every model, or a naive server with `model`)."""
    if server == "api":
        return Server([str(BIN / "stellar"), "serve", "--home", str(home), "--port", str(port)], port, "/readyz",
                      {"STELLAR_API_ACCESS_LOG": "true"}, logs / "api.log")
    mode = server.removeprefix("naive-")
    return Server([str(BIN / "python"), str(ROOT / "bench" / "naive_server.py"), "--model-dir",
                   str(model_dirs[model]), "--mode", mode, "--port", str(port)], port, "/docs",
                  {"PYTHONPATH": str(ROOT)}, logs / f"{server}-{model}.log")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=ROOT / "bench" / ".api-home")
    parser.add_argument("--duration", type=int, default=10, help="seconds per scenario")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--port", type=int, default=8123)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench_api: needs wrk (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    home = args.home.resolve()
    model_dirs = prepare_models(home)
    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    files = bodies(model_dirs, work)
    rows = []
    for server in ("api", "naive-function", "naive-predict"):
        for model in ("sed", "spectral", "lightcurve"):
            wanted = [s for s in SCENARIOS if s[1] == model and server in s[4]]
            if not wanted:
                continue
            running = start(server, model, home, model_dirs, args.port, work)
            try:
                running.wait_ready()
                measure(running, model, wanted, files, args, work, rows, server)
            finally:
                running.stop()
    write_results(rows, args)
    return 1 if any(row["errors"] for row in rows) else 0


def measure(running: Server, model: str, wanted: list, files: dict, args: argparse.Namespace, work: Path,
            rows: list[dict], server: str) -> None:
    """Run `wanted` scenarios against the running server, appending a row each."""
    for scenario, _, body, objects, _ in wanted:
        path, media_type = files[body]
        result = wrk(f"http://127.0.0.1:{args.port}/v1/{model}:predict", path, media_type, args.duration,
                     args.connections, work)
        if running.process.poll() is not None:
            raise RuntimeError(f"{server} exited during {scenario!r}")
        result.update(server=server, scenario=scenario, objects_per_request=objects,
                      objects_per_s=round(result["rps"] * objects, 1))
        rows.append(result)
        print(f"{scenario:30s} {server:15s} {result['rps']:9.1f} req/s  p50 {result['p50_ms']:7.2f} ms  "
              f"p99 {result['p99_ms']:8.2f} ms  {result['objects_per_s']:9.1f} objects/s  "
              f"non-2xx {result['errors']}", flush=True)


def write_results(rows: list[dict], args: argparse.Namespace) -> None:
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "api.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [f"wrk -t1 -c{args.connections}, {args.duration} s per scenario, {os.cpu_count()} cores shared by "
             f"server and wrk; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             "| scenario | server | req/s | p50 ms | p99 ms | objects/s | non-2xx |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['scenario']} | {row['server']} | {row['rps']:.0f} | {row['p50_ms']:.2f} | "
                     f"{row['p99_ms']:.2f} | {row['objects_per_s']:.0f} | {row['errors']} |")
    (results / "api.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
