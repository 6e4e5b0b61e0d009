"""MLflow's scoring protocol (what `mlflow models serve` answers and its clients call).

- `POST /invocations`: the model named by `BERTH_DEFAULT_MODEL`, so MLflow's own
  `ScoringServerClient` (which knows only a host and a port) works unchanged.
- `POST /models/{name}/invocations`: any model.
- Both route through the default alias, take MLflow's bodies (`dataframe_split`,
  `dataframe_records`, `instances`, `inputs`; `params` is accepted and ignored, as MLflow does
  for a model without a params schema) or `text/csv`, and answer `{"predictions": [...]}`.
- `GET /ping` and `GET /health`: 200 once serving is ready (and the default model loaded, when
  one is configured). `GET /version`: Berth's version, as MLflow answers its own.

Errors are MLflow's shape, `{"error_code": "BAD_REQUEST", "message": "..."}`, with Berth's
statuses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from registry.schemas import Role
from serving.api import ROUTING_KEY_HEADER, AnswerResponse, is_csv, read_body
from serving.auth import PUBLIC, declare
from serving.errors import NotFound, ServingError, status_of
from serving.inputs import parse_body
from serving.loader import LoadedModel
from serving.protocols.common import Guard, encode_predictions, error_response, open_door
from serving.protocols.schemas import MlflowError
from serving.service import Inputs, PredictService, decode_csv, parse_json

if TYPE_CHECKING:
    from serving.main import Runtime

ERROR_CODES: Final = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    413: "BAD_REQUEST",
    422: "BAD_REQUEST",
    500: "INTERNAL_ERROR",
    502: "INTERNAL_ERROR",
    503: "TEMPORARILY_UNAVAILABLE",
}
"""HTTP status → the `error_code` MLflow's REST errors carry (`mlflow.protos.databricks_pb2`)."""


def mlflow_error(error: ServingError) -> JSONResponse:
    code = ERROR_CODES.get(status_of(error), "INTERNAL_ERROR")
    return error_response(error, {"error_code": code, "message": error.message})


def decode_mlflow_json(body: bytes, model: LoadedModel) -> tuple[Inputs, tuple[str, ...]]:
    payload = parse_json(body)
    if type(payload) is dict and "params" in payload:
        # MLflow passes params only to models whose predict takes them, and ignores them for
        # the others (with a warning); a Berth version's estimator takes none.
        payload = {k: v for k, v in payload.items() if k != "params"}
    return parse_body(payload, model.schema)


def invocation_routes(
    service: PredictService,
    *,
    default_model: str | None,
    max_body_bytes: int,
    guard: Guard = open_door,
) -> list[Route]:
    async def invoke(request: Request, name: str) -> Response:
        try:
            await guard(request)
            body = await read_body(request, max_body_bytes)
            answer = await service.infer_alias(
                name,
                service.default_alias,
                body,
                decode=decode_csv if is_csv(request) else decode_mlflow_json,
                encode=encode_predictions,
                routing_key=request.headers.get(ROUTING_KEY_HEADER),
            )
        except ServingError as exc:
            return mlflow_error(exc)
        return AnswerResponse(answer.content, answer.headers)

    @declare(Role.reader.value)
    async def invocations(request: Request) -> Response:
        if default_model is None:
            try:
                # Authenticated first: without a token, no answer says anything else.
                await guard(request)
            except ServingError as exc:
                return mlflow_error(exc)
            return mlflow_error(
                NotFound(
                    "no default model: set BERTH_DEFAULT_MODEL, or POST to "
                    "/models/{name}/invocations"
                )
            )
        # The guard checks the caller may call the model in the path; here that is the default.
        request.path_params["name"] = default_model
        return await invoke(request, default_model)

    @declare(Role.reader.value)
    async def model_invocations(request: Request) -> Response:
        return await invoke(request, request.path_params["name"])

    return [
        Route("/invocations", invocations, methods=["POST"]),
        Route("/models/{name}/invocations", model_invocations, methods=["POST"]),
    ]


def router(runtime: Runtime, *, server_version: str, guard: Guard = open_door) -> APIRouter:
    api = APIRouter(tags=["mlflow scoring"])
    default_model = runtime.settings.default_model
    service = runtime.service

    # Public, as /healthz is: MLflow's client pings without credentials.
    @declare(PUBLIC)
    async def ping() -> Response:
        """200 once serving is ready and, when configured, the default model is loaded."""
        ready, detail = runtime.readiness()
        if ready and default_model is not None:
            ready = (default_model, service.default_alias) in service.router.table
            detail = {"model": default_model}
        body: dict[str, Any] = {"status": "ready" if ready else "not ready", **detail}
        return JSONResponse(body, status_code=200 if ready else 503)

    api.add_api_route(
        "/ping", ping, methods=["GET"], responses={503: {"description": "Not ready yet."}}
    )
    api.add_api_route("/health", ping, methods=["GET"], include_in_schema=False)

    @api.get(
        "/version",
        response_class=PlainTextResponse,
        responses={
            401: {"model": MlflowError, "description": "No bearer token, or one not vouched for."},
            503: {"model": MlflowError, "description": "The registry is unreachable."},
        },
    )
    @declare(Role.reader.value)
    async def version(request: Request) -> Response:
        """The Berth version serving (MLflow's server answers its own version here)."""
        try:
            await guard(request)
        except ServingError as exc:
            return mlflow_error(exc)
        return PlainTextResponse(server_version)

    return api
