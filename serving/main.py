"""`create_app(settings)`: the composition root of one serving replica."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import FastAPI

from serving.api import PREDICT_SUMMARIES, install_error_handlers, ops_router, predict_routes
from serving.auth import RegistryTokens, predict_guard, reader_guard
from serving.batching import Batcher
from serving.cache import ModelCache
from serving.config import ServingSettings
from serving.errors import LoadFailed, ServingError
from serving.follower import Follower, FollowerOptions
from serving.heartbeat import Heartbeat, build_report
from serving.hotpath import CatchUnexpected, ServingApp
from serving.isolation import IsolatedLoader
from serving.loader import FailureLog, LoadedModel, Loader, LoaderOptions, load_model
from serving.metrics import ServingMetrics
from serving.observability import (
    RequestIdMiddleware,
    Spans,
    configure_logging,
    tracer_provider_from_environment,
)
from serving.openapi import document_auth
from serving.protocols import hot_routes
from serving.protocols import router as protocol_router
from serving.protocols.schemas import protocols_openapi
from serving.registry_client import RegistryClient
from serving.routing import Router
from serving.schemas import predict_openapi
from serving.service import PredictService
from serving.shadow import Shadower

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

logger = logging.getLogger(__name__)


def berth_version() -> str:
    try:
        return version("berth")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "0+unknown"


class Runtime:
    """Everything one replica holds in memory, wired together; started by the app's lifespan."""

    def __init__(
        self,
        settings: ServingSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        spans: Spans | None = None,
    ) -> None:
        self.settings = settings
        self.spans = spans or Spans(None)
        self.started_at = datetime.now(UTC)
        self.metrics = ServingMetrics()
        self.failures = FailureLog()
        self.isolation = (
            IsolatedLoader(
                memory_bytes=settings.load_memory_bytes,
                cpu_seconds=settings.load_cpu_seconds,
                wall_seconds=settings.load_timeout_seconds,
            )
            if settings.load_isolation
            else None
        )
        self.client = RegistryClient(
            settings.api_url,
            token=settings.bearer_token(),
            timeout_seconds=settings.registry_timeout_seconds,
            transport=transport,
        )
        self.loader = Loader(
            self.client,
            options=LoaderOptions(
                download_dir=settings.download_dir,
                inline_max_seconds=settings.inline_predict_max_seconds,
                timeout_seconds=settings.load_timeout_seconds,
                concurrency=settings.load_concurrency,
                onnx=settings.onnx,
            ),
            load=self.isolation or load_model,
            on_loaded=self._loaded,
            on_failure=self._failed,
        )
        self.cache = ModelCache(
            self.spans.wrap_load(self.loader.load),
            max_unheld=settings.serving_max_models,
            on_evict=lambda _: self.metrics.evictions.inc(),
        )
        self.router: Router[LoadedModel] = Router()
        self.heartbeat = Heartbeat(
            self.client,
            settings.replica_id,
            lambda: build_report(self.follower, self.failures, started_at=self.started_at),
            interval_seconds=settings.heartbeat_seconds,
        )
        self.follower = Follower(
            self.client,
            self.cache,
            self.router,
            options=FollowerOptions(
                feed_wait_seconds=settings.feed_wait_seconds,
                feed_limit=settings.feed_limit,
                backoff_min_seconds=settings.backoff_min_seconds,
                backoff_max_seconds=settings.backoff_max_seconds,
                failed_retry_seconds=settings.failed_retry_seconds,
            ),
            metrics=self.metrics,
            on_swap=self.heartbeat.poke,
        )
        self.shadower = Shadower(
            self.metrics,
            max_in_flight=settings.shadow_max_in_flight,
            rtol=settings.shadow_rtol,
            atol=settings.shadow_atol,
        )
        self.service = PredictService(
            self.router,
            self.cache,
            self.shadower,
            self.metrics,
            default_alias=settings.default_alias,
            inline_max_rows=settings.inline_predict_max_rows,
            spans=self.spans,
            failed_retry_seconds=settings.failed_retry_seconds,
            batcher=(
                Batcher(
                    max_rows=settings.batch_max_rows,
                    max_wait_seconds=settings.batch_max_wait_ms / 1000,
                    observe=self.metrics.batch,
                )
                if settings.batching
                else None
            ),
        )
        self.metrics.watch(
            feed_lag=self.follower.lag_seconds,
            loaded=lambda: len(self.cache),
            routes=lambda: self.router.table,
        )
        self.tokens = (
            RegistryTokens(
                settings.api_url,
                timeout_seconds=settings.registry_timeout_seconds,
                ttl_seconds=settings.token_cache_seconds,
                transport=transport,
            )
            if settings.auth
            else None
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = False
        self.draining = False
        """Set by SIGTERM (serving.shutdown): not ready from then on, while still serving."""

    def _loaded(self, model: LoadedModel) -> None:
        self.metrics.loads.labels(model.name, str(model.version)).inc()
        self.metrics.load_duration.observe(model.load_seconds)

    def _failed(self, failure: LoadFailed) -> None:
        self.failures.record(failure)
        self.metrics.load_failures.labels(failure.model, str(failure.version), failure.stage).inc()

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.follower.run(), name="routing follower"),
            asyncio.create_task(self.heartbeat.run(), name="replica heartbeat"),
        ]
        if self.metrics.multiprocess:
            self._tasks.append(asyncio.create_task(self._refresh_metrics(), name="metrics"))

    async def _refresh_metrics(self) -> None:
        # With several workers a scrape reads every worker's file; keep this one's gauges fresh.
        while True:
            self.metrics.refresh()
            await asyncio.sleep(self.settings.heartbeat_seconds)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(self.client.deregister(self.settings.replica_id), timeout=2)
        except (ServingError, TimeoutError) as exc:
            # Best effort: the registry's liveness timeout covers a replica that cannot say so.
            logger.info("could not deregister from the registry: %s", exc)
        await self.shadower.close()
        await self.cache.close()
        await self.client.aclose()
        if self.tokens is not None:
            await self.tokens.aclose()
        if self.isolation is not None:
            await asyncio.to_thread(self.isolation.close)
        self.metrics.close()

    # --- operations -----------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready once the first snapshot's default aliases serve, or failed for good.

        Latched: once ready, a replica stays ready while it loads later promotions (it keeps
        serving the old revision meanwhile), so a fleet is never pulled out of rotation at once.
        Only SIGTERM (`begin_drain`) makes it not ready again, for good.
        """
        if self.draining:
            return False, {"reason": "shutting down"}
        if self._ready:
            return True, {}
        if not self.follower.settled.is_set():
            return False, {"reason": "the routing snapshot is not applied yet"}
        alias = self.settings.default_alias
        waiting = [
            f"{model}/{name}"
            for (model, name) in self.follower.desired
            if name == alias
            and (model, name) not in self.follower.live
            and (model, name) in self.follower.pending()
            and (self.follower.waiting_on_outage((model, name)) or self._loading(model, name))
        ]
        if waiting:
            return False, {"reason": "default aliases are still loading", "aliases": waiting}
        self._ready = True
        return True, {}

    def begin_drain(self) -> None:
        self.draining = True

    def _loading(self, model: str, alias: str) -> bool:
        spec = self.follower.desired[(model, alias)]
        in_flight = set(self.cache.loading())
        return any((model, v) in in_flight for v in spec.needed())

    def status(self) -> dict[str, Any]:
        follower = self.follower
        pending = follower.pending()
        return {
            "replica_id": self.settings.replica_id,
            "started_at": self.started_at.isoformat(),
            "ready": self.readiness()[0],
            "feed": {
                "position": follower.position,
                "head": follower.head,
                "behind": follower.behind(),
                "connected": follower.connected,
                "lag_seconds": round(follower.lag_seconds(), 3),
                "last_report_at": (
                    self.heartbeat.last_ok.isoformat() if self.heartbeat.last_ok else None
                ),
                "last_report_error": self.heartbeat.last_error,
            },
            "aliases": [
                {
                    "model": route.model,
                    "alias": route.alias,
                    "revision": route.revision,
                    "variants": [{"version": v, "weight": w} for v, w in route.weights],
                    "shadow": list(route.shadow_versions),
                    "pending_revision": pending[key].revision if key in pending else None,
                    "pending_reason": self.router.pending.get(key),
                }
                for key, route in sorted(self.router.table.items())
            ]
            + [
                {
                    "model": spec.model,
                    "alias": spec.alias,
                    "revision": None,
                    "variants": [],
                    "shadow": [],
                    "pending_revision": spec.revision,
                    "pending_reason": self.router.pending.get(key),
                }
                for key, spec in sorted(pending.items())
                if key not in self.router.table
            ],
            "loaded": [
                {
                    "model": m.name,
                    "version": m.version,
                    "sha256": m.sha256,
                    "flavor": m.flavor,
                    "loaded_at": m.loaded_at.isoformat(),
                    "load_seconds": round(m.load_seconds, 4),
                    "runtime": m.runtime,
                    "runtime_note": m.runtime_note,
                    "predict_on_loop": m.inline,
                    "behind_alias": self.cache.is_held((m.name, m.version)),
                }
                for m in sorted(self.cache.entries(), key=lambda m: (m.name, m.version))
            ],
            "loading": [{"model": n, "version": v} for n, v in self.cache.loading()],
            "failures": [
                {
                    "model": f.model,
                    "version": f.version,
                    "stage": f.stage,
                    "message": f.message,
                    "transient": f.transient,
                    "at": f.at.isoformat(),
                }
                for f in self.failures.recent()
            ],
            "shadow": [
                {"model": m, "alias": a, "version": v, **stats.as_dict()}
                for (m, a, v), stats in sorted(self.shadower.stats.items())
            ],
        }


def create_app(
    settings: ServingSettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """A serving replica as an ASGI app; its lifespan starts and stops the follower.

    `transport` lets a caller (tests, the all-in-one `berth up`) reach the registry in-process.
    Tracing is on when `tracer_provider` is given, or when the standard `OTEL_*` variables ask
    for it (the provider built from them is shut down, and its spans flushed, with the app).
    """
    owned = tracer_provider is None
    provider = (
        tracer_provider if tracer_provider is not None else tracer_provider_from_environment()
    )
    tracer = provider.get_tracer("berth.serving", berth_version()) if provider else None
    runtime = Runtime(settings, transport=transport, spans=Spans(tracer))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()
            if provider is not None and owned:
                await asyncio.to_thread(provider.shutdown)

    app = ServingApp(
        title="Berth serving",
        description="Predictions from the versions the registry's aliases point at, in Berth's "
        "own JSON, the Open Inference Protocol (V2), KServe V1 and MLflow's scoring protocol.",
        lifespan=lifespan,
        # A path is one of the API's or a 404: no redirect that echoes the request's own
        # segments (`/v2/models/../` → `/v2/models/..`) back to the client, as in the registry.
        redirect_slashes=False,
        # FastAPI's native OpenTelemetry makes the server span of every request (W3C context
        # in, route and status on the span) once it has a provider; without one it would look
        # up the global providers on every request (about 5 us), so it stays off.
        telemetry=(
            {
                "tracing": True,
                "tracer_provider": provider,
                "metrics": False,
                "logs": False,
                "operation_spans": False,
                "auto_configure": False,
            }
            if provider is not None
            else {"tracing": False, "metrics": False, "logs": False}
        ),
    )
    app.state.runtime = runtime
    app.state.authorize_reader = reader_guard(runtime.tokens)
    # Every protocol's model routes take the same guard as Berth's own predict routes.
    guard = predict_guard(runtime.tokens, anonymous=settings.anonymous_predict)
    install_error_handlers(app)
    app.add_middleware(CatchUnexpected)
    app.add_middleware(RequestIdMiddleware)  # outermost: a 500 carries the request id too
    app.include_router(ops_router(runtime))
    app.include_router(protocol_router(runtime, server_version=berth_version(), guard=guard))
    # The inference routes take the short way past the middleware stack (serving.hotpath),
    # except while tracing, when FastAPI's telemetry must make each request's server span.
    # They also lead the router's list: it tries routes in order, and matching the docs and
    # operations routes first cost about 15 us per predict on the full stack.
    inference = [
        *predict_routes(
            runtime.service, max_body_bytes=settings.max_predict_bytes, authorize=guard
        ),
        *hot_routes(runtime, guard=guard),
    ]
    app.router.routes[0:0] = inference
    if provider is None:
        app.take_short_way(inference)
    _document_predict_routes(app)
    document_auth(app)
    return app


def app_from_environment() -> FastAPI:
    """The app as a worker process builds it: settings and logging from the environment.

    For process managers that start the workers themselves: `uvicorn --factory --workers N
    serving.main:app_from_environment`, or gunicorn's uvicorn worker with the same factory.
    """
    settings = ServingSettings()
    configure_logging(
        level=settings.log_level,
        json_lines=settings.log_format == "json",
        access_log=settings.access_log,
    )
    return create_app(settings)


def _document_predict_routes(app: FastAPI) -> None:
    """Add the predict routes, which are plain Starlette routes, to the generated OpenAPI."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            paths, components = predict_openapi(PREDICT_SUMMARIES)
            protocol_paths, protocol_components = protocols_openapi()
            schema["paths"] = paths | protocol_paths | schema.get("paths", {})
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(components)
            schemas.update(protocol_components)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
