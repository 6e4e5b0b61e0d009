"""The predict contract in serving's OpenAPI schema.

The predict routes are plain Starlette routes (measured faster than FastAPI's parameter solving),
so FastAPI does not describe them; this adds them, and the 401/403 answers of every protected
operation, so clients, `/docs` and the schema fuzzer all see the real contract.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from registry.schemas import NAME_PATTERN, ErrorBody
from serving.inputs import INPUT_KEYS, OUTPUT_METHODS

_ERROR = {"$ref": "#/components/schemas/ErrorBody"}
_PUBLIC = {"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def _predict_operation(summary: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "tags": ["predict"],
        "summary": summary,
        "operationId": summary.lower().replace(" ", "_"),
        "security": [{"HTTPBearer": []}],
        "parameters": [
            {
                "name": "name",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": NAME_PATTERN},
            },
            *parameters,
            {
                "name": "X-Routing-Key",
                "in": "header",
                "required": False,
                "description": "Sticky A/B routing: the same key lands on the same variant.",
                "schema": {"type": "string", "maxLength": 256},
            },
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}
            },
        },
        "responses": {
            "200": {
                "description": "The predictions, and which version answered.",
                "headers": {
                    "X-Model-Version": {"schema": {"type": "string"}},
                    "X-Model-Sha256": {"schema": {"type": "string"}},
                },
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/PredictResponse"}}
                },
            },
            "400": _error("The body is not JSON, or not of a shape serving reads."),
            "401": _error("No bearer token, or one the registry does not vouch for."),
            "403": _error("The token may not call this model."),
            "404": _error("No such model, alias or version."),
            "413": _error("The body, or one array in it, is too large."),
            "422": _error("The input does not fit the version's signature."),
            "500": _error("The model failed on an input it accepted."),
            "502": _error("The registry refused serving."),
            "503": _error("No loaded version can answer yet, or the registry is unreachable."),
        },
    }


_SCHEMAS: dict[str, Any] = {
    "PredictRequest": {
        "type": "object",
        "description": f"Exactly one of {', '.join(INPUT_KEYS)}; optionally `outputs`.",
        "properties": {
            "inputs": {"description": "Rows, records, or {feature: [values]}."},
            "instances": {"description": "Rows or records."},
            "dataframe_split": {"type": "object"},
            "dataframe_records": {"type": "array", "items": {"type": "object"}},
            "input": {"description": "One row or one record."},
            "outputs": {
                "type": "array",
                "items": {"type": "string", "enum": list(OUTPUT_METHODS)},
            },
        },
        "additionalProperties": False,
    },
    "PredictResponse": {
        "type": "object",
        "required": ["model", "version", "predictions"],
        "properties": {
            "model": {"type": "string"},
            "version": {"type": "integer"},
            "alias": {"type": "string"},
            "predictions": {"type": "array"},
        },
    },
}


def describe_predict(app: FastAPI) -> None:
    """Make `app.openapi()` include the predict routes and the auth answers."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        version = {
            "name": "version",
            "in": "path",
            "required": True,
            "schema": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
        }
        alias = {
            "name": "alias",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": NAME_PATTERN},
        }
        schema["paths"] = {
            "/models/{name}/predict": {"post": _predict_operation("Predict default", [])},
            "/models/{name}/aliases/{alias}/predict": {
                "post": _predict_operation("Predict alias", [alias])
            },
            "/models/{name}/versions/{version}/predict": {
                "post": _predict_operation("Predict version", [version])
            },
            **schema["paths"],
        }
        for path, operations in schema["paths"].items():
            if path in _PUBLIC:
                continue
            for operation in operations.values():
                operation.setdefault("responses", {}).setdefault(
                    "401", _error("No bearer token, or one the registry does not vouch for.")
                )
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {}).update(
            {"ErrorBody": ErrorBody.model_json_schema(), **_SCHEMAS}
        )
        components.setdefault("securitySchemes", {})["HTTPBearer"] = {
            "type": "http",
            "scheme": "bearer",
        }
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
