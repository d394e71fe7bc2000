"""Field types shared by request bodies."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

PG_INT_MAX = 2**31 - 1  # seq columns are INTEGER; a bigger number is a 422, never a database error


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refusing it here keeps it a 422 instead of a failed write.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


NoNul = AfterValidator(_no_nul)
NotBlank = AfterValidator(_not_blank)

SafeStr = Annotated[str, NoNul]
