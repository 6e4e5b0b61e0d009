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
