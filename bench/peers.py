"""Servers that are not Berth, each in a virtualenv of its own under bench/.venvs/.

`ensure_venv` creates one on first use (pip from PyPI; scikit-learn, numpy and joblib held at
the project's pins from constraints.txt, so every server predicts with the same library), and
re-installs only when the requested package list changes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import REPO_ROOT, SERVER_CORE, VENVS, Endpoint, Process, free_port, inputs_body

FEATURES = 10
NUMERIC = {"scikit-learn", "numpy", "scipy", "joblib", "threadpoolctl"}


def ensure_venv(name: str, packages: list[str]) -> Path:
    venv = VENVS / name
    stamp = venv / ".bench-installed"
    wanted = "\n".join(packages)
    if stamp.exists() and stamp.read_text() == wanted:
        return venv
    print(f"  creating bench/.venvs/{name}: pip install {' '.join(packages)}", flush=True)
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    # Only the numeric stack is held at the project's pins: the peers' own dependencies (their
    # web frameworks) resolve as their authors pinned them, as a user installing them would get.
    pins = venv / "numeric-pins.txt"
    pins.write_text(
        "".join(
            line + "\n"
            for line in (REPO_ROOT / "constraints.txt").read_text().splitlines()
            if line.split("==")[0].lower() in NUMERIC
        )
    )
    subprocess.run([*pip, "-c", str(pins), *packages], check=True)
    stamp.write_text(wanted)
    return venv


def versions(venv: Path, packages: list[str]) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys; "
        "print(json.dumps({p: m.version(p) for p in sys.argv[1:]}))"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code, *packages],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, str] = json.loads(out.stdout)
    return result


@dataclass(frozen=True)
class PeerServer:
    name: str
    serve: Callable[[Path, Path, Path], Iterator[Any]]


# --- MLflow -----------------------------------------------------------------------------------

MLFLOW_PACKAGES = ["mlflow", "scikit-learn", "numpy", "joblib", "pandas"]


def mlflow_serve(model_path: Path, workdir: Path, logs: Path) -> Iterator[Any]:
    venv = ensure_venv("mlflow", MLFLOW_PACKAGES)
    model_dir = workdir / f"mlflow-{model_path.stem}"
    if not model_dir.exists():
        # The model saved MLflow's way, by MLflow itself, from the same joblib file.
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import sys, joblib, mlflow.sklearn; "
                "mlflow.sklearn.save_model(joblib.load(sys.argv[1]), sys.argv[2])",
                str(model_path),
                str(model_dir),
            ],
            check=True,
            capture_output=True,
        )
    port = free_port()
    process = Process(
        [
            str(venv / "bin" / "mlflow"),
            "models",
            "serve",
            "-m",
            str(model_dir),
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        core=SERVER_CORE,
        env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(workdir)},
        port=port,
        log_path=logs / f"mlflow-{model_path.stem}.log",
        health_path="/ping",
    )
    process.start(timeout=180)
    try:
        yield Endpoint(process.url + "/invocations", inputs_body)
    finally:
        process.stop()


# --- MLServer ---------------------------------------------------------------------------------

MLSERVER_PACKAGES = ["mlserver", "mlserver-sklearn", "scikit-learn", "numpy", "joblib", "uvloop"]


def v2_body(batch: list[list[float]]) -> bytes:
    flat = [v for row in batch for v in row]
    return json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [len(batch), FEATURES],
                    "datatype": "FP64",
                    "data": flat,
                }
            ]
        }
    ).encode()


def mlserver_serve(model_path: Path, workdir: Path, logs: Path) -> Iterator[Any]:
    venv = ensure_venv("mlserver", MLSERVER_PACKAGES)
    root = workdir / f"mlserver-{model_path.stem}"
    model_dir = root / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # Tuned as the table was: one worker, inference in the server process
    # (parallel_workers 0), no adaptive batching, no metrics server, gRPC off.
    (root / "settings.json").write_text(
        json.dumps(
            {
                "http_port": port,
                "host": "127.0.0.1",
                "grpc_port": free_port(),
                "parallel_workers": 0,
                "metrics_endpoint": None,
                "debug": False,
            }
        )
    )
    (model_dir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "bench",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "max_batch_size": 0,
                "max_batch_time": 0,
                "parameters": {"uri": str(model_path)},
            }
        )
    )
    process = Process(
        [str(venv / "bin" / "mlserver"), "start", str(root)],
        core=SERVER_CORE,
        env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(workdir)},
        port=port,
        log_path=logs / f"mlserver-{model_path.stem}.log",
        health_path="/v2/models/bench/ready",
    )
    process.start(timeout=180)
    try:
        yield Endpoint(process.url + "/v2/models/bench/infer", v2_body)
    finally:
        process.stop()


PEERS = {
    "mlflow": PeerServer("mlflow", mlflow_serve),
    "mlserver": PeerServer("mlserver", mlserver_serve),
}
