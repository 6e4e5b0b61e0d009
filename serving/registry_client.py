"""The registry's HTTP API as serving uses it; httpx stops here.

Every httpx exception and every unusable answer becomes a `ServingError`: `RegistryUnavailable`
when trying again later may help (connection refused, timeouts, 5xx), `NotFound` for 404s, and
`RegistryRejected` when the registry refuses serving itself (bad token, broken contract).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from registry.schemas import (
    PRIMARY_FILE,
    ChangesOut,
    ReplicaOut,
    ReplicaReport,
    RoutingSnapshot,
    VersionOut,
)
from serving.errors import (
    ModelNotFound,
    NotFound,
    RegistryRejected,
    RegistryUnavailable,
    ServingError,
    VersionNotFound,
)

M = TypeVar("M", bound=BaseModel)

_CHUNK = 1024 * 1024
_VERSION_CACHE_SIZE = 4096


class StaleFeedPosition(RegistryRejected):
    """The registry does not know the feed position serving asked from: take a new snapshot."""

    code = "stale_feed_position"


def _error_code(response: httpx.Response) -> tuple[str, str]:
    try:
        body = response.json()
    except ValueError:
        return "", response.text[:200]
    if isinstance(body, dict):
        return str(body.get("error", "")), str(body.get("message", ""))
    return "", str(body)[:200]


class RegistryClient:
    """Async client of the registry API. Owns one connection pool; close it with `aclose()`."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None,
        timeout_seconds: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"User-Agent": "berth-serving"}
        if token:
            # A client-level header: httpx drops it when a redirect leaves this origin (the
            # presigned S3 URL) and never adds it back on later hops, so the token stays here.
            headers["Authorization"] = f"Bearer {token}"
        self._timeout = timeout_seconds
        self._base = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self._base,
            headers=headers,
            timeout=httpx.Timeout(timeout_seconds),
            transport=transport,
            follow_redirects=False,
        )
        self._versions: dict[tuple[str, int], VersionOut] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- plumbing -----------------------------------------------------------------------------

    def _unavailable(self, exc: httpx.HTTPError) -> RegistryUnavailable:
        return RegistryUnavailable(
            f"registry at {self._base} is unreachable: {type(exc).__name__}: {exc}",
            detail={"registry": self._base},
        )

    def _refusal(self, response: httpx.Response, *, what: str) -> ServingError:
        code, message = _error_code(response)
        status = response.status_code
        detail = {"registry_status": status, "registry_error": code}
        if status >= 500 or status in (408, 429):
            return RegistryUnavailable(
                f"registry could not answer {what}: {status} {code} {message}".strip(),
                detail=detail,
            )
        if status == 404:
            return NotFound(message or f"registry has no {what}", detail=detail)
        if code == "invalid_cursor":
            return StaleFeedPosition(
                f"registry rejected the feed position: {message}", detail=detail
            )
        return RegistryRejected(
            f"registry refused {what}: {status} {code} {message}".strip(), detail=detail
        )

    async def _get(self, path: str, model: type[M], *, what: str, **kwargs: Any) -> M:
        try:
            response = await self._http.get(path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc
        if response.status_code != 200:
            raise self._refusal(response, what=what)
        return self._parse(response, model, what=what)

    @staticmethod
    def _parse(response: httpx.Response, model: type[M], *, what: str) -> M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise RegistryRejected(
                f"registry's answer for {what} does not match the contract: {exc}"
            ) from exc

    # --- the endpoints serving uses ------------------------------------------------------------

    async def routing(self) -> RoutingSnapshot:
        return await self._get("/routing", RoutingSnapshot, what="the routing snapshot")

    async def changes(self, *, after: int, wait: float, limit: int) -> ChangesOut:
        """Long-poll the feed: returns once a change after `after` exists, or empty after `wait`."""
        return await self._get(
            "/changes",
            ChangesOut,
            what="the change feed",
            params={"after": after, "wait": wait, "limit": limit},
            timeout=httpx.Timeout(self._timeout, read=wait + self._timeout),
        )

    async def version(self, name: str, version: int) -> VersionOut:
        """A version's record; immutable, so cached for the life of the client."""
        key = (name, version)
        found = self._versions.get(key)
        if found is not None:
            return found
        try:
            out = await self._get(
                f"/models/{quote(name, safe='')}/versions/{version}",
                VersionOut,
                what=f"version {version} of model '{name}'",
            )
        except NotFound as exc:
            code = exc.detail.get("registry_error") if isinstance(exc.detail, dict) else None
            if code == "model_not_found":
                raise ModelNotFound(name) from exc
            raise VersionNotFound(name, version) from exc
        if len(self._versions) >= _VERSION_CACHE_SIZE:
            self._versions.clear()
        self._versions[key] = out
        return out

    @asynccontextmanager
    async def _stream(self, url: str) -> AsyncIterator[httpx.Response]:
        try:
            async with self._http.stream("GET", url, follow_redirects=True) as response:
                yield response
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc

    async def download(
        self, name: str, version: int, dest: Path, *, max_bytes: int, file: str = PRIMARY_FILE
    ) -> tuple[str, int]:
        """Stream a version's file into `dest` while hashing it; return (sha256 hex, size).

        Stops reading once more than `max_bytes` arrived (the returned size then says so).
        Follows the registry's redirect to a presigned URL without the bearer token.
        """
        base = f"/models/{quote(name, safe='')}/versions/{version}"
        url = f"{base}/artifact" if file == PRIMARY_FILE else f"{base}/files/{quote(file, safe='')}"
        digest = hashlib.sha256()
        size = 0
        with dest.open("wb") as sink:

            def take(chunk: bytes) -> None:
                digest.update(chunk)
                sink.write(chunk)

            async with self._stream(url) as response:
                if response.status_code != 200:
                    await response.aread()
                    refusal = self._refusal(response, what=f"the {file} of {name} v{version}")
                    if (
                        response.status_code == 403
                        and response.url.host != self._http.base_url.host
                    ):
                        # An expired or refused presigned URL: a new one from the registry helps.
                        raise RegistryUnavailable(refusal.message, detail=refusal.detail)
                    raise refusal
                try:
                    async for chunk in response.aiter_bytes(_CHUNK):
                        size += len(chunk)
                        if size > max_bytes:
                            break
                        # Hashing and writing a MiB blocks for about a millisecond: off the loop.
                        await asyncio.to_thread(take, chunk)
                except httpx.HTTPError as exc:
                    raise self._unavailable(exc) from exc
        return digest.hexdigest(), size

    async def deregister(self, replica_id: str) -> None:
        """Tell the registry this replica is going away, so rollouts stop counting it."""
        try:
            response = await self._http.delete(f"/replicas/{quote(replica_id, safe='')}")
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc
        if response.status_code not in (204, 404):
            raise self._refusal(response, what="the replica's deregistration")

    async def report(self, replica_id: str, report: ReplicaReport) -> ReplicaOut:
        try:
            response = await self._http.put(
                f"/replicas/{quote(replica_id, safe='')}",
                content=report.model_dump_json(),
                headers={"Content-Type": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc
        if response.status_code not in (200, 201):
            raise self._refusal(response, what="the replica report")
        return self._parse(response, ReplicaOut, what="the replica report")
