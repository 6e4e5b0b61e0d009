"""Benchmark: a 200 MB upload's cost in registry memory and throughput (not part of `make test`).

Starts moto's S3 server and `python -m registry serve` as child processes on a scratch Postgres
database, streams a 200 MB artifact from disk into the registry while a thread samples the
registry's resident memory (/proc/<pid>/status VmRSS every ~20 ms, plus the kernel's own VmHWM
high-water mark, reset just before the upload), then uploads the same file straight to the same
endpoint with boto3's `upload_file` for comparison.

Targets (issue 2): peak RSS growth < 64 MB; registry throughput >= 0.5x the direct upload.
Writes bench/results/upload.json and exits 1 if a target is missed.

    make bench-upload        # or: .venv/bin/python bench/upload_memory.py --size-mb 200
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
from boto3.s3.transfer import TransferConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.fixtures.databases import (  # noqa: E402
    DEFAULT_TEST_DATABASE_URL,
    create_database,
    drop_database,
)

MB = 1_000_000
MiB = 1024 * 1024
RSS_TARGET_MB = 64.0
RATIO_TARGET = 0.5
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "berth-bench",
    "AWS_SECRET_ACCESS_KEY": "berth-bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


# --- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, process: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise TimeoutError(f"{what} did not answer within {timeout} s")


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(args, env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# --- memory ---------------------------------------------------------------------------------


def proc_status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_high_water_mark(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class RssSampler:
    """Samples a process's VmRSS every `interval` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - started, proc_status_kib(self.pid, "VmRSS")))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_kib(self) -> int:
        return max(kib for _, kib in self.samples)


# --- the upload -----------------------------------------------------------------------------


def make_artifact(path: Path, size: int) -> str:
    """Write a `size`-byte artifact of random content to `path`; returns its sha256.

    The registry scans every `sklearn` artifact as a pickle, so the random bytes travel inside
    one BINBYTES8 opcode, the way joblib's inline arrays do: the scan skips them, as it would a
    real model's weights.
    """
    digest = hashlib.sha256()
    header = b"\x80\x04\x8e" + (size - 12).to_bytes(8, "little")
    with path.open("wb") as out:
        digest.update(header)
        out.write(header)
        remaining = size - 12
        while remaining:
            block = os.urandom(min(8 * MiB, remaining))
            digest.update(block)
            out.write(block)
            remaining -= len(block)
        digest.update(b".")
        out.write(b".")
    return digest.hexdigest()


BOUNDARY = "berth-bench-boundary"


