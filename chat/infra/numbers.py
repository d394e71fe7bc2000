"""The one strict reading of a whole number that arrives as text in a URL (a query parameter, a
signed URL's expiry, a cursor field).

`int()` is far too lenient for that: it takes `٣` and other Unicode digits, `+5`, ` 5 `, `1_000`,
and raises on thousands of digits after spending time on them; `str.isdigit()` even takes `²`,
which `int()` then refuses. Here only ASCII digits count, and only a bounded number of them.
"""

from __future__ import annotations

import re

MAX_DIGITS = 18  # below 2**63: any such number fits every integer column and Redis

_DIGITS = re.compile(r"[0-9]+")


def parse_int(text: str, *, max_digits: int = MAX_DIGITS, negative: bool = False) -> int:
    """`text` as an integer: ASCII digits only (a leading `-` when `negative`), at most
    `max_digits` of them; ValueError for anything else."""
    digits = text[1:] if negative and text.startswith("-") else text
    if not 0 < len(digits) <= max_digits or not text.isascii() or not _DIGITS.fullmatch(digits):
        raise ValueError("not a whole number")
    return int(text)
