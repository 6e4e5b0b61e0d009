"""`berth.Client`: the registry and serving HTTP APIs as typed Python calls.

Every call returns the registry's own wire models (`registry.schemas`) and every error answer
becomes a `berth.errors` exception carrying the API's code, message and detail. Nothing here
reaches past HTTP: the client works the same against `berth up` on a laptop and a fleet.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from berth import packaging
from berth.errors import (
    BerthError,
    InvalidInput,
    RolloutTimeout,
    ServerError,
    Unreachable,
    error_for,
)
from berth.packaging import FilePart, Package
from berth.upload import MultipartBody, Progress, sha256_of
from registry.schemas import (
    NAME_PATTERN,
    PRIMARY_FILE,
    AliasOut,
    AliasRevisionOut,
    AliasUpdate,
    GcReport,
    Health,
    Lineage,
    ModelOut,
    Page,
    ReplicaOut,
    Role,
    RollbackRequest,
    Rollout,
    TokenCreate,
    TokenCreated,
    TokenOut,
    Variant,
    VersionOut,
)

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_ALIAS = "production"
ROUTING_KEY_HEADER = "X-Routing-Key"

M = TypeVar("M", bound=BaseModel)

_LONG_POLL_SECONDS = 60.0
"""The longest single rollout long-poll; longer waits are several of them."""


class Prediction(BaseModel):
    """Serving's answer: who answered, `predictions` (from `predict`) and any other outputs."""

    model_config = ConfigDict(extra="allow", frozen=True)

    model: str
    version: int
    alias: str | None = None
    predictions: list[Any] | None = None

    @property
    def outputs(self) -> dict[str, Any]:
        """Outputs other than `predict` that were asked for (`predict_proba`, ...)."""
        return dict(self.model_extra or {})


def _name(value: str) -> str:
    return quote(value, safe="")


