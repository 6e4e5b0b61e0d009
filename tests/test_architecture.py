"""The dependency direction of ARCHITECTURE.md, checked on the import graph."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imports_of(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def test_registry_never_imports_serving_or_the_client() -> None:
    offenders = {
        path: sorted(n for n in names if n.split(".")[0] in {"serving", "berth"})
        for path, names in imports_of("registry").items()
    }
    assert {p: n for p, n in offenders.items() if n} == {}


def test_serving_uses_only_the_registry_wire_contract() -> None:
    if not (ROOT / "serving").is_dir():
        return
    offenders = {
        path: sorted(n for n in names if n.startswith("registry") and n != "registry.schemas")
        for path, names in imports_of("serving").items()
    }
    assert {p: n for p, n in offenders.items() if n} == {}


# The client side of berth/ speaks HTTP and the wire contract only. The composition (`berth up`),
# the database commands (`db upgrade`, `token --database`) and `doctor`'s local checks are the
# operator's tools and may reach into the services, but never their repositories or ORM models.
BERTH_CLIENT_SIDE = {
    "berth/client.py",
    "berth/errors.py",
    "berth/packaging.py",
    "berth/upload.py",
    "berth/config.py",
    "berth/render.py",
    "berth/demo.py",
    "berth/__init__.py",
}


def test_the_client_uses_only_the_wire_contract() -> None:
    found = imports_of("berth")
    assert set(found) >= BERTH_CLIENT_SIDE
    offenders = {
        path: sorted(
            n
            for n in names
            if n.split(".")[0] in {"registry", "serving"} and n != "registry.schemas"
        )
        for path, names in found.items()
        if path in BERTH_CLIENT_SIDE
    }
    assert {p: n for p, n in offenders.items() if n} == {}


def test_berth_never_imports_repositories_or_orm_models() -> None:
    forbidden = {"registry.repository", "registry.models", "registry.service"}
    offenders = {path: sorted(names & forbidden) for path, names in imports_of("berth").items()}
    assert {p: n for p, n in offenders.items() if n} == {}