def multipart_body(path: Path, declared_sha256: str | None) -> tuple[Iterator[bytes], int]:
    """A multipart/form-data body streamed from disk in 1 MiB reads, and its exact length.

    With `declared_sha256`, a metadata part declaring the digest goes first, as `berth push`
    sends it: the registry can then stream straight to the object's final key.
    """
    metadata = (
        (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="metadata"\r\n\r\n'
            f'{{"sha256": "{declared_sha256}"}}\r\n'
        ).encode()
        if declared_sha256
        else b""
    )
    head = (
        metadata
        + (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="artifact"; filename="model.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
    )
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()

    def chunks() -> Iterator[bytes]:
        yield head
        with path.open("rb") as artifact:
            while block := artifact.read(MiB):
                yield block
        yield tail

    return chunks(), len(head) + path.stat().st_size + len(tail)


def upload_through_registry(
    url: str, path: Path, declared_sha256: str | None = None
) -> tuple[dict[str, Any], float]:
    body, length = multipart_body(path, declared_sha256)
    headers = {
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        "Content-Length": str(length),
    }
    started = time.perf_counter()
    response = httpx.post(url, content=body, headers=headers, timeout=600)
    elapsed = time.perf_counter() - started
    if response.status_code != 201:
        raise RuntimeError(f"upload failed: {response.status_code} {response.text[:500]}")
    version: dict[str, Any] = response.json()
    return version, elapsed


def upload_direct(endpoint: str, bucket: str, path: Path) -> float:
    client = boto3.client("s3", endpoint_url=endpoint)
    started = time.perf_counter()
    # boto3's defaults (8 MiB parts, 10 threads): what a user calling upload_file would get.
    client.upload_file(str(path), bucket, "direct/model.bin", Config=TransferConfig())
    elapsed = time.perf_counter() - started
    client.delete_object(Bucket=bucket, Key="direct/model.bin")
    return elapsed


@dataclass(frozen=True)
class Round:
    baseline_kib: int
    peak_kib: int
    hwm_after_kib: int
    hwm_reset: bool
    samples: int
    registry_seconds: float
    declared_seconds: float
    direct_seconds: float

    @property
    def growth_mb(self) -> float:
        peak = max(self.peak_kib, self.hwm_after_kib if self.hwm_reset else 0)
        return (peak - self.baseline_kib) * 1024 / MB

    def as_json(self, size: int) -> dict[str, Any]:
        return {
            "baseline_rss_mib": round(self.baseline_kib / 1024, 1),
            "peak_rss_mib_sampled": round(self.peak_kib / 1024, 1),
            "vmhwm_mib_after": round(self.hwm_after_kib / 1024, 1),
            "vmhwm_reset_before_upload": self.hwm_reset,
            "samples": self.samples,
            "peak_growth_mb": round(self.growth_mb, 1),
            "registry_seconds": round(self.registry_seconds, 2),
            "registry_mb_per_s": round(size / MB / self.registry_seconds, 1),
            "declared_seconds": round(self.declared_seconds, 2),
            "declared_mb_per_s": round(size / MB / self.declared_seconds, 1),
            "direct_seconds": round(self.direct_seconds, 2),
            "direct_mb_per_s": round(size / MB / self.direct_seconds, 1),
        }


def measure_round(
    pid: int, upload_url: str, endpoint: str, bucket: str, artifact: Path, expected: str
) -> Round:
    """One upload through the registry under the RSS sampler, then one direct upload."""
    time.sleep(0.5)
    hwm_reset = reset_high_water_mark(pid)
    baseline_kib = proc_status_kib(pid, "VmRSS")
    print(f"registry pid {pid}: baseline RSS {baseline_kib / 1024:.1f} MiB, uploading ...")
    with RssSampler(pid) as sampler:
        version, registry_seconds = upload_through_registry(upload_url, artifact)
        time.sleep(0.1)
        print("again, declaring the digest first (as `berth push` does) ...", flush=True)
        declared, declared_seconds = upload_through_registry(upload_url, artifact, expected)
        time.sleep(0.1)
    hwm_after_kib = proc_status_kib(pid, "VmHWM")
    for stored in (version, declared):
        if stored["sha256"] != expected:
            raise RuntimeError(f"registry stored {stored['sha256']}, expected {expected}")
    print("uploading the same file straight to S3 with boto3 upload_file ...", flush=True)
    direct_seconds = upload_direct(endpoint, bucket, artifact)
    return Round(
        baseline_kib=baseline_kib,
        peak_kib=sampler.peak_kib,
        hwm_after_kib=hwm_after_kib,
        hwm_reset=hwm_reset,
        samples=len(sampler.samples),
        registry_seconds=registry_seconds,
        declared_seconds=declared_seconds,
        direct_seconds=direct_seconds,
    )


# --- main -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200, help="artifact size in MB (10^6)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BERTH_TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL),
        help="Postgres server to create the scratch database on",
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved upload pairs")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench/results/upload.json")
    args = parser.parse_args()
    size = args.size_mb * MB

    workdir = Path(tempfile.mkdtemp(prefix="berth-bench-"))
    moto = registry = None
    database_url: str | None = None
    try:
        moto_port = free_port()
        endpoint = f"http://127.0.0.1:{moto_port}"
        env = os.environ | S3_ENV | {"AWS_ENDPOINT_URL": endpoint}
        os.environ.update(S3_ENV | {"AWS_ENDPOINT_URL": endpoint})
        moto = start(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
            env,
            workdir / "moto.log",
        )
        wait_http(endpoint, moto, "moto")
        bucket = f"berth-bench-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)

        database_url = create_database(args.database_url)
        port = free_port()
        registry = start(
            [sys.executable, "-m", "registry", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env
            | {
                "BERTH_DATABASE_URL": database_url,
                "BERTH_ARTIFACT_STORE": f"s3://{bucket}/artifacts",
                "BERTH_AUTH": "false",
                "BERTH_DATA_DIR": str(workdir / "data"),
            },
            workdir / "registry.log",
        )
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz", registry, "the registry")
        upload_url = base + "/api/v1/models/bench/versions"

        print(f"writing a {args.size_mb} MB artifact ...", flush=True)
        artifact = workdir / "model.bin"
        expected_sha256 = make_artifact(artifact, size)

        # Warm up: first-request imports, connection pools and the S3 client are paid for before
        # the baseline, so the growth measured is the upload's own.
        warm = workdir / "warm.bin"
        make_artifact(warm, 16 * MiB)
        upload_through_registry(upload_url, warm)
        time.sleep(0.5)

        rounds = [
            measure_round(registry.pid, upload_url, endpoint, bucket, artifact, expected_sha256)
            for _ in range(args.rounds)
        ]

        # Memory: the worst round. Throughput: medians of interleaved rounds, so a burst of load
        # from elsewhere on the machine cannot land on only one side of the comparison.
        worst = max(rounds, key=lambda r: r.growth_mb)
        registry_mbps = statistics.median(size / MB / r.registry_seconds for r in rounds)
        declared_mbps = statistics.median(size / MB / r.declared_seconds for r in rounds)
        direct_mbps = statistics.median(size / MB / r.direct_seconds for r in rounds)
        # The target is judged on what Berth's own client does (declare the digest first);
        # the plain-curl path, which pays a server-side copy, is reported beside it.
        ratio = declared_mbps / direct_mbps
        undeclared_ratio = registry_mbps / direct_mbps
        rss_pass = worst.growth_mb < RSS_TARGET_MB
        ratio_pass = ratio >= RATIO_TARGET

        result = {
            "benchmark": "upload_memory",
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "artifact_bytes": size,
            "artifact_sha256": expected_sha256,
            "rounds": args.rounds,
            "memory": {
                "peak_growth_mb": round(worst.growth_mb, 1),
                "target_mb": RSS_TARGET_MB,
                "pass": rss_pass,
                "method": "VmRSS sampled every 20 ms and VmHWM (reset before each upload via "
                "clear_refs), minus VmRSS just before the upload; the larger, worst round",
            },
            "throughput": {
                "registry_declared_digest_mb_per_s_median": round(declared_mbps, 1),
                "registry_undeclared_mb_per_s_median": round(registry_mbps, 1),
                "direct_upload_file_mb_per_s_median": round(direct_mbps, 1),
                "ratio": round(ratio, 2),
                "undeclared_ratio": round(undeclared_ratio, 2),
                "target_ratio": RATIO_TARGET,
                "pass": ratio_pass,
            },
            "per_round": [r.as_json(size) for r in rounds],
            "setup": {
                "store": "moto server (separate process) on 127.0.0.1",
                "database": "Postgres scratch database",
                "registry": "python -m registry serve, default settings (8 MiB upload parts)",
                "client": "httpx, multipart body streamed from disk in 1 MiB reads",
                "direct": "boto3 upload_file, default TransferConfig",
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            },
        }
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")

        print()
        print(f"artifact             {size / MB:.0f} MB x {args.rounds} rounds, sha256 verified")
        for i, r in enumerate(rounds, 1):
            print(
                f"  round {i}            RSS {r.baseline_kib / 1024:.1f} -> "
                f"{r.peak_kib / 1024:.1f} MiB (VmHWM {r.hwm_after_kib / 1024:.1f}), "
                f"+{r.growth_mb:.1f} MB; registry {size / MB / r.declared_seconds:.1f} MB/s "
                f"(undeclared {size / MB / r.registry_seconds:.1f}), "
                f"direct {size / MB / r.direct_seconds:.1f} MB/s"
            )
        print(
            f"peak RSS growth      {worst.growth_mb:.1f} MB (target < {RSS_TARGET_MB:.0f} MB)  "
            f"{'PASS' if rss_pass else 'FAIL'}"
        )
        print(
            f"throughput (median)  registry {declared_mbps:.1f} MB/s with the digest declared, "
            f"{registry_mbps:.1f} MB/s without; direct upload_file {direct_mbps:.1f} MB/s"
        )
        print(
            f"ratio                {ratio:.2f}x declared (target >= {RATIO_TARGET}x)  "
            f"{'PASS' if ratio_pass else 'FAIL'}; {undeclared_ratio:.2f}x undeclared"
        )
        print(f"results              {args.output}")
        return 0 if rss_pass and ratio_pass else 1
    except BaseException:
        for log in ("registry.log", "moto.log"):
            if (workdir / log).exists():
                tail = (workdir / log).read_text(errors="replace").splitlines()[-30:]
                print(f"--- {log} (last lines)", *tail, sep="\n", file=sys.stderr)
        raise
    finally:
        stop(registry)
        stop(moto)
        if database_url is not None:
            drop_database(args.database_url, database_url)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
