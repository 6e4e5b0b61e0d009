"""The `berth` command line: run Berth, publish and route models, predict, operate.

Every command that talks to a running Berth goes through `berth.Client` over HTTP. Output is a
table or a short summary for people, `--json` for scripts. A user mistake or an unreachable
service prints one line (`error: ...`) on stderr and exits 1; usage errors exit 2.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from pydantic import ValidationError
from pydantic_core import to_jsonable_python
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from berth import render
from berth.client import DEFAULT_ALIAS, Client
from berth.config import ClientSettings, resolve_token
from berth.errors import BerthError
from registry.errors import RegistryError
from registry.schemas import NAME_PATTERN, Role

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    name="berth",
    help="Berth: a model registry and versioned serving platform you can run yourself.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="The registry's database schema.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens: create, list, revoke, bootstrap.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")


def stdout() -> Console:
    return Console(soft_wrap=False)


def stderr() -> Console:
    return Console(stderr=True)


class UserError(Exception):
    """A mistake in what the user asked for, found before any request."""


def fail(message: str) -> typer.Exit:
    stderr().print(
        f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True
    )
    return typer.Exit(1)


@contextmanager
def _one_line_errors() -> Iterator[None]:
    try:
        yield
    except BerthError as exc:
        raise fail(exc.message) from None
    except UserError as exc:
        raise fail(str(exc)) from None
    except RegistryError as exc:  # the commands that work on the database directly
        raise fail(exc.message) from None
    except ValidationError as exc:  # a BERTH_* variable that does not parse
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise fail(f"invalid configuration {exc.title} {where}: {first['msg']}") from None


def command(
    target: typer.Typer, name: str | None = None, **kwargs: Any
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """`target.command(...)`, with errors the user can act on printed as one line."""

    def register(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def run(*args: P.args, **kw: P.kwargs) -> R:
            with _one_line_errors():
                return function(*args, **kw)

        target.command(name, **kwargs)(run)
        return function

    return register


# --- options shared by the commands that talk to a running Berth --------------------------------

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url", help="The registry (BERTH_URL; default http://127.0.0.1:8000).", show_default=False
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="Bearer token (BERTH_TOKEN; against a local `berth up`, its data dir's admin-token).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
AliasOption = Annotated[str, typer.Option("--alias", "-a", help="The alias.")]
WaitOption = Annotated[
    bool, typer.Option("--wait", help="Return once every live serving replica serves it.")
]
TimeoutOption = Annotated[float, typer.Option("--timeout", help="Seconds --wait waits.", min=0)]
ReasonOption = Annotated[str, typer.Option("--reason", "-m", help="Why: kept in the history.")]


def connect(url: str | None, token: str | None, *, serving_url: str | None = None) -> Client:
    settings = ClientSettings()
    base = url or settings.url
    resolved = resolve_token(token, settings, base)
    return Client(
        base,
        token=resolved.value,
        serving_url=serving_url or settings.serving_url,
        timeout=settings.timeout_seconds,
    )


def emit_json(value: Any) -> None:
    """Print a wire model (or a list of them) exactly as the API shapes it."""
    sys.stdout.write(json.dumps(to_jsonable_python(value), indent=2) + "\n")


def show(renderable: RenderableType) -> None:
    stdout().print(renderable)


def key_values(items: Sequence[str], what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{what} {item!r} is not KEY=VALUE")
        pairs[key] = value
    return pairs


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise UserError(f"metric value {value!r} is not a number") from None


def _param(value: str) -> Any:
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    return parsed if isinstance(parsed, int | float | bool | str) or parsed is None else value


def read_json_argument(value: str, what: str) -> Any:
    """A JSON string, or `@path` to read it from a file (`@-` for stdin)."""
    text = value
    if value.startswith("@"):
        source = value[1:]
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text()
        except OSError as exc:
            raise UserError(f"cannot read {what} from {source}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UserError(f"{what} is not valid JSON: {exc}") from None


def read_sample(path: Path) -> Any:
    """Sample rows from `.json` (rows, or `{"inputs": rows}`), `.csv` (a header row) or `.npy`."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            import numpy as np

            return np.load(path, allow_pickle=False)
        text = path.read_text()
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the sample {path}: {exc}") from None
    if suffix == ".csv":
        rows = list(csv.reader(text.splitlines()))
        if len(rows) < 2:
            raise UserError(f"the sample {path} needs a header row and at least one row")
        return [[_cell(c) for c in row] for row in rows[1:] if row]
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UserError(f"the sample {path} is not valid JSON: {exc}") from None
    if isinstance(data, dict) and "inputs" in data:
        data = data["inputs"]
    if not isinstance(data, list) or not data:
        raise UserError(f"the sample {path} must hold a non-empty list of rows")
    return data


