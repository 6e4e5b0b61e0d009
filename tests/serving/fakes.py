"""An in-memory registry speaking the HTTP contract serving uses, and a feed-level fake.

`FakeRegistry.app` is a Starlette app: serving reaches it through `httpx.ASGITransport` (one
process, no sockets). It keeps state and is asserted on state; tests change it from their own
thread, so every mutation holds a lock and the long-poll re-checks every few milliseconds
instead of relying on a wake-up across event loops.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from registry.schemas import (
    Change,
    ChangesOut,
    FileOut,
    ReplicaOut,
    ReplicaReport,
    RevisionAction,
    RoutingEntry,
    RoutingSnapshot,
    Variant,
    VersionMetadata,
    VersionOut,
    VersionStatus,
)
from serving.errors import RegistryUnavailable, VersionNotFound
from tests.serving.factories import sha256

STORE_HOST = "store.test"


def _now() -> datetime:
    return datetime.now(UTC)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, "detail": None}, status_code=status)


@dataclass
class SeenRequest:
    host: str
    path: str
    authorization: str | None


@dataclass
class FakeRegistry:
    redirect_artifacts: bool = False
    """Answer artifact downloads with a 307 to another origin, as the registry does on S3."""
    down: bool = False
    """Every endpoint answers 503, as when the registry's database is unreachable."""
    versions: dict[tuple[str, int], VersionOut] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    aliases: dict[tuple[str, str], RoutingEntry] = field(default_factory=dict)
    revisions: dict[tuple[str, str], int] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    reports: dict[str, ReplicaReport] = field(default_factory=dict)
    deregistered: list[str] = field(default_factory=list)
    seen: list[SeenRequest] = field(default_factory=list)
    downloads: dict[tuple[str, int], int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # --- what a test does ----------------------------------------------------------------------

    def add_version(
        self,
        name: str,
        data: bytes,
        meta: VersionMetadata,
        *,
        files: Mapping[str, bytes] | None = None,
    ) -> int:
        """A new version; `files` adds renditions (`{"onnx": b"..."}`) beside the artifact."""
        with self.lock:
            version = 1 + max((v for (n, v) in self.versions if n == name), default=0)
            digest = sha256(data)
            self.blobs[digest] = data
            renditions = []
            for part, content in (files or {}).items():
                self.blobs[sha256(content)] = content
                renditions.append(
                    FileOut(
                        name=part,
                        sha256=sha256(content),
                        size=len(content),
                        media_type="application/octet-stream",
                    )
                )
            self.versions[(name, version)] = VersionOut(
                model=name,
                version=version,
                status=VersionStatus.ready,
                flavor=meta.flavor,
                sha256=digest,
                size=len(data),
                files=[
                    FileOut(
                        name="artifact",
                        sha256=digest,
                        size=len(data),
                        media_type="application/octet-stream",
                    ),
                    *renditions,
                ],
                signature=meta.signature,
                example=meta.example,
                metrics={},
                params={},
                tags={},
                description="",
                lineage=None,
                created_by="test",
                created_at=_now(),
                archived_at=None,
            )
            return version

    def file_digest(self, name: str, version: int, file: str = "artifact") -> str:
        return next(f.sha256 for f in self.versions[(name, version)].files if f.name == file)

    def corrupt(self, name: str, version: int, file: str = "artifact") -> None:
        """Change the stored bytes after upload, keeping the recorded digest."""
        with self.lock:
            digest = self.file_digest(name, version, file)
            data = bytearray(self.blobs[digest])
            data[len(data) // 2] ^= 0xFF
            self.blobs[digest] = bytes(data)

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int | None = None,
        *,
        variants: list[tuple[int, int]] | None = None,
        shadow: tuple[int, ...] = (),
    ) -> int:
        pairs = variants if variants is not None else [(version or 0, 100)]
        with self.lock:
            revision = self.revisions.get((name, alias), 0) + 1
            self.revisions[(name, alias)] = revision
            entry = RoutingEntry(
                model=name,
                alias=alias,
                revision=revision,
                variants=[Variant(version=v, weight=w) for v, w in pairs],
                shadow=list(shadow),
                updated_at=_now(),
            )
            self.aliases[(name, alias)] = entry
            self._append(entry, deleted=False)
            return revision

    def delete_alias(self, name: str, alias: str) -> int:
        with self.lock:
            entry = self.aliases.pop((name, alias))
            revision = self.revisions[(name, alias)] + 1
            self.revisions[(name, alias)] = revision
            gone = entry.model_copy(update={"revision": revision, "variants": [], "shadow": []})
            self._append(gone, deleted=True)
            return revision

    def _append(self, entry: RoutingEntry, *, deleted: bool) -> None:
        self.changes.append(
            Change(
                seq=len(self.changes) + 1,
                model=entry.model,
                alias=entry.alias,
                revision=entry.revision,
                action=RevisionAction.delete if deleted else RevisionAction.set,
                deleted=deleted,
                variants=entry.variants,
                shadow=entry.shadow,
                created_at=_now(),
                created_by="test",
            )
        )

    def served_revision(self, replica_id: str, name: str, alias: str) -> int | None:
        with self.lock:
            report = self.reports.get(replica_id)
        if report is None:
            return None
        for served in report.serving:
            if (served.model, served.alias) == (name, alias):
                return served.revision
        return None

    # --- the HTTP side -------------------------------------------------------------------------

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/v1/routing", self._routing),
                Route("/api/v1/changes", self._changes),
                Route("/api/v1/models/{name}/versions/{version:int}", self._version),
                Route("/api/v1/models/{name}/versions/{version:int}/artifact", self._artifact),
                Route("/api/v1/models/{name}/versions/{version:int}/files/{file}", self._artifact),
                Route("/api/v1/replicas/{replica_id}", self._report, methods=["PUT"]),
                Route("/api/v1/replicas/{replica_id}", self._deregister, methods=["DELETE"]),
                Route("/blobs/{digest}", self._blob),
            ]
        )

    def _note(self, request: Request) -> Response | None:
        with self.lock:
            self.seen.append(
                SeenRequest(
                    host=request.url.hostname or "",
                    path=request.url.path,
                    authorization=request.headers.get("authorization"),
                )
            )
        if self.down:
            return _error(503, "database_unavailable", "the database is unreachable")
        return None

    async def _routing(self, request: Request) -> Response:
        if (refusal := self._note(request)) is not None:
            return refusal
        with self.lock:
            snapshot = RoutingSnapshot(
                position=len(self.changes), aliases=list(self.aliases.values())
            )
        return JSONResponse(snapshot.model_dump(mode="json"))

    async def _changes(self, request: Request) -> Response:
        if (refusal := self._note(request)) is not None:
            return refusal
        after = int(request.query_params.get("after", "0"))
        wait = float(request.query_params.get("wait", "0"))
        limit = int(request.query_params.get("limit", "100"))
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            with self.lock:
                found = self.changes[after : after + limit]
            if found or asyncio.get_running_loop().time() >= deadline or self.down:
                break
            await asyncio.sleep(0.01)
        if self.down:
            return _error(503, "database_unavailable", "the database is unreachable")
        out = ChangesOut(changes=found, position=found[-1].seq if found else after)
        return JSONResponse(out.model_dump(mode="json"))

    async def _version(self, request: Request) -> Response:
        if (refusal := self._note(request)) is not None:
            return refusal
        name, version = request.path_params["name"], request.path_params["version"]
        with self.lock:
            found = self.versions.get((name, version))
            known_model = any(n == name for n, _ in self.versions)
        if found is None:
            if not known_model:
                return _error(404, "model_not_found", f"model '{name}' does not exist")
            return _error(404, "version_not_found", f"model '{name}' has no version {version}")
        return JSONResponse(found.model_dump(mode="json"))

    async def _artifact(self, request: Request) -> Response:
        if (refusal := self._note(request)) is not None:
            return refusal
        name, version = request.path_params["name"], request.path_params["version"]
        with self.lock:
            found = self.versions.get((name, version))
            if found is not None:
                self.downloads[(name, version)] = self.downloads.get((name, version), 0) + 1
        if found is None:
            return _error(404, "version_not_found", f"model '{name}' has no version {version}")
        file = request.path_params.get("file", "artifact")
        record = next((f for f in found.files if f.name == file), None)
        if record is None:
            return _error(404, "file_not_found", f"version {version} has no file '{file}'")
        if self.redirect_artifacts:
            return Response(
                status_code=307,
                headers={
                    "Location": f"http://{STORE_HOST}/blobs/{record.sha256}?X-Amz-Signature=x"
                },
            )
        return Response(self.blobs[record.sha256], media_type="application/octet-stream")

    async def _blob(self, request: Request) -> Response:
        if (refusal := self._note(request)) is not None:
            return refusal
        data = self.blobs.get(request.path_params["digest"])
        if data is None:
            return Response(status_code=404)
        return Response(data, media_type="application/octet-stream")

    async def _deregister(self, request: Request) -> Response:
        if (refusal := self._note(request)) is not None:
            return refusal
        with self.lock:
            self.deregistered.append(request.path_params["replica_id"])
        return Response(status_code=204)

    async def _report(self, request: Request) -> Response:
        if (refusal := self._note(request)) is not None:
            return refusal
        report = ReplicaReport.model_validate_json(await request.body())
        replica_id = request.path_params["replica_id"]
        with self.lock:
            self.reports[replica_id] = report
        out = ReplicaOut(
            replica_id=replica_id,
            live=True,
            last_seen=_now(),
            position=report.position,
            serving=report.serving,
            failures=report.failures,
        )
        return JSONResponse(out.model_dump(mode="json"))


class FakeSource:
    """The loader's view of the registry, over a FakeRegistry's state, without HTTP.

    Counts what it is asked: `lookups` (one per load attempt) and `downloads`, per version.
    """

    def __init__(self, registry: FakeRegistry) -> None:
        self.registry = registry
        self.outage = False
        self.lookups: Counter[tuple[str, int]] = Counter()
        self.downloads: Counter[tuple[str, int]] = Counter()

    async def version(self, name: str, version: int) -> VersionOut:
        self.lookups[(name, version)] += 1
        found = self.registry.versions.get((name, version))
        if found is None:
            raise VersionNotFound(name, version)
        return found

    async def download(
        self, name: str, version: int, dest: Path, *, max_bytes: int, file: str = "artifact"
    ) -> tuple[str, int]:
        self.downloads[(name, version)] += 1
        if self.outage:
            raise RegistryUnavailable("storage is down")
        data = self.registry.blobs[self.registry.file_digest(name, version, file)]
        await asyncio.to_thread(dest.write_bytes, data[: max_bytes + 1])
        return hashlib.sha256(data).hexdigest(), len(data)
