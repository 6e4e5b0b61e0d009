"""Authentication in serving's OpenAPI schema: the bearer scheme and the answers it adds.

Every operation but the health checks needs a token (predict a reader's, unless
BERTH_ANONYMOUS_PREDICT), so each documents 401, and predict 403 for a token scoped to other
models; predict also documents the 500 and 502 its handlers can answer. Clients, `/docs` and the
schema fuzzer then see the real contract.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from serving.schemas import ERROR_BODY

_PUBLIC = {"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/ping"}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }


def document_auth(app: FastAPI) -> None:
    """Wrap `app.openapi` (after the predict routes are documented) to add the auth answers."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema and app.openapi_schema.get("x-berth-auth"):
            return app.openapi_schema
        schema = build()
        for path, operations in schema.get("paths", {}).items():
            if path in _PUBLIC:
                continue
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                responses.setdefault("401", _error("No bearer token, or one not vouched for."))
                operation["security"] = [{"HTTPBearer": []}]
                if path.endswith("/predict"):
                    responses.setdefault("403", _error("The token may not call this model."))
                    responses.setdefault("500", _error("The model failed on accepted input."))
                    responses.setdefault("502", _error("The registry refused serving."))
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {}).setdefault("ErrorBody", ERROR_BODY)
        components.setdefault("securitySchemes", {})["HTTPBearer"] = {
            "type": "http",
            "scheme": "bearer",
        }
        schema["x-berth-auth"] = True
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
