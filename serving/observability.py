"""Request ids, structured predict logs and optional OpenTelemetry spans for serving.

Everything here sits on the predict path, so each piece is built to cost next to nothing when it
is off and a few microseconds when it is on (measured figures are in the README):

- `RequestIdMiddleware`: every response carries `X-Request-Id`, the caller's own when it is
  well-formed, else a fresh one; log lines written while the request runs carry it too.
- `PredictLog`: one line per predict (model, version, alias, outcome, duration), written by the
  shared predict core, so every protocol logs the same way.
- `Spans`: `berth.route`, `berth.load` and `berth.predict` spans when a tracer is configured;
  a shared no-op context otherwise.
- `tracer_provider_from_environment`: tracing is switched on by the standard `OTEL_*` variables
  and needs the optional `berth[otel]` dependencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from registry.schemas import NAME_PATTERN
from serving.errors import ServingError, status_of

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

logger = logging.getLogger(__name__)

ACCESS_LOGGER: Final = "serving.access"
REQUEST_ID_HEADER: Final = "X-Request-Id"

REQUEST_ID: ContextVar[str | None] = ContextVar("berth_request_id", default=None)
"""The id of the request being handled, for every log line written while it runs."""

_NAME: Final = re.compile(NAME_PATTERN).match
REQUEST_ID_KEY: Final = REQUEST_ID_HEADER.lower().encode()
"""The header's name as ASGI carries it."""
_WELL_FORMED: Final = re.compile(rb"[A-Za-z0-9._:-]{1,128}\Z").match
"""What an incoming id may look like: short, and nothing that could split a header or a log line."""


def new_request_id() -> str:
    # 128 random bits as hex: as unique as a uuid4, without its system call per request. An id
    # correlates log lines, it grants nothing, so `random` (reseeded in every forked child)
    # serves; a caller may send its own anyway.
    return f"{random.getrandbits(128):032x}"


def request_id_from(sent: bytes | None) -> tuple[str, tuple[bytes, bytes]]:
    """The request's id from the `X-Request-Id` the caller sent (kept when well-formed, else a
    fresh one), and the response header that echoes it."""
    if sent is not None and _WELL_FORMED(sent):
        return sent.decode("ascii"), (REQUEST_ID_KEY, sent)
    request_id = new_request_id()
    return request_id, (REQUEST_ID_KEY, request_id.encode("ascii"))


def request_id_of(scope: Scope) -> tuple[str, tuple[bytes, bytes]]:
    """`request_id_from` the first `X-Request-Id` among the scope's headers."""
    for key, value in scope["headers"]:
        if key == REQUEST_ID_KEY:
            return request_id_from(value)
    return request_id_from(None)


