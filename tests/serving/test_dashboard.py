"""The Grafana dashboard in the repository queries only metrics and labels serving exposes."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.servers import REPO_ROOT
from tests.serving.conftest import ServingClient, eventually
from tests.serving.factories import artifact, metadata, regressor, row
from tests.serving.fakes import FakeRegistry

Start = Callable[..., ServingClient]

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "berth-serving.json"

METRIC = re.compile(r"\b(berth_[a-z_]+)(\{[^}]*\})?")
SELECTOR_LABEL = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|ignoring|on)\s*\(([^)]*)\)")


def queries(dashboard: dict[str, Any]) -> list[str]:
    found = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found.append(variable["query"]["query"])
    return found


def exposed(text: str) -> dict[str, set[str]]:
    """Sample name → the label names its series carry."""
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


def test_the_dashboard_is_well_formed() -> None:
    dashboard = json.loads(Path(DASHBOARD).read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for must in ("request rate", "latency", "error"):
        assert must in titles
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


@pytest.fixture
def busy(fake: FakeRegistry, start_serving: Start) -> ServingClient:
    """A replica that has answered, refused, split, shadowed and failed a load: every series."""
    for offset in (1, 2, 3):
        estimator = regressor(offset=offset)
        fake.add_version("churn", artifact(estimator), metadata(estimator))
    fake.corrupt("churn", 3)
    fake.set_alias("churn", "production", variants=[(1, 80), (2, 20)], shadow=(2,))
    serving = start_serving()
    eventually(lambda: serving.get("/readyz").status_code == 200)
    for i in range(10):
        serving.post(
            "/models/churn/predict", json={"input": row()}, headers={"X-Routing-Key": str(i)}
        )
    serving.post("/models/churn/versions/1/predict", json={"input": row()})
    serving.post("/models/nope/predict", json={"input": row()})
    assert serving.post("/models/churn/versions/3/predict", json={"input": row()}).is_error
    eventually(lambda: "berth_serving_shadow_rows_total{" in serving.get("/metrics").text)
    return serving


def test_every_metric_and_label_the_dashboard_queries_exists(busy: ServingClient) -> None:
    dashboard = json.loads(Path(DASHBOARD).read_text())
    series = exposed(busy.get("/metrics").text)
    checked = set()
    for expr in queries(dashboard):
        names = []
        for name, selector in METRIC.findall(expr):
            assert name in series, f"{name} (in {expr!r}) is not in /metrics"
            names.append(name)
            for label in SELECTOR_LABEL.findall(selector or ""):
                assert label in series[name], f"{name} has no label {label}"
        grouped = [label.strip() for group in GROUPING.findall(expr) for label in group.split(",")]
        for label in filter(None, grouped):
            assert any(label in series[name] for name in names), f"no {label} in {expr!r}"
        checked.update(names)
    # The headline panels: rate, latency and errors per version.
    assert {
        "berth_serving_requests_total",
        "berth_serving_request_duration_seconds_bucket",
        "berth_serving_request_errors_total",
        "berth_serving_route_weight",
    } <= checked