def _cell(value: str) -> Any:
    try:
        return float(value)
    except ValueError:
        return value


def parse_ref(ref: str) -> tuple[str, int | None, str | None]:
    """`NAME`, `NAME@ALIAS` or `NAME:VERSION`."""
    if "@" in ref:
        name, _, alias = ref.partition("@")
        if not alias:
            raise UserError(f"{ref!r}: the alias after '@' is empty")
        return name, None, alias
    if ":" in ref:
        name, _, number = ref.partition(":")
        if not number.isdigit() or int(number) < 1:
            raise UserError(f"{ref!r}: the version after ':' must be a positive number")
        return name, int(number), None
    return ref, None, None


# --- running Berth ------------------------------------------------------------------------------

HostOption = Annotated[str, typer.Option("--host", help="Address to listen on.")]


def _log_setup() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # One line per request is uvicorn's access log's job, not httpx's.
    logging.getLogger("httpx").setLevel(logging.WARNING)


@command(app, "up")
def up(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="SQLite file, artifacts and tokens (BERTH_DATA_DIR; default ./berth-data).",
        ),
    ] = None,
    host: HostOption = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", help="Port to listen on.", min=0, max=65535)
    ] = 8000,
) -> None:
    """Run the registry and serving in one process on the embedded defaults."""
    from berth import allinone
    from registry.config import RegistrySettings
    from registry.errors import RegistryError
    from registry.main import InsecureBinding, check_binding

    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if "BERTH_AUTO_MIGRATE" not in os.environ:
        overrides["auto_migrate"] = True  # the embedded default migrates itself
    settings = RegistrySettings(**overrides)
    try:
        # Both halves read the same BERTH_AUTH and BERTH_ALLOW_INSECURE, so the registry's rule
        # is serving's too.
        check_binding(settings, host)
    except InsecureBinding as exc:
        raise UserError(str(exc)) from None
    sock = _listen(host, port)
    serving: dict[str, Any] = {}
    if "BERTH_FEED_WAIT_SECONDS" not in os.environ:
        serving["feed_wait_seconds"] = allinone.IN_PROCESS_FEED_WAIT
    _log_setup()
    try:
        instance = allinone.build(settings, sock, serving_overrides=serving)
    except RegistryError as exc:
        sock.close()
        raise UserError(exc.message) from None
    console = Console(stderr=True, soft_wrap=True, highlight=False)
    console.print(f"[bold]Berth[/] is up at [bold cyan]{instance.url}[/]")
    console.print(
        f"  registry {instance.url}/api/v1 · predict {instance.url}/models/NAME/predict · "
        f"reference {instance.url}/docs"
    )
    data_dir = settings.data_dir.resolve()
    console.print(f"  data in {data_dir}")
    if instance.admin_token is not None:
        state = "created now" if instance.admin_created else "kept"
        console.print(f"  admin token ({state}) in {instance.admin_token.resolve()}")
        # The CLI finds the token through its own BERTH_DATA_DIR (default ./berth-data): say
        # exactly when that is this directory, rather than promise "this machine".
        export = f"export BERTH_DATA_DIR={shlex.quote(str(data_dir))}"
        if ClientSettings().data_dir.resolve() == data_dir:
            console.print(f"  the CLI uses it when run here; from elsewhere, first: {export}")
        else:
            console.print(f"  for the CLI to use it: {export}")
    else:
        console.print("  authentication is off (BERTH_AUTH=false)")
    _serve(instance.app, sockets=[sock], before_shutdown=instance.app.stop_serving)


