"""The field's protocols, each in its own module, all on the one predict core.

- `v2`: the Open Inference Protocol (Triton, KServe V2, MLServer), binary tensors included.
- `kserve`: KServe V1 (`/v1/models/{name}:predict`).
- `mlflow`: MLflow's scoring server (`/invocations`, `/ping`, `/version`).

`hot_routes` are plain Starlette routes placed right after Berth's own predict routes (the
router tries routes in order); `router` holds the metadata and health routes, as FastAPI routes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter
from starlette.routing import Route

from serving.protocols import kserve, mlflow, v2
from serving.protocols.common import Guard, open_door

if TYPE_CHECKING:
    from serving.main import Runtime


def hot_routes(runtime: Runtime, *, guard: Guard = open_door) -> list[Route]:
    """The inference routes of every protocol."""
    limit = runtime.settings.max_predict_bytes
    return [
        *v2.infer_routes(runtime.service, max_body_bytes=limit, guard=guard),
        *kserve.predict_routes(runtime.service, max_body_bytes=limit, guard=guard),
        *mlflow.invocation_routes(
            runtime.service,
            default_model=runtime.settings.default_model,
            max_body_bytes=limit,
            guard=guard,
        ),
    ]


def router(runtime: Runtime, *, server_version: str, guard: Guard = open_door) -> APIRouter:
    """Metadata, readiness and version routes of every protocol."""
    combined = APIRouter()
    combined.include_router(v2.router(runtime, server_version=server_version, guard=guard))
    combined.include_router(kserve.router(runtime.service, guard=guard))
    combined.include_router(mlflow.router(runtime, server_version=server_version, guard=guard))
    return combined
