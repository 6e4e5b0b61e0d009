"""Schema fuzzing of both apps, in-process, with a fixed seed: `make fuzz` and the short run.

Three questions per app, each a separate pass over every operation of its OpenAPI schema:

- with a valid token, schema-conforming and schema-violating requests: does anything answer
  5xx, or answer outside what the schema documents (status, content type, body, headers)?
- with no token, and with a forged one: does any operation other than the health checks answer
  anything but 401 (an authentication bypass)?

`python -m tests.security.fuzzing --examples 60` prints the counts; exit status 1 on any finding.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import FailedHealthCheck, Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sklearn.linear_model import LinearRegression

from registry import auth
from registry.config import RegistrySettings
from registry.db import Database
from registry.main import create_app as create_registry
from registry.migrate import upgrade
from registry.schemas import Role, TokenCreate
from serving.config import ServingSettings
from serving.main import create_app as create_serving
from tests.fixtures.servers import LiveServer

SEED = 20261126
PUBLIC_PATHS = {"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/ping"}
CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@dataclass
class Tally:
    """What one app's fuzzing saw."""

    app: str
    cases: int = 0
    auth_cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    outside_schema: list[str] = field(default_factory=list)
    bypasses: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.server_errors or self.outside_schema or self.bypasses)

    def summary(self) -> str:
        return (
            f"{self.app}: {self.cases} cases with a valid token + {self.auth_cases} without one; "
            f"{len(self.server_errors)} server errors, {len(self.outside_schema)} responses "
            f"outside the schema, {len(self.bypasses)} authentication bypasses; "
            f"statuses {dict(sorted(self.statuses.items()))}"
        )


def _label(case: Any, response: Any) -> str:
    return f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}"


