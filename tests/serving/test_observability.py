"""Request ids, structured predict logs, OpenTelemetry spans and metric labels, end to end."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from serving.errors import ModelNotFound
from serving.main import app_from_environment, create_app
from serving.observability import (
    ACCESS_LOGGER,
    REQUEST_ID,
    JsonFormatter,
    JsonLinesHandler,
    PredictLog,
    tracer_provider_from_environment,
    tracing_requested,
)
from tests.fixtures.servers import LiveServer
from tests.serving.conftest import ServingClient, eventually, serving_settings
from tests.serving.factories import row
from tests.serving.fakes import FakeRegistry

Start = Callable[..., ServingClient]

V2_BODY = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": row()}]}


@pytest.fixture(params=["records", "direct"])
def access_lines(
    request: pytest.FixtureRequest,
) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The predict log lines, as the JSON formatter writes them.

    Twice: through log records (another handler, pytest's, also sees them), and written
    directly by `PredictLog` when a `JsonLinesHandler` is the only one.
    """
    stream = io.StringIO()
    log = logging.getLogger(ACCESS_LOGGER)
    handler: logging.Handler
    if request.param == "direct":
        handler = JsonLinesHandler(stream)
        log.propagate = False
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    log.removeHandler(handler)
    log.setLevel(logging.NOTSET)
    log.propagate = True


# --- request ids ------------------------------------------------------------------------------


def test_every_response_carries_a_request_id_and_a_good_incoming_one_is_kept(
    churn: FakeRegistry, start_serving: Start
) -> None:
    serving = start_serving()
    eventually(lambda: serving.get("/readyz").status_code == 200)
    ids = set()
    for method, path, body in (
        ("POST", "/models/churn/predict", {"inputs": [row()]}),
        ("POST", "/v2/models/churn/infer", V2_BODY),
        ("POST", "/models/nope/predict", {"inputs": [row()]}),
        ("GET", "/healthz", None),
        ("GET", "/no/such/route", None),
    ):
        response = serving.request(method, path, json=body)
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-Id"]), path
        ids.add(response.headers["X-Request-Id"])
    assert len(ids) == 5

    kept = serving.post(
        "/models/churn/predict", json={"input": row()}, headers={"X-Request-Id": "trace-42.a:b"}
    )
    assert kept.headers["X-Request-Id"] == "trace-42.a:b"
    for bad in ("two words", "x" * 129, "semi;colon", "new\\nline"):
        replaced = serving.get("/healthz", headers={"X-Request-Id": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["X-Request-Id"]), bad
        # The inference routes' short way reads the id from its own header index.
        replaced = serving.post(
            "/models/churn/predict", json={"input": row()}, headers={"X-Request-Id": bad}
        )
        assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["X-Request-Id"]), bad


# --- the predict log line ---------------------------------------------------------------------


