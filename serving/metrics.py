"""Prometheus metrics of one serving app, on its own registry (two apps in one process never clash).

Labels follow the field's convention: `model_name`, `model_version`, plus `alias` (empty for a
pinned version); an A/B arm is the (`alias`, `model_version`) pair, and
`berth_serving_route_weight` gives each arm's share of its alias, so a dashboard can set the
split it asked for beside the one it got. Per-request children are bound once per (model,
version, alias) and cached, so the predict path pays a dict lookup, not prometheus_client's
label resolution.

Several worker processes: when `PROMETHEUS_MULTIPROC_DIR` is set before the process starts,
prometheus_client keeps every value in a memory-mapped file there, and `/metrics` on any worker
answers the sum over all of them (`MultiProcessCollector`). Gauges that were computed when
scraped are then set every few seconds by each worker instead, and aggregate per their
`multiprocess_mode` (the worst feed lag, the total of loaded versions).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

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
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

_LABELS = ("model_name", "model_version", "alias")


@dataclass(frozen=True, slots=True)
class EndpointMetrics:
    """Children of the request metrics for one (model, version, alias)."""

    requests: Counter
    latency: Histogram


def multiprocess_mode() -> bool:
    """Whether prometheus_client chose its file-backed values (decided once, at its import)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


class RouteWeights(Collector):
    """`berth_serving_route_weight`: each A/B arm's share of its alias, read when scraped."""

    def __init__(self, routes: Callable[[], Mapping[tuple[str, str], Any]]) -> None:
        self._routes = routes

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "berth_serving_route_weight",
            "Share of an alias's traffic each version (A/B arm) is meant to get, 0 to 1.",
            labels=("model_name", "alias", "model_version"),
        )
        for (model, alias), route in sorted(self._routes().items()):
            total = sum(weight for _, weight in route.weights)
            for version, weight in route.weights:
                family.add_metric((model, alias, str(version)), weight / total if total else 0.0)
        yield family


class ServingMetrics:
    def __init__(self) -> None:
        self.multiprocess = multiprocess_mode()
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
            "berth_serving_feed_position",
            "Last change-feed position applied.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.feed_lag = Gauge(
            "berth_serving_feed_lag_seconds",
            "Seconds since this replica last knew it had every change (0 while connected).",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.feed_errors = Counter(
            "berth_serving_feed_errors", "Failed snapshot or change-feed requests.", registry=r
        )
        self.loaded_models = Gauge(
            "berth_serving_loaded_models",
            "Versions in memory (summed over worker processes).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pending_aliases = Gauge(
            "berth_serving_pending_aliases",
            "Aliases whose latest revision this replica does not serve (loading or failed).",
            registry=r,
            multiprocess_mode="livemax",
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
        self.batch_requests = Histogram(
            "berth_serving_batch_requests",
            "Requests answered by one model call in a worker thread (1: predicted alone).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "berth_serving_batch_rows",
            "Rows one model call in a worker thread predicted.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self._endpoints: dict[tuple[str, int, str], EndpointMetrics] = {}
        self._watched: list[tuple[Gauge, Callable[[], float]]] = []
        self._routes: RouteWeights | None = None

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

    def batch(self, requests: int, rows: int) -> None:
        self.batch_requests.observe(requests)
        self.batch_rows.observe(rows)

    def error(self, model: str, version: int | None, alias: str | None, code: str) -> None:
        self.errors.labels(model, "" if version is None else str(version), alias or "", code).inc()

    def watch(
        self,
        *,
        feed_lag: Callable[[], float],
        loaded: Callable[[], float],
        routes: Callable[[], Mapping[tuple[str, str], Any]],
    ) -> None:
        """Gauges computed when scraped, so they are never stale (in one process)."""
        self._watched = [(self.feed_lag, feed_lag), (self.loaded_models, loaded)]
        if not self.multiprocess:
            # A function gauge has no file to live in: with several workers `refresh` sets them.
            for gauge, read in self._watched:
                gauge.set_function(read)
        self._routes = RouteWeights(routes)
        self.registry.register(self._routes)

    def refresh(self) -> None:
        """Write the watched gauges to this worker's file (several-worker mode only)."""
        if self.multiprocess:
            for gauge, read in self._watched:
                gauge.set(read())

    def render(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        self.refresh()
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        if self._routes is not None:
            # The same on every worker (they follow the same registry), so this one's is right.
            merged.register(self._routes)
        return generate_latest(merged)

    def close(self) -> None:
        """A worker that stops takes its live gauges out of the sums."""
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
