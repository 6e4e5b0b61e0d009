"""Prometheus metrics of one serving app, on its own registry (two apps in one process never clash).

Labels follow the field's convention: `model_name`, `model_version`, plus `alias` (empty for a
pinned version). Per-request children are bound once per (model, version, alias) and cached, so
the predict path pays a dict lookup, not prometheus_client's label resolution.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

_LABELS = ("model_name", "model_version", "alias")


@dataclass(frozen=True, slots=True)
class EndpointMetrics:
    """Children of the request metrics for one (model, version, alias)."""

    requests: Counter
    latency: Histogram


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "berth_serving_requests", "Predict requests answered.", _LABELS, registry=r
        )
        self.errors = Counter(
            "berth_serving_request_errors",
            "Predict requests refused or failed, by error code.",
            (*_LABELS, "error"),
            registry=r,
        )
        self.latency = Histogram(
            "berth_serving_request_duration_seconds",
            "Time from the request reaching the handler to the response body being ready.",
            _LABELS,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.loads = Counter(
            "berth_serving_model_loads",
            "Versions loaded.",
            ("model_name", "model_version"),
            registry=r,
        )
        self.load_failures = Counter(
            "berth_serving_model_load_failures",
            "Version loads that failed, by stage.",
            ("model_name", "model_version", "stage"),
            registry=r,
        )
        self.load_duration = Histogram(
            "berth_serving_model_load_duration_seconds",
            "Download, verify, deserialise and example, per version.",
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        self.evictions = Counter(
            "berth_serving_model_evictions", "Pinned versions dropped from the LRU.", registry=r
        )
        self.swaps = Counter(
            "berth_serving_swaps",
            "Routing changes applied (the alias now serves a new revision).",
            ("model_name", "alias"),
            registry=r,
        )
        self.feed_position = Gauge(
            "berth_serving_feed_position", "Last change-feed position applied.", registry=r
        )
        self.feed_lag = Gauge(
            "berth_serving_feed_lag_seconds",
            "Seconds since this replica last knew it had every change (0 while connected).",
            registry=r,
        )
        self.feed_errors = Counter(
            "berth_serving_feed_errors", "Failed snapshot or change-feed requests.", registry=r
        )
        self.loaded_models = Gauge("berth_serving_loaded_models", "Versions in memory.", registry=r)
        self.pending_aliases = Gauge(
            "berth_serving_pending_aliases",
            "Aliases whose latest revision this replica does not serve (loading or failed).",
            registry=r,
        )
        self.shadow_requests = Counter(
            "berth_serving_shadow_requests",
            "Copies of requests sent to shadow versions, by outcome (ok, error, dropped).",
            (*_LABELS, "outcome"),
            registry=r,
        )
        self.shadow_latency = Histogram(
            "berth_serving_shadow_duration_seconds",
            "Predict time of shadow versions.",
            _LABELS,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.shadow_rows = Counter(
            "berth_serving_shadow_rows",
            "Rows a shadow version predicted, by agreement with the live answer.",
            (*_LABELS, "agreement"),
            registry=r,
        )
        self._endpoints: dict[tuple[str, int, str], EndpointMetrics] = {}

    def endpoint(self, model: str, version: int, alias: str | None) -> EndpointMetrics:
        key = (model, version, alias or "")
        found = self._endpoints.get(key)
        if found is None:
            labels = (model, str(version), alias or "")
            found = EndpointMetrics(
                requests=self.requests.labels(*labels), latency=self.latency.labels(*labels)
            )
            self._endpoints[key] = found
        return found

    def error(self, model: str, version: int | None, alias: str | None, code: str) -> None:
        self.errors.labels(model, "" if version is None else str(version), alias or "", code).inc()

    def watch(self, *, feed_lag: Callable[[], float], loaded: Callable[[], float]) -> None:
        """Gauges computed when scraped, so they are never stale."""
        self.feed_lag.set_function(feed_lag)
        self.loaded_models.set_function(loaded)

    def render(self) -> bytes:
        return generate_latest(self.registry)
