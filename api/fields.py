"""Field types shared by request bodies: each rule validates and states itself in the OpenAPI schema."""

from __future__ import annotations

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


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return _no_nul(value)


NoNul = _Rule(_no_nul, r"^[^\x00]*$")
# Something besides white space, and no NUL.
NotBlankNoNul = _Rule(_text, r"^[^\x00]*[^\s\x00][^\x00]*$")


def _integral(value: object) -> object:
    # JSON does not tell 12 from 12.0; a bool or a string is not a number, though.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool | str):
        raise ValueError("must be an integer")
    return value


Seq = Annotated[int, BeforeValidator(_integral), Field(ge=0, le=PG_INT_MAX, strict=True)]
