"""Bounds on a predict body's JSON beyond its size: how deep it nests, how long its arrays are.

`json.loads` already refuses nesting past the interpreter's recursion limit; these bounds are far
tighter and name the problem. A predict body is at most an object of rows of values (four levels
with `dataframe_split`), so anything much deeper or longer is a mistake or an attack. The walk
only visits containers: a body of rows costs one step per row plus a scan of each row.
"""

from __future__ import annotations

from typing import Any, Final

from serving.errors import MalformedBody, PayloadTooLarge

MAX_DEPTH: Final = 16
MAX_ITEMS: Final = 1_000_000
"""The most items in any one JSON array or object (a million rows, or features per row)."""


def check_json(value: Any, *, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS) -> None:
    """Raise `MalformedBody` past `max_depth` levels, `PayloadTooLarge` past `max_items`."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if type(node) is dict:
            children: Any = node.values()
        elif type(node) is list:
            children = node
        else:
            continue
        if depth > max_depth:
            raise MalformedBody(
                f"the body nests deeper than {max_depth} levels", detail={"max_depth": max_depth}
            )
        if len(children) > max_items:
            raise PayloadTooLarge(
                f"a JSON array or object in the body has {len(children)} items; the limit is "
                f"{max_items}",
                detail={"max_items": max_items},
            )
        for child in children:
            kind = type(child)
            if kind is list or kind is dict:
                stack.append((child, depth + 1))
