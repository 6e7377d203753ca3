"""The JSONPath subset meters read an event's data with: safe (no filters, no wildcards, no
recursion, no scripts), bounded, evaluated in a loop over at most MAX_STEPS steps.

    $.a.b        member `a`, then member `b` (names: [A-Za-z_][A-Za-z0-9_-]*)
    $['k']       member `k` (any characters but the quote and backslash; "…" too)
    $.a[0]       element 0 of the array `a` (0 … 9999)

`$` alone is the whole data object. Anything else is refused with the position that is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from opsmantik.errors import UsageError

MAX_PATH_CHARS = 256
MAX_STEPS = 16
_NAME = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)")
_QUOTED = re.compile(r"\[(?:'([^'\\]*)'|\"([^\"\\]*)\")\]")
_INDEX = re.compile(r"\[(0|[1-9][0-9]{0,3})\]")

Step = str | int  # a member name or an array index


class BadPath(UsageError, ValueError):
    """A JSONPath outside the subset; the message says where."""


MISSING = object()  # what `read` returns when the path leads nowhere


@dataclass(frozen=True)
class JsonPath:
    text: str
    steps: tuple[Step, ...]

    def read(self, data: object) -> object:
        """The value at the path, or MISSING (a step into a non-object, a missing key, an index
        past the end)."""
        node = data
        for step in self.steps:
            if isinstance(step, str):
                if not isinstance(node, dict) or step not in node:
                    return MISSING
                node = node[step]
            else:
                if not isinstance(node, list) or step >= len(node):
                    return MISSING
                node = node[step]
        return node


def parse(text: str) -> JsonPath:
    if not isinstance(text, str) or not text.startswith("$"):
        raise BadPath("a JSONPath starts with `$`")
    if len(text) > MAX_PATH_CHARS:
        raise BadPath(f"at most {MAX_PATH_CHARS} characters")
    steps: list[Step] = []
    pos = 1
    while pos < len(text):
        if len(steps) == MAX_STEPS:
            raise BadPath(f"at most {MAX_STEPS} steps")
        if m := _NAME.match(text, pos):
            steps.append(m[1])
        elif m := _QUOTED.match(text, pos):
            steps.append(m[1] if m[1] is not None else m[2])
        elif m := _INDEX.match(text, pos):
            steps.append(int(m[1]))
        else:
            raise BadPath(
                f"unsupported syntax at character {pos + 1} ({text[pos : pos + 12]!r}): "
                "use .name, ['key'] or [index]"
            )
        pos = m.end()
    return JsonPath(text, tuple(steps))