def fuzz(
    app: Any,
    tally: Tally,
    *,
    token: str,
    examples: int,
    known: dict[str, Any],
    after_case: Callable[[Any, Any], None] | None = None,
) -> Tally:
    """Fuzz every operation of `app`; findings accumulate in `tally` (nothing raises).

    Each operation is fuzzed twice with a valid token: with every parameter generated (random
    names almost never exist, so that mostly reaches the 404 paths), and with the path pinned to
    the model, alias and version in `known` (so bodies and queries reach the deep paths).
    """
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, "the schema has no operations"
    valid, forged = f"Bearer {token}", "Bearer berth_forged-token"
    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        pinned = {k: v for k, v in known.items() if k in names} or None
        runs: list[tuple[GenerationMode, str | None, bool, dict[str, Any] | None, int]] = [
            (GenerationMode.POSITIVE, valid, False, None, examples),
            (GenerationMode.NEGATIVE, valid, False, None, examples),
            (GenerationMode.POSITIVE, None, True, None, max(1, examples // 4)),
            (GenerationMode.POSITIVE, forged, True, None, max(1, examples // 4)),
        ]
        if pinned:
            runs += [
                (GenerationMode.POSITIVE, valid, False, pinned, examples),
                (GenerationMode.NEGATIVE, valid, False, pinned, examples // 2),
            ]
        for mode, authorization, auth_pass, path_parameters, count in runs:
            _run_operation(
                operation,
                mode,
                tally,
                examples=count,
                authorization=authorization,
                auth_pass=auth_pass,
                path_parameters=path_parameters,
                after_case=after_case,
            )
    shutdown_lifespans()
    return tally


def _run_operation(
    operation: Any,
    mode: GenerationMode,
    tally: Tally,
    *,
    examples: int,
    authorization: str | None,
    auth_pass: bool,
    path_parameters: dict[str, Any] | None,
    after_case: Callable[[Any, Any], None] | None,
) -> None:
    if examples < 1:
        return

    @seed(SEED)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
        print_blob=False,
    )
    @given(operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def run(case: Any) -> None:
        case.headers = {
            k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"
        }
        if authorization is not None:
            case.headers["Authorization"] = authorization
        try:
            response = case.call(timeout=30)
        except Exception as exc:  # a hang or a dropped connection is a finding, not a crash
            tally.server_errors.append(f"{case.method} {case.formatted_path}: {exc}"[:500])
            return
        tally.statuses[response.status_code] += 1
        if after_case is not None:
            after_case(case, response)
        if auth_pass:
            tally.auth_cases += 1
            if case.path not in PUBLIC_PATHS and response.status_code != 401:
                tally.bypasses.append(_label(case, response))
            return
        tally.cases += 1
        if response.status_code >= 500:
            tally.server_errors.append(_label(case, response))
            return
        try:
            case.validate_response(response, checks=CONFORMANCE)
        except Exception as exc:
            tally.outside_schema.append(f"{_label(case, response)}\n    {exc}"[:1500])

    # Unsatisfiable: nothing to generate in this mode (an operation with no parameter to break).
    with contextlib.suppress(Unsatisfiable, FailedHealthCheck):
        run()


# --- the apps under test ----------------------------------------------------------------------


KNOWN = {"name": "churn", "alias": "production", "version": 1}
"""What exists in both apps: the path parameters of the pinned passes."""


def _publish_one_model(client: Any) -> None:
    """Upload a LinearRegression as churn v1 with a signature, and point production at it."""
    x = np.random.default_rng(0).normal(size=(50, 4))
    buffer = io.BytesIO()
    joblib.dump(LinearRegression().fit(x, x @ np.arange(4.0)), buffer)
    features = [{"name": n, "dtype": "float64"} for n in "abcd"]
    uploaded = client.post(
        "/api/v1/models/churn/versions",
        files={"artifact": ("m", buffer.getvalue())},
        data={"metadata": json.dumps({"signature": {"inputs": features}})},
    )
    assert uploaded.status_code == 201, uploaded.text
    promoted = client.put("/api/v1/models/churn/aliases/production", json={"version": 1})
    assert promoted.status_code == 200, promoted.text


@contextlib.contextmanager
def registry_app(data_dir: Path) -> Iterator[tuple[Any, str, Callable[[Any, Any], None]]]:
    """A registry (SQLite + a local directory, auth on) with one model and an admin token."""
    # Long-polls are bounded short: the fuzzer asks for waits of minutes.
    settings = RegistrySettings(
        data_dir=data_dir, auth=True, gc_grace_seconds=3600, feed_max_wait_seconds=0.2
    )
    database = Database(settings.effective_database_url)
    upgrade(database)
    with database.transaction() as session:
        row, secret = auth.create_token(
            session, TokenCreate(name="fuzz", role=Role.admin), created_by="fuzz"
        )
    admin_id = row.id

    def keep_token(case: Any, response: Any) -> None:
        # The fuzzer may revoke its own token through DELETE /tokens/{id}; restore it, or every
        # later case would stop at 401 and test nothing.
        if case.method == "DELETE" and "/tokens/" in case.formatted_path:
            with database.engine.begin() as conn:
                conn.exec_driver_sql(
                    "UPDATE tokens SET revoked_at = NULL WHERE id = ?", (admin_id,)
                )

    # Seeded through an app of its own: an app's lifespan runs once, and the fuzzer's is next.
    with (
        LiveServer(create_registry(settings)) as seeder,
        httpx.Client(base_url=seeder.url, headers={"Authorization": f"Bearer {secret}"}) as c,
    ):
        _publish_one_model(c)
    app = create_registry(settings, database=database)
    try:
        yield app, secret, keep_token
    finally:
        database.dispose()


@contextlib.contextmanager
def serving_app(data_dir: Path) -> Iterator[tuple[Any, str]]:
    """A serving replica (auth on) following a live registry that serves churn v1."""
    settings = RegistrySettings(data_dir=data_dir, auth=True, auto_migrate=True)
    registry = create_registry(settings)
    with LiveServer(registry) as server:
        with registry.state.db.transaction() as session:
            _, admin = auth.create_token(
                session, TokenCreate(name="setup", role=Role.admin), created_by="fuzz"
            )
            _, reader = auth.create_token(
                session, TokenCreate(name="serving", role=Role.reader), created_by="fuzz"
            )
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin}"}) as c:
            _publish_one_model(c)
        serving = create_serving(
            ServingSettings(
                registry_url=server.url,
                registry_token=reader,
                replica_id="fuzz",
                load_isolation=False,
                feed_wait_seconds=1,
                heartbeat_seconds=1,
            )
        )
        yield serving, reader


def fuzz_both(examples: int) -> list[Tally]:
    with (
        tempfile.TemporaryDirectory() as registry_dir,
        registry_app(Path(registry_dir)) as (app, token, keep),
    ):
        registry_tally = fuzz(
            app, Tally("registry"), token=token, examples=examples, known=KNOWN, after_case=keep
        )
    with (
        tempfile.TemporaryDirectory() as serving_dir,
        serving_app(Path(serving_dir)) as (app, token),
    ):
        serving_tally = fuzz(app, Tally("serving"), token=token, examples=examples, known=KNOWN)
    return [registry_tally, serving_tally]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.security.fuzzing", description=__doc__)
    parser.add_argument("--examples", type=int, default=60, help="per operation and mode")
    parser.add_argument(
        "--min-cases",
        type=int,
        default=0,
        help="fail unless at least this many cases ran: a generator that silently gave up "
        "would otherwise pass on a fraction of the run",
    )
    parser.add_argument("--json", type=Path, help="also write the counts here")
    args = parser.parse_args(argv)
    tallies = fuzz_both(args.examples)
    for tally in tallies:
        print(tally.summary())
        for title, findings in (
            ("server errors", tally.server_errors),
            ("outside the schema", tally.outside_schema),
            ("authentication bypasses", tally.bypasses),
        ):
            for finding in findings[:20]:
                print(f"  [{title}] {finding}")
    total = sum(t.cases + t.auth_cases for t in tallies)
    print(f"total: {total} cases")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        counts = {
            t.app: {
                "cases": t.cases,
                "auth_cases": t.auth_cases,
                "statuses": {str(k): v for k, v in sorted(t.statuses.items())},
                "server_errors": len(t.server_errors),
                "outside_schema": len(t.outside_schema),
                "bypasses": len(t.bypasses),
            }
            for t in tallies
        }
        args.json.write_text(json.dumps({"total": total, "apps": counts}, indent=2) + "\n")
    if total < args.min_cases:
        print(f"too few cases: {total} < --min-cases {args.min_cases}")
        return 1
    return 0 if all(t.clean for t in tallies) else 1


if __name__ == "__main__":
    sys.exit(main())
