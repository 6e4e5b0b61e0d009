"""Metrics of several worker processes add up: prometheus_client's multiprocess mode.

Real `python -m serving` processes (prometheus_client picks its file-backed values at import, so
this cannot be shown in the test process) against the fake registry served over HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.servers import LiveServer, ServiceProcess
from tests.serving.conftest import eventually
from tests.serving.factories import artifact, metadata, regressor, row
from tests.serving.fakes import FakeRegistry

pytestmark = pytest.mark.slow


@pytest.fixture
def registry_url(fake: FakeRegistry) -> Iterator[str]:
    estimator = regressor(offset=1)
    fake.add_version("churn", artifact(estimator), metadata(estimator))
    fake.set_alias("churn", "production", 1)
    with LiveServer(fake.app) as server:
        yield server.url


def serving_env(registry_url: str, metrics_dir: Path | None) -> dict[str, str]:
    env = {
        "BERTH_REGISTRY_URL": registry_url,
        "BERTH_FEED_WAIT_SECONDS": "1",
        "BERTH_HEARTBEAT_SECONDS": "0.3",
        "BERTH_LOG_FORMAT": "text",
        # Authentication and isolated loading have their own tests (tests/security).
        "BERTH_AUTH": "false",
        "BERTH_LOAD_ISOLATION": "false",
    }
    if metrics_dir is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    return env


def find(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in a Prometheus exposition, None when it is absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = "^" + re.escape(name + ("{" + wanted + "}" if wanted else "")) + r" (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return None if found is None else float(found.group(1))


def sample(text: str, name: str, **labels: str) -> float:
    value = find(text, name, **labels)
    assert value is not None, f"{name} {labels} not in:\n{text}"
    return value


LABELS = {"model_name": "churn", "model_version": "1", "alias": "production"}


def test_two_processes_sharing_a_metrics_dir_report_the_sum(
    registry_url: str, tmp_path: Path
) -> None:
    env = serving_env(registry_url, tmp_path)
    first = ServiceProcess(["serving"], env=env, log_path=tmp_path / "a.log")
    second = ServiceProcess(["serving"], env=env, log_path=tmp_path / "b.log")
    with first, second, httpx.Client(timeout=30) as client:
        for replica in (first, second):
            eventually(lambda r=replica: client.get(r.url + "/readyz").status_code == 200)
        for replica, count in ((first, 3), (second, 5)):
            for _ in range(count):
                answer = client.post(replica.url + "/models/churn/predict", json={"input": row()})
                assert answer.status_code == 200
        assert client.post(second.url + "/models/nope/predict", json={"input": row()}).is_error

        for replica in (first, second):
            text = client.get(replica.url + "/metrics").text
            assert sample(text, "berth_serving_requests_total", **LABELS) == 8.0
            assert sample(text, "berth_serving_request_duration_seconds_count", **LABELS) == 8.0
            assert (
                sample(
                    text, "berth_serving_model_loads_total", model_name="churn", model_version="1"
                )
                == 2.0
            )
            errors = sample(
                text,
                "berth_serving_request_errors_total",
                model_name="",
                model_version="",
                alias="",
                error="model_not_found",
            )
            assert errors == 1.0
            # Set by each worker every few seconds, summed over the live ones.
            eventually(
                lambda r=replica: (
                    sample(client.get(r.url + "/metrics").text, "berth_serving_loaded_models")
                    == 2.0
                )
            )
            assert (
                sample(
                    text,
                    "berth_serving_route_weight",
                    model_name="churn",
                    alias="production",
                    model_version="1",
                )
                == 1.0
            )

    # A stopped worker's live gauges leave the sum; its counters stay (they are history).
    with ServiceProcess(["serving"], env=env) as third, httpx.Client(timeout=30) as client:
        eventually(lambda: client.get(third.url + "/readyz").status_code == 200)
        text = client.get(third.url + "/metrics").text
        assert sample(text, "berth_serving_requests_total", **LABELS) == 8.0
        eventually(
            lambda: (
                sample(client.get(third.url + "/metrics").text, "berth_serving_loaded_models")
                == 1.0
            )
        )


def test_workers_flag_sums_its_workers_without_any_setup(registry_url: str, tmp_path: Path) -> None:
    """`python -m serving --workers 2` creates the shared directory itself."""
    process = ServiceProcess(
        ["serving", "--workers", "2"],
        env=serving_env(registry_url, None),
        log_path=tmp_path / "workers.log",
    )
    with process, httpx.Client(timeout=30) as client:

        def loads() -> float | None:
            text = client.get(process.url + "/metrics").text
            return find(
                text, "berth_serving_model_loads_total", model_name="churn", model_version="1"
            )

        # Both workers loaded the version, whichever of them answers the scrape.
        eventually(lambda: loads() == 2.0, within=30)
        for _ in range(20):
            # A new connection each time, so the kernel may hand it to either worker.
            answer = httpx.post(process.url + "/models/churn/predict", json={"input": row()})
            assert answer.status_code == 200
        text = client.get(process.url + "/metrics").text
        assert sample(text, "berth_serving_requests_total", **LABELS) == 20.0