def _listen(host: str, port: int) -> Any:
    """A bound, listening socket: a port in use is one line here, before any app starts
    (uvicorn would report it only after running the app's startup)."""
    from berth.allinone import bind

    try:
        return bind(host, port)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _serve(
    app_: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    sockets: list[Any] | None = None,
    before_shutdown: Callable[[], Awaitable[None]] | None = None,
) -> None:
    import uvicorn

    from registry.main import freeze_startup_heap

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[Any] | None = None) -> None:
            if before_shutdown is not None:
                await before_shutdown()
            await super().shutdown(sockets=sockets)

    config = uvicorn.Config(
        app_,
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        # Long-polls (the change feed, rollout waits) would otherwise hold a stop for a minute.
        timeout_graceful_shutdown=3,
        proxy_headers=False,
    )
    server = Server(config)
    freeze_startup_heap()
    server.run(sockets=sockets)
    if not server.started:
        raise typer.Exit(1)


@command(app, "registry")
def registry_command(
    host: HostOption = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8000,
) -> None:
    """Run the registry alone (configured by BERTH_* variables)."""
    from registry.config import RegistrySettings
    from registry.main import InsecureBinding, check_binding, check_schema, create_app

    settings = RegistrySettings()
    try:
        check_binding(settings, host)
    except InsecureBinding as exc:
        raise UserError(str(exc)) from None
    registry = create_app(settings)
    if not settings.auto_migrate:
        # The app's startup checks it too, but uvicorn would print that as a traceback.
        check_schema(registry.state.db)
    sock = _listen(host, port)
    _log_setup()
    _serve(registry, sockets=[sock])


@command(app, "serve")
def serve_command(
    host: HostOption = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8001,
    registry_token_file: Annotated[
        Path | None,
        typer.Option(
            "--registry-token-file",
            help="Read the registry token from this file (as `berth token bootstrap` writes "
            "it) instead of BERTH_REGISTRY_TOKEN.",
        ),
    ] = None,
) -> None:
    """Run one serving replica alone (configured by BERTH_* variables)."""
    from serving.__main__ import serve
    from serving.auth import InsecureBinding, check_binding
    from serving.config import ServingSettings

    overrides: dict[str, Any] = {}
    if registry_token_file is not None:
        overrides["registry_token_file"] = registry_token_file
    try:
        settings = ServingSettings(**overrides)
        settings.bearer_token()  # an unreadable token file stops here, with its reason
        check_binding(auth=settings.auth, allow_insecure=settings.allow_insecure, host=host)
    except (InsecureBinding, ValueError) as exc:
        raise UserError(str(exc)) from None
    sock = _listen(host, port)
    _log_setup()
    # The same server as `python -m serving`: on SIGTERM not ready first, then drain, exit 0.
    serve(settings, host=host, port=port, sockets=[sock])


