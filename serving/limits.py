"""Bounds on a predict body's JSON beyond its size: how deep it nests, how long its arrays are.

`json.loads` already refuses nesting past the interpreter's recursion limit; these bounds are far
tighter and name the problem. A predict body is at most an object of rows of values (four levels
with `dataframe_split`), so anything much deeper or longer is a mistake or an attack. The walk
only visits containers: a body of rows costs one step per row plus a scan of each row.

Given the text the value was parsed from, most bodies skip the walk: JSON nests no deeper than
it has brackets, and an array or object of n items takes at least 2n + 1 bytes. A one-row
predict body has three brackets; counting them costs a tenth of walking it.
"""

from __future__ import annotations

from typing import Any, Final

from serving.errors import MalformedBody, PayloadTooLarge

MAX_DEPTH: Final = 16
MAX_ITEMS: Final = 1_000_000
"""The most items in any one JSON array or object (a million rows, or features per row)."""


def check_json(
    value: Any,
    *,
    text: bytes | None = None,
    max_depth: int = MAX_DEPTH,
    max_items: int = MAX_ITEMS,
) -> None:
    """Raise `MalformedBody` past `max_depth` levels, `PayloadTooLarge` past `max_items`.

    `text`: the JSON `value` was parsed from, in any encoding `json.loads` reads (UTF-16 and
    UTF-32 only make the byte counts larger, never smaller, so the shortcut stays sound).
    """
    if (
        text is not None
        and len(text) <= 2 * max_items
        and text.count(b"[") + text.count(b"{") <= max_depth
    ):
        return
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