def _base_url(value: str, what: str) -> str:
    """`value` without a trailing slash, or `InvalidInput` naming it: checked here, once, so a
    typo is one clear error rather than whatever the first request trips over."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - parsing the port is what checks it
        httpx.URL(value)
    except (ValueError, httpx.InvalidURL) as exc:
        raise InvalidInput(
            f"{what} {value!r} is not a valid URL: {exc}", code="invalid_url"
        ) from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(
            f"{what} {value!r} is not an http:// or https:// URL with a host "
            "(e.g. http://127.0.0.1:8000)",
            code="invalid_url",
        )
    return value.rstrip("/")


class Client:
    """A client of one Berth installation: its registry and its serving endpoint.

    `serving_url` defaults to `url`, which is right for `berth up` (both in one process); a
    fleet usually puts serving behind its own load balancer.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        serving_url: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = _base_url(url, "the registry URL")
        self.serving_url = _base_url(serving_url, "the serving URL") if serving_url else self.url
        headers = {"User-Agent": "berth-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._timeout = timeout
        self._http = httpx.Client(headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------------------

    def _send(self, method: str, url: str, *, what: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            base = self.serving_url if url.startswith(self.serving_url) else self.url
            service = "serving" if base != self.url else "the registry"
            reason = str(exc) or type(exc).__name__
            raise Unreachable(
                f"cannot reach {service} at {base}: {reason}", detail={"url": base}
            ) from exc
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = None
            raise error_for(
                response.status_code,
                body,
                fallback=f"{what} failed: HTTP {response.status_code} {response.reason_phrase}",
            )
        return response

    def _api(self, method: str, path: str, *, what: str, **kwargs: Any) -> httpx.Response:
        return self._send(method, f"{self.url}/api/v1{path}", what=what, **kwargs)

    @staticmethod
    def _parse(response: httpx.Response, model: Any, *, what: str) -> Any:
        try:
            return TypeAdapter(model).validate_json(response.content)
        except ValidationError as exc:
            raise ServerError(
                f"the answer to {what} does not match the Berth API contract "
                f"(is {response.url} a Berth registry of the same version?)",
                code="contract_mismatch",
                detail=str(exc)[:2000],
            ) from exc

    def _get(self, path: str, model: Any, *, what: str, **params: Any) -> Any:
        params = {k: v for k, v in params.items() if v is not None}
        return self._parse(self._api("GET", path, what=what, params=params), model, what=what)

    def _pages(self, path: str, model: type[M], *, what: str, **params: Any) -> Iterator[M]:
        cursor: str | None = None
        while True:
            page: Page[M] = self._get(path, Page[model], what=what, cursor=cursor, **params)  # type: ignore[valid-type]
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # --- models and versions --------------------------------------------------------------------

    def models(self, *, prefix: str | None = None, tag: str | None = None) -> list[ModelOut]:
        """Every model, by name; `tag` is `key=value`."""
        return list(
            self._pages(
                "/models", ModelOut, what="listing models", prefix=prefix, tag=tag, limit=200
            )
        )

    def model(self, name: str) -> ModelOut:
        result: ModelOut = self._get(f"/models/{_name(name)}", ModelOut, what=f"model '{name}'")
        return result

    def versions(self, name: str, *, status: str | None = None) -> list[VersionOut]:
        """Every version of a model, newest first."""
        return list(
            self._pages(
                f"/models/{_name(name)}/versions",
                VersionOut,
                what=f"listing versions of '{name}'",
                status=status,
                limit=200,
            )
        )

    def version(self, name: str, version: int) -> VersionOut:
        result: VersionOut = self._get(
            f"/models/{_name(name)}/versions/{int(version)}",
            VersionOut,
            what=f"version {version} of '{name}'",
        )
        return result

    def show(
        self, name: str, *, version: int | None = None, alias: str | None = None
    ) -> ModelOut | VersionOut | AliasOut:
        """A model, one of its versions, or one of its aliases."""
        if version is not None and alias is not None:
            raise InvalidInput("give a version or an alias, not both")
        if version is not None:
            return self.version(name, version)
        if alias is not None:
            return self.alias(name, alias)
        return self.model(name)

    def push(
        self,
        model_or_path: Any,
        name: str,
        *,
        sample: Any = None,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        description: str = "",
        lineage: Lineage | None = None,
        flavor: str | None = None,
        files: Mapping[str, Path] | None = None,
        progress: Progress | None = None,
    ) -> VersionOut:
        """Upload a new version of `name`; returns it (its number, digest, signature, ...).

        `model_or_path` is a fitted estimator (serialised with joblib and described: signature,
        example from `sample`, training environment) or the path of an artifact, uploaded as is
        (described too when a `sample` is given: the file is loaded here to answer it). A path's
        `flavor` defaults to what its name implies (`.skops`: skops; else sklearn). `files` adds
        renditions as extra parts (`{"onnx": Path("model.onnx")}`).
        """
        if not re.fullmatch(NAME_PATTERN, name):
            raise InvalidInput(
                f"model name {name!r} is not valid: lowercase letters, digits, '.', '_' and '-', "
                "starting with a letter or digit, at most 128 characters"
            )
        describe_args: dict[str, Any] = {
            "metrics": metrics,
            "params": params,
            "tags": tags,
            "description": description,
            "lineage": lineage,
        }
        with tempfile.TemporaryDirectory(prefix="berth-push-") as scratch:
            if isinstance(model_or_path, str | Path):
                pkg = _package_path(Path(model_or_path), flavor, sample, describe_args)
            else:
                pkg = packaging.package(
                    model_or_path, Path(scratch), sample=sample, **describe_args
                )
            for part_name, path in (files or {}).items():
                pkg.files.append(FilePart(part_name, Path(path)))
            return self.upload(name, pkg, progress=progress)

    def upload(self, name: str, pkg: Package, *, progress: Progress | None = None) -> VersionOut:
        """Send a prepared package: the digest is declared up front, so the registry streams the
        artifact straight to its final key and refuses it if the bytes differ."""
        primary = next((f for f in pkg.files if f.name == PRIMARY_FILE), None)
        if primary is None:
            raise InvalidInput(f"an upload needs an '{PRIMARY_FILE}' file")
        for part in pkg.files:
            packaging.readable_file(part.path)
        try:
            digest = sha256_of(primary.path)
        except OSError as exc:  # opened a moment ago, but reading can still fail (EIO, ...)
            raise InvalidInput(f"cannot read {primary.path}: {exc.strerror or exc}") from exc
        metadata = pkg.metadata.model_copy(update={"sha256": digest})
        ordered = [primary, *(f for f in pkg.files if f is not primary)]
        body = MultipartBody(
            metadata.model_dump_json(exclude_none=True).encode(), ordered, progress=progress
        )
        response = self._api(
            "POST",
            f"/models/{_name(name)}/versions",
            what=f"uploading a version of '{name}'",
            content=iter(body),
            headers={"Content-Type": body.content_type, "Content-Length": str(len(body))},
            timeout=httpx.Timeout(self._timeout, read=max(self._timeout, 300.0)),
        )
        result: VersionOut = self._parse(response, VersionOut, what="the upload")
        return result

    # --- aliases --------------------------------------------------------------------------------

    def aliases(self, name: str) -> list[AliasOut]:
        result: list[AliasOut] = self._get(
            f"/models/{_name(name)}/aliases", list[AliasOut], what=f"aliases of '{name}'"
        )
        return result

    def alias(self, name: str, alias: str = DEFAULT_ALIAS) -> AliasOut:
        """The alias's current spec and revision, with which replicas serve it."""
        result: AliasOut = self._get(
            f"/models/{_name(name)}/aliases/{_name(alias)}",
            AliasOut,
            what=f"alias '{alias}' of '{name}'",
        )
        return result

    def history(self, name: str, alias: str = DEFAULT_ALIAS) -> list[AliasRevisionOut]:
        """Every revision of the alias, newest first."""
        return list(
            self._pages(
                f"/models/{_name(name)}/aliases/{_name(alias)}/history",
                AliasRevisionOut,
                what=f"history of alias '{alias}' of '{name}'",
                limit=200,
            )
        )

    def _set_alias(
        self, name: str, alias: str, body: AliasUpdate, *, if_match: int | None
    ) -> AliasOut:
        headers = {"If-Match": str(if_match)} if if_match is not None else {}
        response = self._api(
            "PUT",
            f"/models/{_name(name)}/aliases/{_name(alias)}",
            what=f"setting alias '{alias}' of '{name}'",
            content=body.model_dump_json(exclude_none=True),
            headers={"Content-Type": "application/json", **headers},
        )
        result: AliasOut = self._parse(response, AliasOut, what="the alias change")
        return result

    def promote(
        self,
        name: str,
        version: int,
        *,
        alias: str = DEFAULT_ALIAS,
        reason: str = "",
        wait: float | None = None,
        if_match: int | None = None,
    ) -> AliasOut:
        """Point `alias` at one version. With `wait` (seconds), return once every live serving
        replica serves the new revision, or raise `RolloutTimeout`."""
        body = _alias_update(version=version, reason=reason)
        return self._then_wait(self._set_alias(name, alias, body, if_match=if_match), wait)

    def split(
        self,
        name: str,
        weights: Mapping[int, int],
        *,
        alias: str = DEFAULT_ALIAS,
        shadow: Sequence[int] = (),
        reason: str = "",
        wait: float | None = None,
        if_match: int | None = None,
    ) -> AliasOut:
        """Split the alias's traffic, e.g. `{3: 90, 4: 10}`; `shadow` versions get copies."""
        body = _alias_update(
            variants=[Variant(version=v, weight=w) for v, w in weights.items()],
            shadow=list(shadow),
            reason=reason,
        )
        return self._then_wait(self._set_alias(name, alias, body, if_match=if_match), wait)

    def rollback(
        self,
        name: str,
        *,
        alias: str = DEFAULT_ALIAS,
        to_revision: int | None = None,
        reason: str = "",
        wait: float | None = None,
        if_match: int | None = None,
    ) -> AliasOut:
        """Restore the revision before the current one (or `to_revision`) as a new revision."""
        headers = {"If-Match": str(if_match)} if if_match is not None else {}
        response = self._api(
            "POST",
            f"/models/{_name(name)}/aliases/{_name(alias)}/rollback",
            what=f"rolling back alias '{alias}' of '{name}'",
            content=RollbackRequest(to_revision=to_revision, reason=reason).model_dump_json(),
            headers={"Content-Type": "application/json", **headers},
        )
        out: AliasOut = self._parse(response, AliasOut, what="the rollback")
        return self._then_wait(out, wait)

    def rollout(
        self, name: str, alias: str = DEFAULT_ALIAS, *, revision: int | None = None
    ) -> Rollout:
        result: Rollout = self._get(
            f"/models/{_name(name)}/aliases/{_name(alias)}/rollout",
            Rollout,
            what=f"rollout of alias '{alias}' of '{name}'",
            revision=revision,
        )
        return result

    def wait_for_rollout(self, name: str, alias: str, revision: int, *, timeout: float) -> Rollout:
        """Return once every live serving replica serves `revision`; `RolloutTimeout` if not
        within `timeout` seconds (also when no replica is live at all)."""
        deadline = time.monotonic() + timeout
        path = f"/models/{_name(name)}/aliases/{_name(alias)}/rollout"
        while True:
            wait = max(0.0, min(_LONG_POLL_SECONDS, deadline - time.monotonic()))
            response = self._api(
                "GET",
                path,
                what=f"rollout of alias '{alias}' of '{name}'",
                params={"revision": revision, "wait": round(wait, 3)},
                timeout=httpx.Timeout(self._timeout, read=wait + self._timeout),
            )
            rollout: Rollout = self._parse(response, Rollout, what="the rollout")
            if rollout.converged:
                return rollout
            if time.monotonic() >= deadline:
                behind = [r.replica_id for r in rollout.replicas if (r.revision or 0) < revision]
                why = (
                    f"replicas {', '.join(behind)} do not serve it yet"
                    if rollout.replicas
                    else "no serving replica is live"
                )
                raise RolloutTimeout(
                    f"revision {revision} of alias '{alias}' of '{name}' is recorded, but after "
                    f"{timeout:g} s {why}",
                    detail=rollout.model_dump(mode="json"),
                )

    def _then_wait(self, out: AliasOut, wait: float | None) -> AliasOut:
        if wait is None:
            return out
        rollout = self.wait_for_rollout(out.model, out.alias, out.revision, timeout=wait)
        return out.model_copy(update={"rollout": rollout})

    # --- predict --------------------------------------------------------------------------------

    def predict(
        self,
        name: str,
        rows: Any,
        *,
        version: int | None = None,
        alias: str | None = None,
        routing_key: str | None = None,
        outputs: Sequence[str] | None = None,
    ) -> Prediction:
        """Predict through serving: a pinned `version`, an `alias`, or the default alias.

        `rows` is a table of rows (lists, a numpy array), a dataframe (sent with its column
        names, which a version with a named signature matches by name), or a complete request
        body (a mapping such as `{"dataframe_records": [...]}`). `routing_key` keeps an A/B
        split sticky.
        """
        if version is not None and alias is not None:
            raise InvalidInput("give a version or an alias, not both")
        if isinstance(rows, Mapping):
            body: dict[str, Any] = dict(rows)
        elif hasattr(rows, "columns") and hasattr(rows, "to_numpy"):
            columns = [str(c) for c in rows.columns]
            body = {"dataframe_split": {"columns": columns, "data": rows.to_numpy().tolist()}}
        else:
            body = {"inputs": rows.tolist() if hasattr(rows, "tolist") else rows}
        if outputs is not None:
            body["outputs"] = list(outputs)
        path = f"/models/{_name(name)}"
        if version is not None:
            path += f"/versions/{int(version)}"
        elif alias is not None:
            path += f"/aliases/{_name(alias)}"
        headers = {"Content-Type": "application/json"}
        if routing_key is not None:
            headers[ROUTING_KEY_HEADER] = routing_key
        try:
            content = json.dumps(body, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"the input cannot be sent as JSON: {exc}") from exc
        response = self._send(
            "POST",
            f"{self.serving_url}{path}/predict",
            what=f"predicting with '{name}'",
            content=content,
            headers=headers,
        )
        result: Prediction = self._parse(response, Prediction, what="the prediction")
        return result

    def serving_status(self) -> dict[str, Any]:
        """Serving's `/status`: loaded versions, routing revisions, feed lag, failures."""
        response = self._send("GET", f"{self.serving_url}/status", what="serving status")
        result: dict[str, Any] = response.json()
        return result

    # --- operations -----------------------------------------------------------------------------

    def ready(self) -> Health:
        """The registry's `/readyz`: whether it reaches its database and artifact store. Never
        raises for a 503 (the body says what is down)."""
        try:
            response = self._http.get(f"{self.url}/readyz")
        except httpx.TransportError as exc:
            raise Unreachable(
                f"cannot reach the registry at {self.url}: {exc or type(exc).__name__}",
                detail={"url": self.url},
            ) from exc
        if response.status_code not in (200, 503):
            raise error_for(response.status_code, None, fallback=f"{self.url}/readyz failed")
        result: Health = self._parse(response, Health, what="/readyz")
        return result

    def whoami(self) -> dict[str, Any]:
        result: dict[str, Any] = self._get("/whoami", dict[str, Any], what="whoami")
        return result

    def replicas(self) -> list[ReplicaOut]:
        result: list[ReplicaOut] = self._get("/replicas", list[ReplicaOut], what="replicas")
        return result

    def gc(self, *, dry_run: bool = False) -> GcReport:
        """Delete artifacts no version references, older than the registry's grace period."""
        response = self._api(
            "POST", "/gc", what="garbage collection", params={"dry_run": str(dry_run).lower()}
        )
        result: GcReport = self._parse(response, GcReport, what="garbage collection")
        return result

    def create_token(
        self, name: str, *, role: Role | str = Role.reader, models: Sequence[str] | None = None
    ) -> TokenCreated:
        """Create a token; its secret is in the answer only."""
        body = _validated(
            TokenCreate, name=name, role=role, models=list(models) if models else None
        )
        response = self._api(
            "POST",
            "/tokens",
            what="creating a token",
            content=body.model_dump_json(),
            headers={"Content-Type": "application/json"},
        )
        result: TokenCreated = self._parse(response, TokenCreated, what="the new token")
        return result

    def tokens(self) -> list[TokenOut]:
        result: list[TokenOut] = self._get("/tokens", list[TokenOut], what="listing tokens")
        return result

    def revoke_token(self, token_id: int) -> TokenOut:
        response = self._api("DELETE", f"/tokens/{int(token_id)}", what=f"revoking {token_id}")
        result: TokenOut = self._parse(response, TokenOut, what="the revoked token")
        return result


def _validated(model: type[M], **values: Any) -> M:
    """Build a request body, turning a validation failure into one `InvalidInput` line."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        message = f"{where}: {first['msg']}" if where else first["msg"]
        raise InvalidInput(message, detail=exc.errors(include_url=False)) from exc


def _alias_update(**values: Any) -> AliasUpdate:
    return _validated(AliasUpdate, **values)


def _package_path(
    path: Path, flavor: str | None, sample: Any, describe_args: dict[str, Any]
) -> Package:
    packaging.readable_file(path)
    flavor = flavor or packaging.flavor_of(path)
    estimator = None
    if sample is not None:
        if flavor != "sklearn":
            raise InvalidInput(
                f"a sample is answered by loading the model here, which only works for sklearn "
                f"(joblib) artifacts; {path} is {flavor}: push it without a sample"
            )
        # The user's own file on the user's own machine: loading it here is the same trust as
        # the training script that wrote it, and it is what answers the sample.
        estimator = packaging.load_estimator(path)
    metadata = packaging.describe(estimator, sample, flavor=flavor, **describe_args)
    return Package(metadata=metadata, files=[FilePart(PRIMARY_FILE, path)])


__all__ = ["DEFAULT_ALIAS", "DEFAULT_URL", "BerthError", "Client", "Prediction"]
