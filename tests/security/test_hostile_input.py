"""Path-traversal and encoding payloads against every string parameter of every route.

Requests go over real sockets to uvicorn, byte for byte as written here (no client normalises a
`..` or re-encodes a `%`), so what the servers see is what an attacker would send. Every
parameter that names something (path segments, identifiers in queries, If-Match, multipart part
names, JSON name fields) must answer 4xx. Three parameters are free text by contract and are only
required to stay inert: the `tag` filter (tag values are arbitrary strings), `X-Routing-Key`
(hashed, never used as a name) and an upload's file name (ignored: objects are stored under their
digest). For all of them, nothing outside the artifact store may be read or written: a canary
next to the store must never appear in a response, and the data directory outside the store
must be byte-for-byte unchanged.
"""

from __future__ import annotations

import io
import json
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from registry.schemas import Role
from tests.conftest import Backend, RunningRegistry, make_settings, run_registry
from tests.fixtures.waiting import eventually
from tests.security.conftest import RunningServing, make_token

CANARY = f"berth-canary-{uuid.uuid4().hex}"

PAYLOADS = [
    "..",
    "../",
    "../../../../../../etc/passwd",
    "..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e%2f",
    "%2e%2e/%2e%2e/canary.txt",
    "%2E%2E%2F%2E%2E%2F",
    "%252e%252e%252f",  # double-encoded
    "%25252e%25252e%25252f",  # triple-encoded
    "%c0%ae%c0%ae%c0%af",  # overlong UTF-8 for ../
    "%e0%80%ae%e0%80%ae%e0%80%af",  # three-byte overlong
    "..%c0%af",
    "..%c1%9c",  # overlong backslash
    "..\\..\\..\\windows\\win.ini",
    "..%5c..%5c",
    "..%255c",
    "\\\\server\\share",
    "/etc/passwd",
    "//etc/passwd",
    "C:\\Windows\\win.ini",
    "file:///etc/passwd",
    "a%00b",
    "model.joblib%00.txt",
    "%00",
    "\x00",
    "\u2024\u2024/",  # one dot leaders
    "\u2025/",  # two dot leader
    "\uff0e\uff0e\uff0f",  # fullwidth ../
    "%u002e%u002e%u002f",
    "..;/",
    "....//....//",
    "..././",
    ".../...//",
    "a/../../b",
    "./.",
    "~/.ssh/id_rsa",
    "${HOME}",
    "$(id)",
    "`id`",
    "' OR '1'='1",
    "%0d%0aX-Injected:%201",
    "\u202etxt.exe",
    "blobs/sha256/../../canary.txt",
    "uploads/../../canary.txt",
    "%",
    "%zz",
    "a" * 300,
    "a" * 20_000,
]