def test_every_predict_logs_one_json_line_with_request_model_version_and_alias(
    churn: FakeRegistry,
    start_serving: Start,
    access_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    serving = start_serving(default_model="churn")
    eventually(lambda: serving.get("/ping").status_code == 200)
    calls = [
        ("/models/churn/predict", {"inputs": [row()]}, ("churn", 1, "production", 200)),
        ("/models/churn/versions/2/predict", {"input": row()}, ("churn", 2, None, 200)),
        ("/v2/models/churn/infer", V2_BODY, ("churn", 1, "production", 200)),
        ("/v1/models/churn:predict", {"instances": [row()]}, ("churn", 1, "production", 200)),
        ("/invocations", {"instances": [row()]}, ("churn", 1, "production", 200)),
        ("/models/churn/predict", {"inputs": [[1.0]]}, ("churn", 1, "production", 422)),
        ("/v2/models/churn/infer", {"inputs": []}, ("churn", 1, "production", 400)),
        ("/models/nope/predict", {"inputs": [row()]}, ("nope", None, "production", 404)),
    ]
    request_ids = []
    for path, body, _ in calls:
        request_ids.append(serving.post(path, json=body).headers["X-Request-Id"])

    lines = eventually(lambda: (found := access_lines()) and len(found) == len(calls) and found)
    for line, request_id, (_, _, (model, version, alias, status)) in zip(
        lines, request_ids, calls, strict=True
    ):
        assert line["event"] == "predict"
        assert line["logger"] == ACCESS_LOGGER
        assert line["request_id"] == request_id
        assert (line["model"], line["version"], line["alias"], line["status"]) == (
            model,
            version,
            alias,
            status,
        )
        assert line["duration_ms"] >= 0
        assert ("error" in line) is (status != 200)
    assert lines[-1]["error"] == "model_not_found"
    assert lines[-2]["error"] == "invalid_tensor"
    assert lines[-3]["error"] == "feature_count_mismatch"
    metrics = serving.get("/metrics").text
    assert (
        'berth_serving_request_errors_total{alias="production",error="invalid_tensor",'
        'model_name="churn",model_version="1"} 1.0'
    ) in metrics


def test_names_from_the_url_cannot_forge_text_log_lines(
    churn: FakeRegistry, start_serving: Start, caplog: pytest.LogCaptureFixture
) -> None:
    serving = start_serving()
    eventually(lambda: serving.get("/readyz").status_code == 200)
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        response = serving.post("/models/a%0Afake%20line/predict", json={"input": row()})
        assert response.status_code == 404
        eventually(lambda: caplog.records)
    (record,) = caplog.records
    message = record.getMessage()
    assert "\n" not in message  # one line, whatever the URL held
    assert message.startswith("predict 'a\\nfake line' via production: 404")


def test_access_log_off_writes_no_predict_lines(
    churn: FakeRegistry,
    start_serving: Start,
    access_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    serving = start_serving()
    eventually(lambda: serving.get("/readyz").status_code == 200)
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.WARNING)
    assert serving.post("/models/churn/predict", json={"inputs": [row()]}).status_code == 200
    assert serving.post("/models/nope/predict", json={"inputs": [row()]}).status_code == 404
    assert access_lines() == []


def test_json_lines_carry_the_request_id_of_whatever_logged_them() -> None:
    record = logging.LogRecord(
        "serving.service", logging.ERROR, __file__, 1, "boom %s", ("x",), None
    )
    token = REQUEST_ID.set("abc123")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        REQUEST_ID.reset(token)
    assert line["request_id"] == "abc123"
    assert line["message"] == "boom x"
    assert line["level"] == "error"
    assert "request_id" not in json.loads(JsonFormatter().format(record))


class Refuse(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return True  # passes everything; its presence alone rules out the direct line


@pytest.mark.parametrize("request_id", [None, "abc-123.x:y"])
@pytest.mark.parametrize("alias", [None, "production"])
@pytest.mark.parametrize("traced", [False, True])
@pytest.mark.parametrize("ms", [0.000345, 1.5, 12.3456789, 1000.0])
def test_the_direct_predict_line_is_the_formatters_line_byte_for_byte(
    request_id: str | None,
    alias: str | None,
    traced: bool,
    ms: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(time, "time", lambda: 1764156789.0421)
    stream = io.StringIO()
    log = logging.Logger("serving.access.test")  # detached: no parent, no pytest handlers
    handler = JsonLinesHandler(stream)
    log.addHandler(handler)
    predict_log = PredictLog(log)
    assert predict_log._only_json_lines() is handler

    def line() -> str:
        stream.seek(0)
        stream.truncate()
        predict_log.answered("churn.v2_model", 7, alias, ms / 1000)
        return stream.getvalue()

    provider = TracerProvider()
    token = REQUEST_ID.set(request_id)
    try:
        with contextlib.ExitStack() as stack:
            if traced:
                stack.enter_context(provider.get_tracer("t").start_as_current_span("request"))
            direct = line()
            handler.addFilter(Refuse())
            assert predict_log._only_json_lines() is None
            through_a_record = line()
    finally:
        REQUEST_ID.reset(token)
        provider.shutdown()
    assert direct == through_a_record
    parsed = json.loads(direct)
    assert ("trace_id" in parsed) is traced
    assert parsed.get("request_id") == request_id


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_lines_written_on_a_loop_go_out_together_when_its_turn_ends_and_in_order() -> None:
    stream = CountingStream()
    handler = JsonLinesHandler(stream)
    log = logging.Logger("queued-lines-test")  # detached: no pytest handlers
    log.addHandler(handler)

    async def one_turn() -> None:
        assert handler.write_line('{"n": 1}')
        assert handler.write_line('{"n": 2}')
        assert stream.getvalue() == ""  # the answers of this turn go out first
        await asyncio.sleep(0)  # the turn ends
        assert stream.getvalue() == '{"n": 1}\n{"n": 2}\n'
        assert stream.writes == 1
        handler.write_line('{"n": 3}')
        log.warning("a record")  # logged the usual way: after what was queued before it
        handler.write_line('{"n": 4}')

    asyncio.run(one_turn())
    handler.flush()  # as logging.shutdown does at exit, for anything left queued
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line.get("n", line.get("message")) for line in lines] == [1, 2, 3, "a record", 4]
    handler.write_line('{"n": 5}')  # no loop running: written at once
    assert stream.getvalue().endswith('{"n": 5}\n')


def test_the_direct_line_only_when_berths_json_handler_alone_would_see_it() -> None:
    root = logging.Logger("root-of-test")
    access = logging.Logger("access")
    access.parent = root
    predict_log = PredictLog(access)
    assert predict_log._only_json_lines() is None  # nobody listens
    mine = JsonLinesHandler(io.StringIO())
    root.addHandler(mine)
    assert predict_log._only_json_lines() is mine  # the standard set-up: one root handler
    other = logging.StreamHandler(io.StringIO())
    access.addHandler(other)
    assert predict_log._only_json_lines() is None  # a second handler must see a record
    access.removeHandler(other)
    access.addFilter(Refuse())
    assert predict_log._only_json_lines() is None  # a filter must see a record
    access.filters.clear()
    mine.setLevel(logging.WARNING)
    assert predict_log._only_json_lines() is None  # the handler would drop the line
    mine.setLevel(logging.NOTSET)
    access.propagate = False
    assert predict_log._only_json_lines() is None  # the root's handler is out of reach


# --- traces -----------------------------------------------------------------------------------


@pytest.fixture
def traced(fake: FakeRegistry) -> Iterator[tuple[httpx.Client, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(
        serving_settings(), transport=httpx.ASGITransport(fake.app), tracer_provider=provider
    )
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client, exporter
    provider.shutdown()


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def test_spans_around_routing_loading_and_predicting_under_the_server_span(
    churn: FakeRegistry, traced: tuple[httpx.Client, InMemorySpanExporter]
) -> None:
    client, exporter = traced
    eventually(lambda: client.get("/readyz").status_code == 200)
    exporter.clear()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = client.post(
        "/models/churn/predict",
        json={"inputs": [row()]},
        headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
    )
    assert response.status_code == 200
    spans = eventually(
        lambda: (found := exporter.get_finished_spans()) and len(found) >= 3 and found
    )
    (route,) = by_name(spans, "berth.route")
    (predict,) = by_name(spans, "berth.predict")
    (server,) = [s for s in spans if s.parent is not None and s.parent.is_remote]
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/models/{name}/predict"
    assert server.attributes["http.response.status_code"] == 200
    for span in (route, predict, server):
        assert format(span.context.trace_id, "032x") == trace_id
    assert route.parent is not None
    assert route.parent.span_id == server.context.span_id
    assert predict.parent is not None
    assert predict.parent.span_id == server.context.span_id
    assert dict(route.attributes or {}) == {
        "berth.model": "churn",
        "berth.alias": "production",
        "berth.model_version": 1,
    }
    assert dict(predict.attributes or {}) == {
        "berth.model": "churn",
        "berth.model_version": 1,
        "berth.rows": 1,
    }

    exporter.clear()
    pinned = client.post("/v2/models/churn/versions/2/infer", json=V2_BODY)
    assert pinned.status_code == 200
    spans = eventually(
        lambda: (found := exporter.get_finished_spans()) and len(found) >= 3 and found
    )
    (load,) = by_name(spans, "berth.load")
    (server,) = [s for s in spans if s.parent is None]
    assert load.context.trace_id == server.context.trace_id
    assert dict(load.attributes or {}) == {"berth.model": "churn", "berth.model_version": 2}


def test_a_refused_request_marks_its_span_as_an_error(
    churn: FakeRegistry, traced: tuple[httpx.Client, InMemorySpanExporter]
) -> None:
    client, exporter = traced
    eventually(lambda: client.get("/readyz").status_code == 200)
    exporter.clear()
    assert client.post("/models/nope/predict", json={"inputs": [row()]}).status_code == 404
    spans = eventually(
        lambda: (found := exporter.get_finished_spans()) and len(found) >= 2 and found
    )
    (route,) = by_name(spans, "berth.route")
    assert not route.status.is_ok
    assert route.events[0].attributes is not None
    assert route.events[0].attributes["exception.type"].endswith(ModelNotFound.__name__)


class Collector:
    """An OTLP/HTTP trace collector: keeps every span exported to it, decoded."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []

    async def _traces(self, request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        self.requests.append(ExportTraceServiceRequest.FromString(body))
        return Response(b"", media_type="application/x-protobuf")

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/traces", self._traces, methods=["POST"])])

    def spans(self) -> list[tuple[dict[str, str], OtlpSpan]]:
        """Every span received, with the string attributes of the resource that sent it."""
        found = []
        for export in self.requests:
            for resource_spans in export.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    found.extend((resource, span) for span in scope_spans.spans)
        return found


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Put back what `configure_logging`, run by `app_from_environment`, changes process-wide."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in ("httpx", ACCESS_LOGGER)}
    flags = (logging.logThreads, logging.logProcesses, logging.logMultiprocessing)
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, was in levels.items():
        logging.getLogger(name).setLevel(was)
    logging.logThreads, logging.logProcesses, logging.logMultiprocessing = flags


def test_otel_variables_alone_trace_a_predict_through_the_production_factory(
    churn: FakeRegistry, monkeypatch: pytest.MonkeyPatch, restored_logging: None
) -> None:
    """`app_from_environment`, as `uvicorn --factory` starts a worker: no provider passed in,
    only the standard variables, and the spans reach an OTLP collector over HTTP."""
    collector = Collector()
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    with contextlib.ExitStack() as stack:
        registry = stack.enter_context(LiveServer(churn.app))
        sink = stack.enter_context(LiveServer(collector.app))
        for name, value in {
            "BERTH_REGISTRY_URL": registry.url,
            "BERTH_REPLICA_ID": "replica-traced",
            "BERTH_FEED_WAIT_SECONDS": "1",
            "BERTH_LOG_FORMAT": "text",
            "BERTH_AUTH": "false",
            "BERTH_LOAD_ISOLATION": "false",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": sink.url + "/v1/traces",
            "OTEL_SERVICE_NAME": "berth-traced",
        }.items():
            monkeypatch.setenv(name, value)
        app = app_from_environment()
        with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            eventually(lambda: client.get("/readyz").status_code == 200)
            response = client.post(
                "/models/churn/predict",
                json={"inputs": [row()]},
                headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"},
            )
            assert response.status_code == 200
        # The app's shutdown flushed its batch of spans to the collector, still listening.

    ours = [(r, s) for r, s in collector.spans() if s.trace_id.hex() == trace_id]
    assert {r["service.name"] for r, _ in ours} == {"berth-traced"}
    (server_span,) = [s for _, s in ours if s.kind == OtlpSpan.SpanKind.SPAN_KIND_SERVER]
    assert server_span.parent_span_id.hex() == "b7ad6b7169203331"
    children = {s.name: s for _, s in ours if s.parent_span_id == server_span.span_id}
    assert {"berth.route", "berth.predict"} <= set(children)
    attributes = {a.key: a.value for a in children["berth.route"].attributes}
    assert attributes["berth.model"].string_value == "churn"
    assert attributes["berth.alias"].string_value == "production"
    assert attributes["berth.model_version"].int_value == 1


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, []),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": "console,otlp"}, ["console", "otlp"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}, []),
    ],
)
def test_the_standard_otel_variables_switch_tracing_on(
    environ: dict[str, str], exporters: list[str]
) -> None:
    assert tracing_requested(environ) == exporters
    provider = tracer_provider_from_environment(environ)
    try:
        assert (provider is not None) is bool(exporters)
    finally:
        if provider is not None:
            provider.shutdown()


def test_an_exporter_that_is_not_installed_leaves_tracing_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        assert tracer_provider_from_environment({"OTEL_TRACES_EXPORTER": "zipkin"}) is None
    assert "no OpenTelemetry trace exporter named 'zipkin'" in caplog.text


# --- metric labels ----------------------------------------------------------------------------


def test_metrics_carry_model_version_alias_and_each_arms_weight(
    churn: FakeRegistry, start_serving: Start
) -> None:
    churn.set_alias("churn", "production", variants=[(1, 90), (2, 10)])
    serving = start_serving()
    eventually(lambda: serving.get("/readyz").status_code == 200)
    answered = {"1": 0, "2": 0}
    for i in range(30):
        response = serving.post(
            "/v2/models/churn/infer", json=V2_BODY, headers={"X-Routing-Key": f"k{i}"}
        )
        answered[response.headers["X-Model-Version"]] += 1
    serving.post("/models/churn/versions/9/predict", json={"input": row()})
    text = serving.get("/metrics").text
    for version, count in answered.items():
        if count:
            assert (
                f'berth_serving_requests_total{{alias="production",model_name="churn",'
                f'model_version="{version}"}} {float(count)}'
            ) in text
    assert (
        'berth_serving_route_weight{alias="production",model_name="churn",model_version="1"} 0.9'
    ) in text
    assert (
        'berth_serving_route_weight{alias="production",model_name="churn",model_version="2"} 0.1'
    ) in text
    assert 'berth_serving_request_duration_seconds_bucket{alias="production"' in text
    assert (
        'berth_serving_request_errors_total{alias="",error="version_not_found",'
        'model_name="churn",model_version="9"} 1.0'
    ) not in text  # a version the registry does not have is not a series of its own
    assert 'error="version_not_found",model_name="",model_version=""} 1.0' in text
