from __future__ import annotations

import httpx

from tests.fixtures.factories import random_bytes, sha256, upload_ok


def test_upload_then_download_round_trips_the_bytes(api: httpx.Client) -> None:
    data = random_bytes(10_000)
    version = upload_ok(api, "churn", data)
    assert version["version"] == 1
    assert version["sha256"] == sha256(data)
    response = api.get("/models/churn/versions/1/artifact", follow_redirects=True)
    assert response.status_code == 200
    assert response.content == data