# --- a client that sends exactly what it is told -----------------------------------------------


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def raw_request(
    port: int,
    method: str,
    target: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    content_type: str | None = None,
) -> RawResponse:
    """One HTTP/1.1 request over a fresh socket; `target` goes on the request line as given."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + body)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
    header_blob, _, payload = bytes(received).partition(b"\r\n\r\n")
    status_line, *header_lines = header_blob.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return RawResponse(int(status_line.split()[1]), parsed, payload)


def segment(payload: str) -> str:
    """The payload as a path segment: raw where it is printable ASCII, %-encoded otherwise."""
    return quote(payload, safe="/%\\:;~$'()`{}?=&")


# --- the setting ------------------------------------------------------------------------------


@dataclass
class Target:
    registry: RunningRegistry
    serving: RunningServing
    admin: str
    reader: str
    data_dir: Path
    store: Path


def _artifact() -> bytes:
    x = np.random.default_rng(0).normal(size=(30, 4))
    buffer = io.BytesIO()
    joblib.dump(LinearRegression().fit(x, x @ np.arange(4.0)), buffer)
    return buffer.getvalue()


def _multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    boundary = "berthboundary"
    out = bytearray()
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode(
            "utf-8", "surrogateescape"
        )
        out += content + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def _tree(root: Path, *, skip: set[Path]) -> dict[str, tuple[int, int, bytes]]:
    """Every file under root (but not under `skip`): size, mtime and content digest."""
    import hashlib

    out = {}
    for path in sorted(root.rglob("*")):
        if any(path == s or s in path.parents for s in skip) or not path.is_file():
            continue
        stat = path.stat()
        out[str(path)] = (
            stat.st_size,
            stat.st_mtime_ns,
            hashlib.sha256(path.read_bytes()).digest(),
        )
    return out


@pytest.fixture
def target(
    sqlite_url: str, tmp_path: Path, start_serving: Callable[..., RunningServing]
) -> Iterator[Target]:
    data_dir = tmp_path / "data"
    store = data_dir / "artifacts"
    data_dir.mkdir()
    (tmp_path / "canary.txt").write_text(CANARY)
    (data_dir / "canary.txt").write_text(CANARY)
    backend = Backend("sqlite+file", sqlite_url, store.as_uri())
    for registry in run_registry(make_settings(backend, data_dir, auth=True)):
        admin = make_token(registry, Role.admin)[1]
        reader = make_token(registry, Role.reader, name="serving")[1]
        api = registry.client(admin)
        # Version 1 serves; version 2 is one no alias uses, so archiving it succeeds.
        for _ in (1, 2):
            version = api.post(
                "/models/churn/versions",
                files={"artifact": ("model.joblib", _artifact())},
                data={
                    "metadata": json.dumps(
                        {"signature": {"inputs": [{"name": n, "dtype": "float64"} for n in "abcd"]}}
                    )
                },
            )
            assert version.status_code == 201, version.text
        assert api.put("/models/churn/aliases/production", json={"version": 1}).status_code == 200
        assert api.put("/replicas/r1", json={"position": 0}).status_code == 200
        serving = start_serving(registry, registry_token=reader, auth=True, default_model="churn")
        with serving.client(reader) as client:
            eventually(
                lambda: (
                    client.post(
                        "/models/churn/predict", json={"inputs": [[1, 2, 3, 4]]}
                    ).status_code
                    == 200
                ),
                within=30,
            )
        yield Target(registry, serving, admin, reader, data_dir, store)


# --- the requests -----------------------------------------------------------------------------

GOOD_PATH = {
    "name": "churn",
    "alias": "production",
    "version": "1",
    "file": "artifact",
    "replica_id": "r1",
}


def _throwaway_token(target: Target) -> dict[str, str]:
    # Never the admin token the requests use: revoking that would turn every later answer to 401.
    created = target.registry.client(target.admin).post(
        "/tokens", json={"name": "throwaway", "role": "reader"}
    )
    assert created.status_code == 201, created.text
    return {"token_id": str(created.json()["id"])}


def _doomed_alias(target: Target) -> dict[str, str]:
    # Not `production`: serving must keep answering it for the serving routes' requests.
    api = target.registry.client(target.admin)
    assert api.put("/models/churn/aliases/doomed", json={"version": 1}).status_code == 200
    return {"alias": "doomed"}


def _doomed_replica(target: Target) -> dict[str, str]:
    api = target.registry.client(target.admin)
    assert api.put("/replicas/doomed", json={"position": 0}).status_code == 200
    return {"replica_id": "doomed"}


PREPARE: dict[tuple[str, str], Callable[[Target], dict[str, str]]] = {
    ("DELETE", "/api/v1/tokens/{token_id}"): _throwaway_token,
    ("DELETE", "/api/v1/models/{name}/aliases/{alias}"): _doomed_alias,
    ("DELETE", "/api/v1/replicas/{replica_id}"): _doomed_replica,
    ("POST", "/api/v1/models/{name}/versions/{version}/archive"): lambda _: {"version": "2"},
}
"""Path values an operation uses up (it deletes, revokes or archives them), made afresh before
each of its requests, so that its good request succeeds every time and changes nothing the
other operations rely on."""

JSON_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/v1/models"): {"name": "fresh"},
    ("PATCH", "/api/v1/models/{name}"): {},
    ("PATCH", "/api/v1/models/{name}/versions/{version}"): {},
    ("PUT", "/api/v1/models/{name}/aliases/{alias}"): {"version": 1},
    # Revision 1 routes to version 1: a rollback to it succeeds however often it is repeated.
    ("POST", "/api/v1/models/{name}/aliases/{alias}/rollback"): {"to_revision": 1},
    ("PUT", "/api/v1/replicas/{replica_id}"): {"position": 0},
    ("POST", "/api/v1/tokens"): {"name": "fresh", "role": "reader"},
}
PREDICT_BODIES: list[tuple[Callable[[str], bool], bytes]] = [
    # Each protocol's own shape of one row of the model's four features.
    (
        lambda path: path.startswith("/v2/") and path.endswith("/infer"),
        b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64",'
        b' "data": [1, 2, 3, 4]}]}',
    ),
    (lambda path: path.endswith(":predict"), b'{"instances": [[1, 2, 3, 4]]}'),
    (lambda path: path.endswith("invocations"), b'{"inputs": [[1, 2, 3, 4]]}'),
    (lambda path: path.endswith("/predict"), b'{"inputs": [[1, 2, 3, 4]]}'),
]
FREE_TEXT = {("query", "tag"), ("header", "X-Routing-Key")}


@dataclass(frozen=True)
class Slot:
    """One string parameter of one operation, the others filled with values that exist."""

    app: str
    method: str
    path: str
    location: str
    name: str

    def __str__(self) -> str:
        return f"{self.app} {self.method} {self.path} [{self.location} {self.name}]"


def slots(openapi: dict[str, Any], app: str) -> list[Slot]:
    found = []
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                found.append(Slot(app, method.upper(), path, parameter["in"], parameter["name"]))
    return found


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def send(target: Target, slot: Slot, payload: str | None) -> RawResponse:
    """The slot's operation with `payload` in the slot's place, or with good values (None)."""
    prepare = PREPARE.get((slot.method, slot.path))
    values = GOOD_PATH | (prepare(target) if prepare is not None else {})
    query = ""
    token = target.admin if slot.app == "registry" else target.reader
    headers = {"Authorization": f"Bearer {token}"}
    if payload is not None and slot.location == "path":
        values[slot.name] = segment(payload)
    elif payload is not None and slot.location == "query":
        query = f"?{slot.name}={segment(payload).replace('&', '%26').replace('?', '%3F')}"
    elif payload is not None and slot.location == "header":
        # A raw CR or LF would end the header: that is a different (and refused) request.
        headers[slot.name] = payload.replace("\r", "").replace("\n", "")
    body, content_type = b"", None
    if (slot.method, slot.path) in JSON_BODIES:
        body = json.dumps(JSON_BODIES[(slot.method, slot.path)]).encode()
        content_type = "application/json"
    elif predict := [b for matches, b in PREDICT_BODIES if matches(slot.path)]:
        body, content_type = predict[0], "application/json"
    elif slot.path == "/api/v1/models/{name}/versions" and slot.method == "POST":
        body, content_type = _multipart([("artifact", "model.joblib", _artifact())])
    url = target.registry.url if slot.app == "registry" else target.serving.url
    return raw_request(
        _port(url),
        slot.method,
        slot.path.format(**values) + query,
        headers=headers,
        body=body,
        content_type=content_type,
    )


def _outside_store(target: Target) -> dict[str, tuple[int, int, bytes]]:
    return _tree(target.data_dir.parent, skip={target.store})


def _check(response: RawResponse, where: str, *, free_text: bool = False) -> list[str]:
    problems = []
    if CANARY.encode() in response.body or b"root:x:0:0" in response.body:
        problems.append(f"{where}: leaked a file")
    if response.status >= 500 or (not free_text and not 400 <= response.status < 500):
        problems.append(f"{where}: {response.status} {response.body[:160]!r}")
    return problems


def test_every_path_query_and_header_parameter_refuses_traversal(target: Target) -> None:
    import httpx

    registry_schema = httpx.get(target.registry.url + "/openapi.json").json()
    serving_schema = httpx.get(target.serving.url + "/openapi.json").json()
    every = slots(registry_schema, "registry") + slots(serving_schema, "serving")
    assert len(every) >= 50
    assert len(PAYLOADS) >= 40
    before = _outside_store(target)
    wrong: list[str] = []
    for slot in every:
        # The good request must succeed, or a payload's 4xx would prove nothing about the payload.
        baseline = send(target, slot, None)
        if not 200 <= baseline.status < 300:
            wrong.append(f"{slot}: baseline answered {baseline.status} {baseline.body[:160]!r}")
            continue
        free_text = (slot.location, slot.name) in FREE_TEXT
        for payload in PAYLOADS:
            response = send(target, slot, payload)
            wrong += _check(response, f"{slot} {payload[:40]!r}", free_text=free_text)
    assert wrong == [], "\n".join(wrong)
    assert _outside_store(target) == before


def _upload(target: Target, parts: list[tuple[str, str | None, bytes]]) -> RawResponse:
    body, content_type = _multipart(parts)
    return raw_request(
        _port(target.registry.url),
        "POST",
        "/api/v1/models/churn/versions",
        headers={"Authorization": f"Bearer {target.admin}"},
        body=body,
        content_type=content_type,
    )


def test_multipart_part_names_and_file_names(target: Target) -> None:
    before = _outside_store(target)
    artifact = _artifact()
    wrong: list[str] = []
    for payload in PAYLOADS:
        name = payload.replace('"', "").replace("\r", "").replace("\n", "")
        for parts in (
            [(name, "model.joblib", artifact)],
            [("artifact", "model.joblib", artifact), (name, "x.onnx", b"\x08\x01")],
            [
                ("artifact", "m", artifact),
                ("metadata", None, json.dumps({"flavor": payload}).encode()),
            ],
        ):
            wrong += _check(_upload(target, parts), f"part {payload[:40]!r}")
        # The file name is never used: the upload succeeds and lands under its digest.
        response = _upload(target, [("artifact", name, artifact)])
        wrong += _check(response, f"filename {payload[:40]!r}", free_text=True)
    assert wrong == []
    assert _outside_store(target) == before
    # Only digests were written: no temporary object left, no name from the request used.
    stored = {p.relative_to(target.store).parts[:2] for p in target.store.rglob("*") if p.is_file()}
    assert stored <= {("blobs", "sha256")}, stored
    for blob in (target.store / "blobs" / "sha256").rglob("*"):
        if blob.is_file():
            assert len(blob.name) == 64
            assert blob.parent.name == blob.name[:2]


def test_json_name_fields_refuse_traversal(target: Target) -> None:
    before = _outside_store(target)
    api = target.registry.client(target.admin)
    wrong: list[str] = []
    for payload in PAYLOADS:
        requests = [
            ("POST", "/models", {"name": payload}),
            ("POST", "/tokens", {"name": payload, "role": "reader"}),
            ("POST", "/tokens", {"name": "scoped", "role": "reader", "models": [payload]}),
            (
                "PUT",
                "/replicas/r1",
                {"position": 0, "serving": [{"model": payload, "alias": "a", "revision": 0}]},
            ),
            ("PUT", "/models/churn/aliases/production", {"version": 1, "shadow": [payload]}),
        ]
        for method, path, body in requests:
            response = api.request(method, path, json=body)
            if CANARY in response.text:
                wrong.append(f"{method} {path} {payload[:40]!r}: leaked a file")
            if not 400 <= response.status_code < 500:
                wrong.append(f"{method} {path} {payload[:40]!r}: {response.status_code}")
    assert wrong == []
    assert _outside_store(target) == before
