"""The JSON bounds of `serving.limits` on every protocol's inference route, not only Berth's own.

Each protocol parses its own body (V2 its tensors, KServe V1 and MLflow Berth's JSON keys), so
each must refuse a body nested too deep or with too long an array, in its own error shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from serving.limits import MAX_DEPTH, MAX_ITEMS
from tests.serving.conftest import ServingClient, eventually
from tests.serving.factories import row
from tests.serving.fakes import FakeRegistry

Start = Callable[..., ServingClient]

DEEP = "[" * (MAX_DEPTH + 24) + "]" * (MAX_DEPTH + 24)
PAST_RECURSION = "[" * 100_000 + "]" * 100_000
LONG = "[" + ",".join(["0"] * (MAX_ITEMS + 1)) + "]"

CASES = [
    (DEEP, 400, f"nests deeper than {MAX_DEPTH} levels"),
    (PAST_RECURSION, 400, "not valid JSON"),
    (LONG, 413, f"the limit is {MAX_ITEMS}"),
]


def oip_message(response: httpx.Response) -> str:
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}, body  # V2's and KServe V1's error: only a message
    message: str = body["error"]
    return message


def mlflow_message(response: httpx.Response) -> str:
    body: dict[str, Any] = response.json()
    assert set(body) == {"error_code", "message"}, body
    assert body["error_code"] == "BAD_REQUEST"
    message: str = body["message"]
    return message


PROTOCOLS = {
    "v2-infer": (
        "/v2/models/churn/infer",
        '{"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": %s}]}',
        oip_message,
    ),
    "kserve-v1-predict": ("/v1/models/churn:predict", '{"instances": %s}', oip_message),
    "mlflow-invocations": ("/models/churn/invocations", '{"inputs": %s}', mlflow_message),
}


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_every_protocol_refuses_deep_nesting_and_long_arrays_in_its_error_shape(
    churn: FakeRegistry, start_serving: Start, protocol: str
) -> None:
    path, template, message_of = PROTOCOLS[protocol]
    serving = start_serving()
    eventually(lambda: serving.get("/readyz").status_code == 200)
    headers = {"content-type": "application/json"}
    fits = serving.post(path, content=template % [row()], headers=headers)
    assert fits.status_code == 200, fits.text  # the route itself takes a body of that shape
    for data, status, says in CASES:
        response = serving.post(path, content=template % data, headers=headers)
        assert response.status_code == status, (says, response.text[:300])
        assert says in message_of(response)