@command(db_app, "upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply the database migrations (BERTH_DATABASE_URL; default the data dir's SQLite)."""
    from registry import migrate

    database = _database(migrated=False)
    migrate.upgrade(database, revision)
    stdout().print(f"database at revision {migrate.current_revision(database) or 'base'}")


@command(db_app, "current")
def db_current() -> None:
    """Print the database's migration revision."""
    from registry import migrate

    database = _database(migrated=False)
    current = migrate.current_revision(database)
    head = migrate.head_revision(database)
    note = "" if current == head else f" (this Berth needs {head}: run `berth db upgrade`)"
    stdout().print(f"{current or 'base'}{note}")


def _database(*, migrated: bool = True) -> Any:
    """The database BERTH_DATABASE_URL (or the data dir) names; with `migrated`, only once its
    schema is at this Berth's head, so a forgotten `berth db upgrade` is named as such rather
    than surfacing as a missing table."""
    from registry import migrate
    from registry.config import RegistrySettings
    from registry.db import Database

    settings = RegistrySettings()
    database = Database(settings.effective_database_url, timeout=settings.db_timeout_seconds)
    if migrated:
        migrate.require_head(database)
    return database


# --- publishing and routing ---------------------------------------------------------------------


@command(app, "push")
def push(
    path: Annotated[Path, typer.Argument(help="The artifact file (a joblib-saved estimator).")],
    model: Annotated[str, typer.Option("--model", help="Model name.")],
    sample: Annotated[
        Path | None,
        typer.Option(
            "--sample",
            help="Sample rows (.json, .csv, .npy): records the signature and an example.",
        ),
    ] = None,
    metric: Annotated[
        list[str] | None, typer.Option("--metric", help="KEY=NUMBER, repeatable.")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="KEY=VALUE, repeatable.")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="KEY=VALUE, repeatable.")] = None,
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    flavor: Annotated[
        str | None,
        typer.Option(
            "--flavor",
            help="sklearn (joblib/pickle) or skops. Default: from the file name (.skops: skops).",
            show_default=False,
        ),
    ] = None,
    file: Annotated[
        list[str] | None,
        typer.Option("--file", help="NAME=PATH: another rendition (onnx=model.onnx)."),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Upload a new version, with a progress bar; prints its number and digest."""
    from berth.packaging import readable_file

    # The client checks these too; here they fail before the progress bar starts.
    readable_file(path)
    metrics = {k: _number(v) for k, v in key_values(metric or [], "metric").items()}
    params = {k: _param(v) for k, v in key_values(param or [], "param").items()}
    files = {k: readable_file(Path(v)) for k, v in key_values(file or [], "file").items()}
    rows = read_sample(sample) if sample is not None else None
    started = time.monotonic()
    watching = stderr()
    with (
        connect(url, token) as client,
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=watching,
            # The bar is for watching; the line printed after it is what stays in the scrollback.
            transient=True,
            # Off a terminal nothing watches it, and stopping it would still print a blank line.
            disable=not watching.is_terminal,
        ) as progress,
    ):
        task = progress.add_task(f"{model} ← {path.name}", total=path.stat().st_size)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        version = client.push(
            path,
            model,
            sample=rows,
            metrics=metrics,
            params=params,
            tags=key_values(tag or [], "tag"),
            description=description,
            flavor=flavor,
            files=files,
            progress=advance,
        )
    if json_out:
        emit_json(version)
        return
    seconds = max(time.monotonic() - started, 1e-3)
    sent = sum(f.size for f in version.files)
    stdout().print(
        f"pushed [bold]{version.model}[/] version [bold green]{version.version}[/]  "
        f"({render.size(sent)} in {seconds:.1f} s, {render.size(int(sent / seconds))}/s)  "
        f"sha256 {version.sha256}",
        highlight=False,
    )


@command(app, "models")
def models(
    prefix: Annotated[str | None, typer.Option("--prefix")] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="KEY=VALUE")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """List models."""
    with connect(url, token) as client:
        items = client.models(prefix=prefix, tag=tag)
    emit_json(items) if json_out else show(render.models(items))


@command(app, "versions")
def versions(
    name: Annotated[str, typer.Argument(help="Model name.")],
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """List a model's versions, newest first."""
    with connect(url, token) as client:
        items = client.versions(name)
    emit_json(items) if json_out else show(render.versions(name, items))


@command(app, "show")
def show_command(
    ref: Annotated[
        str,
        typer.Argument(help="NAME, NAME@ALIAS or NAME:VERSION.", metavar="NAME[@ALIAS|:VERSION]"),
    ],
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show a model (with its aliases), an alias (with its rollout) or a version."""
    name, number, alias = parse_ref(ref)
    with connect(url, token) as client:
        if number is not None:
            found = client.version(name, number)
            emit_json(found) if json_out else show(render.version(found))
        elif alias is not None:
            pointer = client.alias(name, alias)
            emit_json(pointer) if json_out else show(render.alias(pointer))
        else:
            model_out = client.model(name)
            aliases = client.aliases(name)
            if json_out:
                data = json.loads(model_out.model_dump_json())
                data["aliases"] = [json.loads(a.model_dump_json()) for a in aliases]
                sys.stdout.write(json.dumps(data, indent=2) + "\n")
            else:
                show(render.model(model_out, aliases))


@command(app, "history")
def history(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: AliasOption = DEFAULT_ALIAS,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Every revision of an alias, newest first."""
    with connect(url, token) as client:
        items = client.history(name, alias)
    emit_json(items) if json_out else show(render.history(name, alias, items))


def _changed(out: Any, what: str, json_out: bool) -> None:
    emit_json(out) if json_out else show(render.changed(out, what))


@command(app, "promote")
def promote(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int, typer.Argument(help="Version to serve.", min=1)],
    alias: AliasOption = DEFAULT_ALIAS,
    reason: ReasonOption = "",
    wait: WaitOption = False,
    timeout: TimeoutOption = 60.0,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Point an alias at one version."""
    with connect(url, token) as client:
        out = client.promote(
            name, version, alias=alias, reason=reason, wait=timeout if wait else None
        )
        _changed(out, "", json_out)


@command(app, "rollback")
def rollback(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: AliasOption = DEFAULT_ALIAS,
    to: Annotated[int | None, typer.Option("--to", help="Restore this revision.", min=1)] = None,
    reason: ReasonOption = "",
    wait: WaitOption = False,
    timeout: TimeoutOption = 60.0,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Restore the alias's previous revision (or --to one) as a new revision."""
    with connect(url, token) as client:
        out = client.rollback(
            name, alias=alias, to_revision=to, reason=reason, wait=timeout if wait else None
        )
        _changed(out, "a rollback", json_out)


@command(app, "split")
def split(
    name: Annotated[str, typer.Argument(help="Model name.")],
    weights: Annotated[
        list[str],
        typer.Argument(help="VERSION=WEIGHT pairs, e.g. 3=90 4=10.", metavar="VERSION=WEIGHT..."),
    ],
    alias: AliasOption = DEFAULT_ALIAS,
    shadow: Annotated[
        list[int] | None,
        typer.Option("--shadow", help="A version that gets a copy of the traffic.", min=1),
    ] = None,
    reason: ReasonOption = "",
    wait: WaitOption = False,
    timeout: TimeoutOption = 60.0,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Split an alias's traffic between versions, sticky by routing key."""
    parsed: dict[int, int] = {}
    for item in weights:
        version, sep, weight = item.partition("=")
        if not sep or not version.isdigit() or not weight.isdigit():
            raise UserError(f"{item!r} is not VERSION=WEIGHT (e.g. 3=90)")
        if int(version) in parsed:
            raise UserError(f"version {version} appears twice")
        parsed[int(version)] = int(weight)
    with connect(url, token) as client:
        out = client.split(
            name,
            parsed,
            alias=alias,
            shadow=shadow or [],
            reason=reason,
            wait=timeout if wait else None,
        )
        _changed(out, "", json_out)


@command(app, "predict")
def predict(
    name: Annotated[str, typer.Argument(help="Model name.")],
    input_: Annotated[
        str,
        typer.Option("--input", "-i", help="JSON rows or a request body, or @FILE (@- for stdin)."),
    ],
    version: Annotated[
        int | None, typer.Option("--version", "-v", help="A pinned version.", min=1)
    ] = None,
    alias: Annotated[
        str | None, typer.Option("--alias", "-a", help="An alias (default: the serving default).")
    ] = None,
    key: Annotated[
        str | None, typer.Option("--key", help="Routing key: keeps an A/B split sticky.")
    ] = None,
    output: Annotated[
        list[str] | None,
        typer.Option("--output", help="Also answer with this method (predict_proba), repeatable."),
    ] = None,
    serving_url: Annotated[
        str | None,
        typer.Option("--serving-url", help="Serving (BERTH_SERVING_URL; default --url)."),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Predict with a pinned version, an alias, or the default alias."""
    if version is not None and alias is not None:
        raise UserError("give --version or --alias, not both")
    body = read_json_argument(input_, "--input")
    if not isinstance(body, list | dict):
        raise UserError("--input must be a JSON array of rows or a JSON object (a request body)")
    outputs = ["predict", *output] if output else None
    with connect(url, token, serving_url=serving_url) as client:
        answer = client.predict(
            name, body, version=version, alias=alias, routing_key=key, outputs=outputs
        )
    emit_json(answer) if json_out else show(render.prediction(answer))


# --- operations ---------------------------------------------------------------------------------


@command(app, "gc")
def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report, delete nothing.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Delete artifacts no version references (after the registry's grace period)."""
    with connect(url, token) as client:
        report = client.gc(dry_run=dry_run)
    emit_json(report) if json_out else show(render.gc(report, dry_run=dry_run))


@command(app, "doctor")
def doctor(
    url: UrlOption = None,
    token: TokenOption = None,
    serving_url: Annotated[str | None, typer.Option("--serving-url")] = None,
    json_out: JsonOption = False,
) -> None:
    """Print the resolved configuration and check what Berth depends on."""
    from berth import doctor as checks

    report = checks.diagnose(url=url, token=token, serving_url=serving_url)
    if json_out:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
    else:
        show(checks.render(report))
    if not report.healthy:
        raise typer.Exit(1)


# --- tokens -------------------------------------------------------------------------------------

DatabaseOption = Annotated[
    bool,
    typer.Option(
        "--database",
        help="Work straight on the database (BERTH_DATABASE_URL), not through the API: how the "
        "first token of a new installation is made.",
    ),
]


@command(token_app, "create")
def token_create(
    name: Annotated[str, typer.Argument(help="A name for the token (who or what uses it).")],
    role: Annotated[Role, typer.Option("--role", help="reader < publisher < admin.")] = Role.reader,
    model: Annotated[
        list[str] | None, typer.Option("--model", help="Restrict to this model, repeatable.")
    ] = None,
    database: DatabaseOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create a token; its secret is printed once."""
    import re

    if not re.fullmatch(NAME_PATTERN, name):
        raise UserError(f"token name {name!r} must match {NAME_PATTERN}")
    if database:
        from registry import auth
        from registry.presenters import token_out
        from registry.schemas import TokenCreate, TokenCreated

        with _database().transaction() as session:
            row, secret = auth.create_token(
                session, TokenCreate(name=name, role=role, models=model), created_by="cli:database"
            )
            created = TokenCreated(**token_out(row).model_dump(), token=secret)
    else:
        with connect(url, token) as client:
            created = client.create_token(name, role=role, models=model)
    if json_out:
        emit_json(created)
        return
    stdout().print(
        f"token {created.id} '{created.name}' ({created.role.value}); "
        "the secret is shown this once:",
        highlight=False,
    )
    sys.stdout.write(created.token + "\n")


@command(token_app, "list")
def token_list(
    database: DatabaseOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """List tokens (never their secrets)."""
    if database:
        from registry import auth
        from registry.presenters import token_out

        with _database().transaction(write=False) as session:
            items = [token_out(t) for t in auth.list_tokens(session)]
    else:
        with connect(url, token) as client:
            items = client.tokens()
    emit_json(items) if json_out else show(render.tokens(items))


@command(token_app, "revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="The token's id (`berth token list`).", min=1)],
    database: DatabaseOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Revoke a token: it stops working at once."""
    if database:
        from registry import auth
        from registry.presenters import token_out

        with _database().transaction() as session:
            revoked = token_out(auth.revoke_token(session, token_id, actor="cli:database"))
    else:
        with connect(url, token) as client:
            revoked = client.revoke_token(token_id)
    if json_out:
        emit_json(revoked)
    else:
        stdout().print(f"token {revoked.id} '{revoked.name}' revoked", highlight=False)


@command(token_app, "bootstrap")
def token_bootstrap(
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Where to write the token files (default: the data dir)."),
    ] = None,
) -> None:
    """Straight on the database: the first admin token (only while none exists) and a serving
    reader token, each in a 0600 file (`admin-token`, `serving-token`)."""
    from berth.tokens import bootstrap

    target = directory or ClientSettings().data_dir
    result = bootstrap(_database(), target)
    state = "created" if result.admin_created else "not created (tokens exist already)"
    stdout().print(f"admin token {state}: {result.admin_path}", highlight=False)
    stdout().print(f"serving token: {result.serving_path}", highlight=False)


# --- the demo -----------------------------------------------------------------------------------


@command(app, "demo")
def demo(
    model: Annotated[str, typer.Option("--model", help="Model name to use.")] = "demo-iris",
    alias: AliasOption = DEFAULT_ALIAS,
    timeout: TimeoutOption = 60.0,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Tell the whole story against a running Berth (start one with `berth up`)."""
    from berth import demo as story

    console = stdout()
    with connect(url, token) as client:
        console.print(f"Berth demo against {client.url}", style="bold", highlight=False)
        story.run(
            client,
            lambda r: console.print(r, highlight=False),
            model=model,
            alias=alias,
            wait=timeout,
        )
    console.print(
        "\nDone: pushed, promoted, hot-swapped, split, rolled back and pinned.", style="bold green"
    )


def main() -> None:
    """The `berth` console script."""
    app()


if __name__ == "__main__":
    main()
