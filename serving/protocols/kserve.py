"""KServe V1 (the TensorFlow-Serving-style REST protocol KServe's model servers speak).

- `POST /v1/models/{name}:predict` with `{"instances": [...]}` (rows or records; `inputs` too)
  → `{"predictions": [...]}`, through the default alias (A/B split and `X-Routing-Key` as for
  Berth's own predict). `X-Model-Version` names the version that answered.
- `GET /v1/models/{name}`: `{"name", "ready"}` (503 while the alias has no loaded version).
- `GET /v1/models`: `{"models": [...]}`, the models whose default alias this replica serves.

Errors are `{"error": "<message>"}` as KServe answers them, with Berth's statuses.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from registry.schemas import Role
from serving.api import ROUTING_KEY_HEADER, AnswerResponse, read_body
from serving.auth import declare
from serving.errors import ServingError
from serving.protocols.common import Guard, encode_predictions, error_response, open_door
from serving.protocols.schemas import ModelReadyOut, ModelsOut, V1Error
from serving.service import PredictService, decode_json


def v1_error(error: ServingError) -> JSONResponse:
    return error_response(error, {"error": error.message})


def predict_routes(
    service: PredictService, *, max_body_bytes: int, guard: Guard = open_door
) -> list[Route]:
    @declare(Role.reader.value)
    async def predict(request: Request) -> Response:
        try:
            await guard(request)
            body = await read_body(request, max_body_bytes)
            answer = await service.infer_alias(
                request.path_params["name"],
                service.default_alias,
                body,
                decode=decode_json,
                encode=encode_predictions,
                routing_key=request.headers.get(ROUTING_KEY_HEADER),
            )
        except ServingError as exc:
            return v1_error(exc)
        return AnswerResponse(answer.content, answer.headers)

    return [Route("/v1/models/{name}:predict", predict, methods=["POST"])]


def router(service: PredictService, *, guard: Guard = open_door) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["kserve v1"])

    @api.get(
        "/models",
        response_model=ModelsOut,
        responses={
            401: {"model": V1Error, "description": "No bearer token, or one not vouched for."},
            503: {"model": V1Error, "description": "The registry is unreachable."},
        },
    )
    @declare(Role.reader.value)
    async def models(request: Request) -> Response:
        """The models whose default alias this replica serves."""
        try:
            await guard(request)
        except ServingError as exc:
            return v1_error(exc)
        alias = service.default_alias
        names = sorted({m for (m, a) in service.router.table if a == alias})
        return JSONResponse({"models": names})

    @api.get(
        "/models/{name}",
        response_model=ModelReadyOut,
        responses={
            401: {"model": V1Error, "description": "No bearer token, or one not vouched for."},
            403: {"model": V1Error, "description": "The token may not call this model."},
            404: {"model": V1Error, "description": "No such model (or no default alias)."},
            503: {"model": ModelReadyOut, "description": "No version loaded yet."},
        },
    )
    @declare(Role.reader.value)
    async def model_ready(name: str, request: Request) -> Response:
        """Ready when the default alias of the model serves a loaded version."""
        try:
            await guard(request)
        except ServingError as exc:
            return v1_error(exc)
        key = (name, service.default_alias)
        body: dict[str, Any] = {"name": name, "ready": key in service.router.table}
        if body["ready"]:
            return JSONResponse(body)
        if key in service.router.pending:
            return JSONResponse(body, status_code=503)
        return v1_error(service.no_route(name, service.default_alias))

    return api
