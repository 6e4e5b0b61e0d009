"""How the CLI shows the API's answers to people: Rich tables and short summaries.

Scripts use `--json` instead, which prints the wire models unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from berth.client import Prediction
from registry.schemas import (
    AliasOut,
    AliasRevisionOut,
    GcReport,
    ModelOut,
    TokenOut,
    Variant,
    VersionOut,
)


def when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def size(value: int) -> str:
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{value} B"


def spec(variants: Sequence[Variant], shadow: Sequence[int]) -> str:
    """`v3`, or `v3 90% · v4 10%`, plus `shadow v5` — how an alias routes, in one line."""
    if not variants:
        return "(deleted)"
    total = sum(v.weight for v in variants) or 1
    if len(variants) == 1:
        text = f"v{variants[0].version}"
    else:
        text = " · ".join(f"v{v.version} {100 * v.weight / total:g}%" for v in variants)
    if shadow:
        text += "  shadow " + ", ".join(f"v{v}" for v in shadow)
    return text


def pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "-"


def models(items: Sequence[ModelOut]) -> RenderableType:
    table = Table("model", "latest", "description", "tags", "updated", title="models")
    for m in items:
        table.add_row(
            m.name,
            str(m.latest_version or "-"),
            m.description or "-",
            pairs(m.tags),
            when(m.updated_at),
        )
    return table


def versions(name: str, items: Sequence[VersionOut]) -> RenderableType:
    table = Table("version", "status", "sha256", "size", "metrics", "created", "by", title=name)
    for v in items:
        table.add_row(
            str(v.version),
            v.status.value,
            v.sha256[:12],
            size(v.size),
            pairs(v.metrics),
            when(v.created_at),
            v.created_by,
        )
    return table


def _fields(rows: Sequence[tuple[str, str]], title: str) -> Table:
    table = Table.grid(padding=(0, 2))
    table.title = title
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    return table


def version(v: VersionOut) -> RenderableType:
    signature = "-"
    if v.signature is not None:
        named = " (named)" if v.signature.named else ""
        signature = f"{len(v.signature.inputs)} inputs{named}: " + ", ".join(
            f"{f.name}:{f.dtype.value}" for f in v.signature.inputs[:8]
        )
        if len(v.signature.inputs) > 8:
            signature += ", ..."
    example = "-"
    if v.example is not None:
        example = f"{len(v.example.inputs)} rows; outputs {', '.join(v.example.outputs)}"
    rows = [
        ("model", v.model),
        ("version", str(v.version)),
        ("status", v.status.value),
        ("flavor", v.flavor),
        ("sha256", v.sha256),
        ("size", size(v.size)),
        ("files", ", ".join(f"{f.name} ({size(f.size)})" for f in v.files)),
        ("signature", signature),
        ("example", example),
        ("metrics", pairs(v.metrics)),
        ("params", pairs(v.params)),
        ("tags", pairs(v.tags)),
        ("description", v.description or "-"),
        ("environment", pairs(dict(v.lineage.environment)) if v.lineage else "-"),
        ("created", f"{when(v.created_at)} by {v.created_by}"),
    ]
    if v.archived_at is not None:
        rows.append(("archived", when(v.archived_at)))
    return _fields(rows, f"{v.model}:{v.version}")


def alias(a: AliasOut) -> RenderableType:
    rows = [
        ("model", a.model),
        ("alias", a.alias),
        ("revision", str(a.revision)),
        ("serves", spec(a.variants, a.shadow)),
        ("reason", a.reason or "-"),
        ("updated", f"{when(a.updated_at)} by {a.updated_by}"),
    ]
    if a.rollout is not None:
        done = sum(1 for r in a.rollout.replicas if (r.revision or 0) >= a.rollout.revision)
        rows.append(("rollout", f"{done}/{len(a.rollout.replicas)} live replicas serve it"))
    return _fields(rows, f"{a.model}@{a.alias}")


def model(m: ModelOut, aliases: Sequence[AliasOut]) -> RenderableType:
    rows = [
        ("model", m.name),
        ("latest version", str(m.latest_version or "-")),
        ("description", m.description or "-"),
        ("tags", pairs(m.tags)),
        ("created", f"{when(m.created_at)} by {m.created_by}"),
    ]
    for a in aliases:
        rows.append((f"@{a.alias}", f"{spec(a.variants, a.shadow)}  (revision {a.revision})"))
    return _fields(rows, m.name)


def history(name: str, alias_name: str, items: Sequence[AliasRevisionOut]) -> RenderableType:
    table = Table("rev", "action", "serves", "reason", "by", "at", title=f"{name}@{alias_name}")
    for r in items:
        action = r.action.value
        if r.restored_revision is not None:
            action += f" to {r.restored_revision}"
        table.add_row(
            str(r.revision),
            action,
            spec(r.variants, r.shadow),
            r.reason or "-",
            r.created_by,
            when(r.created_at),
        )
    return table


def changed(a: AliasOut, what: str = "") -> RenderableType:
    """One line for a promote, split or rollback; a second when the rollout was awaited."""
    line = Text.assemble(
        (f"{a.model}@{a.alias}", "bold"),
        " → ",
        (spec(a.variants, a.shadow), "bold green"),
        f"  (revision {a.revision}{', ' + what if what else ''})",
    )
    if a.rollout is None:
        return line
    count = len(a.rollout.replicas)
    return Group(line, Text(f"rolled out: every live serving replica ({count}) serves it"))


def prediction(p: Prediction) -> RenderableType:
    via = f" via @{p.alias}" if p.alias else ""
    lines: list[RenderableType] = [Text.assemble((p.model, "bold"), f" v{p.version}{via}")]
    if p.predictions is not None:
        lines.append(Text(f"predictions: {p.predictions}"))
    for key, value in p.outputs.items():
        lines.append(Text(f"{key}: {value}"))
    return Group(*lines)


def tokens(items: Sequence[TokenOut]) -> RenderableType:
    table = Table("id", "name", "role", "models", "created", "last used", "revoked", title="tokens")
    for t in items:
        table.add_row(
            str(t.id),
            t.name,
            t.role.value,
            ", ".join(t.models) if t.models is not None else "all",
            f"{when(t.created_at)} by {t.created_by}",
            when(t.last_used_at),
            when(t.revoked_at),
        )
    return table


def gc(report: GcReport, *, dry_run: bool) -> RenderableType:
    verb = "would delete" if dry_run else "deleted"
    return Text(
        f"{verb} {report.deleted_blobs} unreferenced artifacts ({size(report.freed_bytes)}), "
        f"aborted {report.aborted_uploads} stale uploads; kept {report.kept_referenced} "
        f"referenced and {report.kept_young} younger than the grace period"
    )
