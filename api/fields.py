"""Field types shared by request bodies: each rule validates and states itself in the OpenAPI schema."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

PG_INT_MAX = 2**31 - 1  # seq columns are INTEGER; a bigger number is a 422, never a database error


@dataclass(frozen=True)
class _Rule:
    """A check on a string that the JSON schema states as a pattern (so clients and schema-driven
    tests see it), while the error message comes from Python."""

    check: Callable[[str], str]
    pattern: str

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["pattern"] = self.pattern
        return json_schema


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refusing it here keeps it a 422 instead of a failed write.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# Invisible, yet neither white space nor a format character (category Cf): Hangul fillers, the
# combining grapheme joiner, variation selectors, Khmer inherent vowels, Mongolian free variation
# selectors (from Unicode's Default_Ignorable_Code_Point list).
_INVISIBLE = frozenset(
    "\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180e\u180f\u3164\uffa0"
    + "".join(map(chr, range(0xFE00, 0xFE10)))
    + "".join(map(chr, range(0xE0100, 0xE01F0)))
)


def _invisible(char: str) -> bool:
    return char.isspace() or unicodedata.category(char) in ("Cf", "Cc") or char in _INVISIBLE


def is_blank(value: str) -> bool:
    """Nothing a reader would see: white space, format characters (zero width space, joiners, the
    word joiner, a BOM, the soft hyphen, direction marks), controls and other invisible fillers."""
    return all(_invisible(char) for char in value)


def _text(value: str) -> str:
    if is_blank(value):
        raise ValueError("must not be blank (white space and invisible characters alone are blank)")
    return _no_nul(value)


NoNul = _Rule(_no_nul, r"^[^\x00]*$")


def _printable(value: str) -> str:
    # Ids other systems hand over (an app's user ids): no controls, separators or format characters.
    if not value.isprintable():
        raise ValueError("must be printable characters only")
    return value


# The pattern names the controls; the check knows every character Python calls not printable.
Printable = _Rule(_printable, r"^[^\x00-\x1f\x7f-\x9f]*$")

# Something visible (not only white space and invisible characters, `is_blank`), and no NUL. The
# pattern names the common invisible characters; the check knows them all.
_VISIBLE = (
    r"[^\s\x00-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u180e\u200b-\u200f\u202a-\u202e"
    r"\u2060-\u2064\u2066-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]"
)
NotBlankNoNul = _Rule(_text, rf"^[^\x00]*{_VISIBLE}[^\x00]*$")


def _integral(value: object) -> object:
    # JSON does not tell 12 from 12.0; a bool or a string is not a number, though.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool | str):
        raise ValueError("must be an integer")
    return value


Seq = Annotated[int, BeforeValidator(_integral), Field(ge=0, le=PG_INT_MAX, strict=True)]
