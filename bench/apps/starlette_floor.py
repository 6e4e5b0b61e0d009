"""The floor: bare Starlette on uvicorn calling `model.predict`, nothing else.

No routing table beyond one route, no validation, no metrics, no auth, no logging: what the
stack itself costs. Body `{"inputs": [[...], ...]}` (Berth's shape) or `{"input": [...]}`.

    BENCH_MODEL_PATH=model.joblib uvicorn bench.apps.starlette_floor:app --no-access-log
"""

from __future__ import annotations

import os
from typing import Any

import joblib
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

model: Any = joblib.load(os.environ["BENCH_MODEL_PATH"])


async def predict(request: Request) -> JSONResponse:
    data = await request.json()
    rows = data["inputs"] if "inputs" in data else [data["input"]]
    return JSONResponse({"predictions": model.predict(rows).tolist()})


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[
        Route("/predict", predict, methods=["POST"]),
        Route("/healthz", healthz),
    ]
)
