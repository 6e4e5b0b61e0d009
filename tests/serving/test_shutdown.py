"""Graceful shutdown of a real serving process: not ready first, in-flight requests finish, exit 0.

The requests in flight are honest ones: their bodies arrive slowly (a client on a slow link), so
each is still being received when SIGTERM arrives and for seconds after it, through the not-ready
delay and into the drain. No timing is asserted beyond the grace period the manifests give a pod.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Backend, RunningRegistry, make_settings, run_registry
from tests.fixtures.factories import upload_ok
from tests.fixtures.servers import ServiceProcess
from tests.serving.conftest import eventually
from tests.serving.factories import artifact, metadata, regressor, row

pytestmark = pytest.mark.slow

DELAY_SECONDS = 1.5
DRAIN_SECONDS = 10
GRACE_SECONDS = 30
"""Below the serving pods' terminationGracePeriodSeconds (40, deploy/kubernetes)."""
IN_FLIGHT = 4
BODY_SECONDS = 3.0
"""How long each slow request keeps sending its body after it starts: past the delay."""


def slow_body(rows: int, started: threading.Event) -> Iterator[bytes]:
    yield b'{"inputs": ['
    started.set()
    for i in range(rows):
        time.sleep(BODY_SECONDS / rows)
        yield (b"," if i else b"") + json.dumps(row()).encode()
    yield b"]}"


@pytest.fixture
def registry(sqlite_url: str, tmp_path: Path) -> Iterator[RunningRegistry]:
    backend = Backend("sqlite+file", sqlite_url, (tmp_path / "artifacts").as_uri())
    yield from run_registry(make_settings(backend, tmp_path))


def test_sigterm_reports_not_ready_then_finishes_requests_in_flight_and_exits_0(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    estimator = regressor(offset=1)
    meta = metadata(estimator).model_dump(mode="json", exclude_none=True)
    upload_ok(registry.api, "churn", artifact(estimator), metadata=meta)
    promoted = registry.api.put("/models/churn/aliases/production", json={"version": 1})
    assert promoted.status_code == 200, promoted.text
    serving = ServiceProcess(
        ["serving"],
        env={
            "BERTH_REGISTRY_URL": registry.url,
            "BERTH_AUTH": "false",
            "BERTH_LOAD_ISOLATION": "false",
            "BERTH_SHUTDOWN_DELAY_SECONDS": str(DELAY_SECONDS),
            "BERTH_SHUTDOWN_DRAIN_SECONDS": str(DRAIN_SECONDS),
        },
        log_path=tmp_path / "serving.log",
    )
    with serving, httpx.Client(base_url=serving.url, timeout=30) as client:
        eventually(lambda: client.get("/readyz").status_code == 200, within=30)
        predict = "/models/churn/predict"
        assert client.post(predict, json={"inputs": [row()]}).status_code == 200

        results: list[httpx.Response | Exception] = []
        starts = [threading.Event() for _ in range(IN_FLIGHT)]

        def send_slowly(started: threading.Event) -> None:
            # A client of its own per request: one connection each, as separate callers.
            with httpx.Client(base_url=serving.url, timeout=30) as own:
                try:
                    results.append(own.post(predict, content=slow_body(12, started)))
                except httpx.HTTPError as exc:
                    results.append(exc)

        threads = [threading.Thread(target=send_slowly, args=(e,)) for e in starts]
        for thread in threads:
            thread.start()
        for started in starts:
            assert started.wait(10)
        time.sleep(0.2)  # the first bytes have reached the server
        assert serving.process is not None
        serving.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        # Not ready at once, yet still answering new requests while load balancers catch up.
        def not_ready() -> bool:
            return client.get("/readyz").status_code == 503

        eventually(not_ready, within=DELAY_SECONDS / 2)
        assert client.get("/readyz").json()["detail"] == {"reason": "shutting down"}
        assert serving.process.poll() is None
        answer = client.post(predict, json={"inputs": [row()]})
        assert answer.status_code == 200, answer.text

        returncode = serving.process.wait(timeout=GRACE_SECONDS)
        exited_after = time.monotonic() - signalled
        for thread in threads:
            thread.join(timeout=10)

    assert returncode == 0
    assert exited_after < GRACE_SECONDS
    assert len(results) == IN_FLIGHT
    for result in results:
        assert isinstance(result, httpx.Response), repr(result)
        assert result.status_code == 200, result.text
        assert result.json()["predictions"] == pytest.approx([4.0] * 12)