class RequestIdMiddleware:
    """Give every HTTP request an id, echo it in `X-Request-Id`, expose it to logging.

    A plain ASGI middleware (not Starlette's `BaseHTTPMiddleware`, which costs a task and a
    stream per request). The inference routes' short way (`serving.hotpath`) does the same
    without wrapping `send`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id, header = request_id_of(scope)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)


# --- logs -------------------------------------------------------------------------------------

_FIELDS: Final = ("event", "model", "version", "alias", "status", "error", "duration_ms")


_encode: Final = json.JSONEncoder(default=str, ensure_ascii=False).encode


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, trace ids, fields."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def _time(self, created: float) -> str:
        # The date-time to the second changes once a second, not once a line: format it then.
        second = int(created)
        if second != self._second:
            self._stamp = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            out["request_id"] = request_id
        fields = record.__dict__
        for key in _FIELDS:
            if key in fields:
                out[key] = fields[key]
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            out["trace_id"] = format(context.trace_id, "032x")
            out["span_id"] = format(context.span_id, "016x")
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return _encode(out)


class JsonLinesHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream of `JsonFormatter` lines, to which `PredictLog` may also write its own.

    Its lines are the formatter's, byte for byte (a test holds them side by side); what it
    saves is the record, the dictionary and the general encoder, most of a line's cost.

    Lines written on an event loop are queued and written together once the loop's current
    turn ends, after the answers of that turn have gone out: one write per turn instead of one
    per predict (what nginx's `access_log ... buffer=` does, bounded by a loop turn instead of
    a size). A record logged the usual way first writes what is queued, so order holds; a
    flush, or `logging.shutdown` at exit, writes it too.
    """

    formatter: JsonFormatter

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self.setFormatter(JsonFormatter())
        self._queued: list[str] = []

    def write_line(self, line: str) -> bool:
        """Write one finished line (queued for the end of the loop's turn, when on a loop);
        False if the stream refused it, and then the caller logs it as a record."""
        with self.lock:  # type: ignore[union-attr]
            if self._queued:  # a write is already due: join it
                self._queued.append(line)
                return True
            # Asked once per turn, not per line: asyncio checks the loop's pid on every call,
            # a getpid(2) each time.
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                try:
                    self.stream.write(line + self.terminator)
                    self.stream.flush()
                except Exception:
                    return False
                return True
            self._queued.append(line)
            loop.call_soon(self.write_queued)
        return True

    def write_queued(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if not self._queued:
                return
            lines, self._queued = self._queued, []
            try:
                terminator = self.terminator
                self.stream.write(terminator.join(lines) + terminator)
                self.stream.flush()
            except Exception:
                self.handleError(
                    logging.makeLogRecord({"msg": f"{len(lines)} queued log lines were lost"})
                )

    def emit(self, record: logging.LogRecord) -> None:
        self.write_queued()
        super().emit(record)

    def flush(self) -> None:
        self.write_queued()
        super().flush()


def configure_logging(*, level: str, json_lines: bool, access_log: bool = True) -> None:
    """The process's root handler: JSON lines for machines, or text for a terminal."""
    handler: logging.Handler
    if json_lines:
        handler = JsonLinesHandler()
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # Neither format shows threads or processes: a record need not look them up (a third of
    # its construction).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every request at INFO: a long-poll and a heartbeat every few seconds would
    # drown what serving itself says.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.NOTSET if access_log else logging.WARNING)


class PredictLog:
    """The one log line each predict writes, whichever protocol it came in by.

    Records are built here and handed to the logger's handlers directly: `Logger.info` would
    also walk the stack to find the caller (a constant here) and copy `extra` key by key, about
    a third of a line's cost on the predict path.
    """

    def __init__(self, log: logging.Logger | None = None) -> None:
        self._log = log or logging.getLogger(ACCESS_LOGGER)
        self._logger_json = _encode(self._log.name)

    def _only_json_lines(self) -> JsonLinesHandler | None:
        """The one handler a line would reach, if that is a `JsonLinesHandler` taking it as is.

        Asked on every line (about a microsecond), not cached: a handler added later (a test's
        capture, an operator's configuration) must see every line from then on.
        """
        if self._log.filters:
            return None
        node: logging.Logger | None = self._log
        found: JsonLinesHandler | None = None
        while node is not None:
            for handler in node.handlers:
                if (
                    found is not None
                    or type(handler) is not JsonLinesHandler
                    or handler.filters
                    or handler.level > logging.INFO
                ):
                    return None
                found = handler
            if not node.propagate:
                break
            node = node.parent
        return found

    def _emit(
        self, level: int, message: str, args: tuple[Any, ...], fields: dict[str, Any]
    ) -> None:
        record = logging.LogRecord(self._log.name, level, __file__, 0, message, args, None)
        record.__dict__.update(fields)
        self._log.handle(record)

    def answered(self, name: str, version: int, alias: str | None, seconds: float) -> None:
        if not self._log.isEnabledFor(logging.INFO):
            return
        ms = round(seconds * 1000, 3)
        handler = self._only_json_lines()
        if (
            handler is not None
            and _NAME(name)
            and (alias is None or _NAME(alias))
            and handler.write_line(self._answered_line(handler.formatter, name, version, alias, ms))
        ):
            return
        self._emit(
            logging.INFO,
            "predict %s v%s%s: 200 in %.3f ms",
            (name, version, f" via {alias}" if alias else "", ms),
            {
                "event": "predict",
                "model": name,
                "version": version,
                "alias": alias,
                "status": 200,
                "duration_ms": ms,
            },
        )

    def _answered_line(
        self, formatter: JsonFormatter, name: str, version: int, alias: str | None, ms: float
    ) -> str:
        """`JsonFormatter`'s line for `answered`, written out: names Berth allows need no escaping.

        The request id is well-formed or Berth's own (`RequestIdMiddleware`), so it needs none
        either; the key order is the formatter's.
        """
        via = f" via {alias}" if alias else ""
        request_id = REQUEST_ID.get()
        rid = f', "request_id": "{request_id}"' if request_id is not None else ""
        quoted_alias = f'"{alias}"' if alias is not None else "null"
        context = trace.get_current_span().get_span_context()
        ids = (
            f', "trace_id": "{context.trace_id:032x}", "span_id": "{context.span_id:016x}"'
            if context.is_valid
            else ""
        )
        return (
            f'{{"time": "{formatter._time(time.time())}", "level": "info", '
            f'"logger": {self._logger_json}, "message": "predict {name} v{version}{via}: 200 in '
            f'{ms:.3f} ms"{rid}, "event": "predict", "model": "{name}", "version": {version}, '
            f'"alias": {quoted_alias}, "status": 200, "duration_ms": {ms!r}{ids}}}'
        )

    def refused(
        self,
        name: str,
        version: int | None,
        alias: str | None,
        error: ServingError,
        seconds: float,
    ) -> None:
        status = status_of(error)
        level = logging.WARNING if status >= 500 else logging.INFO
        log = self._log
        if not log.isEnabledFor(level):
            return
        ms = round(seconds * 1000, 3)
        # Names here may come straight from the URL: quoted unless they are names Berth allows,
        # so a text log line cannot be split or forged with one.
        self._emit(
            level,
            "predict %s%s%s: %s %s in %.3f ms",
            (
                name if _NAME(name) else repr(name[:130]),
                f" v{version}" if version is not None else "",
                f" via {alias if _NAME(alias) else repr(alias[:130])}" if alias else "",
                status,
                error.code,
                ms,
            ),
            {
                "event": "predict",
                "model": name,
                "version": version,
                "alias": alias,
                "status": status,
                "error": error.code,
                "duration_ms": ms,
            },
        )


# --- traces -----------------------------------------------------------------------------------

_NO_SPAN: Final = contextlib.nullcontext()


class Spans:
    """Spans around routing, loading and predicting; a shared no-op when tracing is off."""

    def __init__(self, tracer: Tracer | None) -> None:
        self._tracer = tracer

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def start(
        self, name: str, model: str, alias: str | None = None, *, version: int | None = None
    ) -> contextlib.AbstractContextManager[Span | None]:
        tracer = self._tracer
        if tracer is None:
            return _NO_SPAN
        parent = trace.get_current_span()
        if parent.get_span_context().is_valid and not parent.is_recording():
            # The request's span was sampled out, so would its children be (parent-based
            # sampling): skip making them. Spans with no parent (background loads) still sample.
            return _NO_SPAN
        attributes: dict[str, str | int] = {"berth.model": model}
        if alias is not None:
            attributes["berth.alias"] = alias
        if version is not None:
            attributes["berth.model_version"] = version
        return tracer.start_as_current_span(name, attributes=attributes)

    def wrap_load(
        self, load: Callable[[str, int], Awaitable[Any]]
    ) -> Callable[[str, int], Awaitable[Any]]:
        """`load` inside a `berth.load` span (a child of the request that caused it, if any)."""
        if self._tracer is None:
            return load

        async def traced(name: str, version: int) -> Any:
            with self.start("berth.load", name, version=version):
                return await load(name, version)

        return traced


def tracing_requested(environ: Mapping[str, str]) -> list[str]:
    """The trace exporters the standard `OTEL_*` variables ask for; empty means tracing is off.

    `OTEL_TRACES_EXPORTER` names them (`otlp`, `console`, ...; `none` turns tracing off); an OTLP
    endpoint alone (`OTEL_EXPORTER_OTLP_ENDPOINT` or `..._TRACES_ENDPOINT`) means `otlp`, as the
    SDK's own default exporter is. `OTEL_SDK_DISABLED=true` wins over everything.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not names:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        return ["otlp"] if endpoint else []
    return [n.strip() for n in names.split(",") if n.strip() and n.strip() != "none"]


def _exporter_entry_point(name: str, environ: Mapping[str, str]) -> str:
    if name != "otlp":
        return name
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    return "otlp_proto_grpc" if protocol.strip() == "grpc" else "otlp_proto_http"


def tracer_provider_from_environment(
    environ: Mapping[str, str] | None = None,
) -> TracerProvider | None:
    """An SDK tracer provider exporting where `OTEL_*` says, or None when tracing is off.

    Sampling (`OTEL_TRACES_SAMPLER`), resource attributes (`OTEL_SERVICE_NAME`,
    `OTEL_RESOURCE_ATTRIBUTES`), batching (`OTEL_BSP_*`) and each exporter's own settings are
    read by the SDK itself. A missing SDK or exporter is a warning, never a failed start.
    """
    env = os.environ if environ is None else environ
    names = tracing_requested(env)
    if not names:
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
    except ImportError:
        logger.warning(
            "OTEL_* variables ask for traces, but opentelemetry-sdk is not installed "
            "(pip install 'berth[otel]'); tracing stays off"
        )
        return None
    exporters: list[SpanExporter] = []
    for name in names:
        wanted = _exporter_entry_point(name, env)
        found = entry_points(group="opentelemetry_traces_exporter", name=wanted)
        if not found:
            logger.warning("no OpenTelemetry trace exporter named '%s' is installed", wanted)
            continue
        exporter_class = next(iter(found)).load()
        exporters.append(exporter_class())
    if not exporters:
        return None
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "berth-serving"}))
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    logger.info("tracing on: exporting spans with %s", ", ".join(names))
    return provider
