"""Hostile inputs for the fuzz suite (`tests/api/test_fuzz.py`): text and JSON values, bodies, forged
cursors, signed-URL parameters and bearer tokens, and the api's operations as its own OpenAPI
document lists them, so that a new route is fuzzed without anyone listing it here.

Every value here is something a client can send: nothing in it knows what a route accepts beyond
what the document says, so an answer that is a 5xx, or a 4xx that is not a problem, is a defect.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from falcon.testing import Result
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st


class Raw(str):
    """JSON text put into a body as it is: what `json.dumps` will not write (`1e400`, a lone
    surrogate escape, a nesting deeper than any parser allows)."""


# Each example makes one request per operation of the api over real Postgres and Redis: a few dozen
# examples per test keep the file well under half a minute. Derandomized and without a database, so
# CI runs the same examples every time. No shrinking: an example's failure message already lists
# each offending request in full, and shrinking an example of fifty requests takes minutes.
# FUZZ_EXAMPLES=500 makes a deeper run (still the same examples each time for the same number).
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "20")),
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    phases=(Phase.explicit, Phase.generate),
    # The api and its users are set up once per test, not once per example: that is the point.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

ZERO_UUID = "00000000-0000-0000-0000-000000000000"
SOME_UUID = "00000000-0000-4000-8000-000000000000"

# Text a client may put anywhere a string goes: Unicode digits that `str.isdigit()` and `int()`
# take, NUL, bidi and zero-width characters, numbers of every wrong shape, path tricks, and sizes.
HOSTILE_TEXT: tuple[str, ...] = (
    "",
    " ",
    "\t",
    "\n",
    "\u00b2",  # superscript two: isdigit(), but int() refuses it
    "\u0663",  # Arabic-Indic three: int() takes it
    "\u0663\u0663\u0663",
    "\uff11\uff12",  # fullwidth digits
    "\x00",
    "a\x00b",
    "\u202eevil",  # right-to-left override
    "\u200f",  # right-to-left mark
    "\u200b",  # zero-width space
    "\u200b\u200c\u200d",
    "\u2060",  # word joiner
    "\ufeff",  # byte order mark
    "\u3164",  # Hangul filler: looks blank, is not whitespace
    "\U0001f44d",
    "\U0001f44d\ufe0f\u200d",
    "e\u0301",
    "-1",
    "-0",
    "0",
    "2147483648",
    "9223372036854775808",
    "-9223372036854775809",
    "9" * 400,
    "1e309",
    "1e-400",
    "0.5",
    "NaN",
    "nan",
    "Infinity",
    "-Infinity",
    "inf",
    "+5",
    " 5",
    "5\n",
    "1_000",
    "0x10",
    ".",
    "..",
    "...",
    "/",
    "\\",
    "%",
    "%00",
    "'",
    '"',
    "' OR '1'='1",
    "<script>alert(1)</script>",
    "{}",
    "[]",
    "null",
    "true",
    "\r\nX-Injected: 1",
    ZERO_UUID,
    SOME_UUID,
    SOME_UUID.upper(),
    "{" + SOME_UUID + "}",
    "urn:uuid:" + SOME_UUID,
    SOME_UUID.replace("-", ""),
    SOME_UUID.replace("0", "\u0660"),  # uuid.UUID() takes Arabic-Indic zeros
    SOME_UUID + "\x00",
    "x" * 300,
    "\u00e9" * 2000,
    "a" * 5000,
)

# Percent-escapes put into a URL as they are: bytes that are not UTF-8, an overlong `/`, a
# surrogate's bytes, a truncated or invalid escape.
RAW_ESCAPES: tuple[str, ...] = ("%ff", "%ED%A0%80", "%C0%AF", "%2e%2e", "%2F", "%", "%zz", "%00", "%E2%80%AE")


def hostile_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(HOSTILE_TEXT),
        st.text(st.characters(codec="utf-8"), max_size=24),
        st.integers().map(str),
        st.floats().map(repr),
    )


def url_value() -> st.SearchStrategy[str]:
    """A path segment or query value as it goes into the URL (already escaped)."""
    return st.one_of(hostile_text().map(lambda s: quote(s, safe="")), st.sampled_from(RAW_ESCAPES))


# JSON values of every wrong type and every troublesome size.
HOSTILE_JSON: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    1.5,
    -0.0,
    2**31,
    2**63,
    -(2**63) - 1,
    10**30,
    Raw("1e400"),
    Raw("-1e400"),
    Raw("1E-400"),
    Raw("NaN"),
    Raw("Infinity"),
    Raw("-Infinity"),
    Raw("1.0"),
    Raw("1" + "0" * 5000),
    Raw('"\\ud800"'),  # a lone surrogate: valid JSON, not a Unicode string
    Raw('"\\udc00x"'),
    Raw('"a\\ud800\\ud800b"'),
    Raw('"\\u0000"'),
    "",
    " ",
    "\x00",
    "\u00b2",
    "\u0663",
    "\u200b",
    "\u200b\u2060\ufeff",
    "\u3164",
    "\u202eevil",
    ".",
    "..",
    "a" * 4001,
    "a" * 70_000,  # over the 64 KiB body limit on its own
    [],
    {},
    [None],
    {"": None},
    [[[[[]]]]],
    Raw("[" * 5000 + "]" * 5000),
    Raw('{"a":' * 3000 + "1" + "}" * 3000),
)


def hostile_json() -> st.SearchStrategy[Any]:
    leaves = st.one_of(
        st.sampled_from(HOSTILE_JSON),
        st.integers(),
        st.floats(),
        st.text(max_size=20),
        st.booleans(),
        st.none(),
    )
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)
        ),
        max_leaves=6,
    )


def dump(value: Any, *, ascii_only: bool = True) -> str:
    """JSON text of `value`, with `Raw` pieces as they are."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        items = (
            f"{json.dumps(str(k), ensure_ascii=ascii_only)}:{dump(v, ascii_only=ascii_only)}"
            for k, v in value.items()
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dump(v, ascii_only=ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def encode(value: Any, *, ascii_only: bool = True) -> bytes:
    # Unescaped, a lone surrogate becomes the three bytes of no valid UTF-8 (as a careless client's
    # CESU-8 would send them).
    return dump(value, ascii_only=ascii_only).encode("utf-8", "surrogatepass")


# Whole bodies no object schema describes.
RAW_BODIES: tuple[bytes, ...] = (
    b"",
    b" ",
    b"null",
    b"[]",
    b'"x"',
    b"1",
    b"NaN",
    b"{",
    b'{"a":}',
    b"\xff\xfe{\x00}",
    b"\xef\xbb\xbf{}",  # a byte order mark before the object
    b'{"a":1}{"b":2}',
    b"{}" + b" " * 70_000,
    b"[" * 100_000,
    b'{"a":' * 10_000,
    ("[" * 2000 + "]" * 2000).encode(),
)

CONTENT_TYPES: tuple[str, ...] = (
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=latin-1",
    "application/merge-patch+json",
    "APPLICATION/JSON",
    "application/x-www-form-urlencoded",
    "text/plain",
    "multipart/form-data; boundary=x",
    "application/json;;;",
    "",
)


# -- the api's operations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """One method on one path of the OpenAPI document, with what it says the request holds."""

    method: str
    template: str
    path_params: tuple[str, ...]
    query_params: tuple[str, ...]
    body: Mapping[str, Any] | None  # the JSON body's object schema, $refs resolved
    media: tuple[str, ...]
    auth: bool

    def path(self, values: Mapping[str, str]) -> str:
        """The path with each parameter replaced by its (already escaped) value."""
        return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], self.template)

    def __str__(self) -> str:
        return f"{self.method} {self.template}"


def _resolve(document: Mapping[str, Any], schema: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[1]
        resolved: Mapping[str, Any] = document["components"]["schemas"][name]
        return resolved
    return schema


def operations(document: Mapping[str, Any]) -> list[Operation]:
    found = []
    for template, item in document["paths"].items():
        for method, op in item.items():
            if method not in {"get", "put", "post", "patch", "delete"}:
                continue
            params = [*item.get("parameters", []), *op.get("parameters", [])]
            content = op.get("requestBody", {}).get("content", {})
            schema = content.get("application/json", {}).get("schema")
            found.append(
                Operation(
                    method=method.upper(),
                    template=template,
                    path_params=tuple(p["name"] for p in params if p["in"] == "path"),
                    query_params=tuple(p["name"] for p in params if p["in"] == "query"),
                    body=_resolve(document, schema) if schema else None,
                    media=tuple(content),
                    auth=bool(op.get("security", document.get("security"))),
                )
            )
    return found


def plausible(name: str, schema: Mapping[str, Any], known: Mapping[str, Any]) -> Any:
    """A value a field could well hold: the caller's own for the fields it knows, else by type."""
    if name in known:
        return known[name]
    for option in schema.get("anyOf", []):
        if option.get("type") != "null":
            schema = option
            break
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "integer":
        return schema.get("minimum", 1)
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return True
    if kind == "array":
        item = schema.get("items", {})
        return [plausible(name, item, {})] if schema.get("minItems") else []
    if kind == "object":
        return {}
    if schema.get("format") == "uuid":
        return SOME_UUID
    return "x" * max(1, int(schema.get("minLength", 1)))


# -- answers ---------------------------------------------------------------------------------------


def fault(result: Result) -> str | None:
    """What is wrong with an answer by the contract's rules for every answer, or None.

    A 5xx is a bug whatever the input (503 included: the tests' Postgres and Redis are up), and a
    4xx is a problem document with at least `title`, `status` and `detail`.
    """
    status = result.status_code
    if status >= 500:
        return f"{status}: {result.text[:500]}"
    if status < 400:
        return None
    content_type = result.headers.get("content-type", "")
    if not content_type.startswith("application/problem+json"):
        return f"{status} with Content-Type {content_type!r}: {result.text[:300]}"
    try:
        body = json.loads(result.text)
    except ValueError:
        return f"{status} with a body that is not JSON: {result.text[:300]}"
    if not isinstance(body, dict) or body.get("status") != status:
        return f"{status} with a problem whose status disagrees: {result.text[:300]}"
    if not body.get("title") or not body.get("detail"):
        return f"{status} with a problem lacking title or detail: {result.text[:300]}"
    return None


def excerpt(data: bytes | None, limit: int = 300) -> str:
    if data is None:
        return "-"
    shown = repr(data[:limit])
    return shown + (f"... ({len(data)} bytes)" if len(data) > limit else "")


# -- cursors ---------------------------------------------------------------------------------------


def b64(raw: bytes | str) -> str:
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


CURSOR_FIELDS: tuple[str, ...] = (
    "0001-01-01T00:00:00+14:00",  # overflows on its way to UTC
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00+23:59",
    "2024-01-01T00:00:00",
    "2024-01-01T00:00:00+00:00",
    "\uff12\uff10\uff12\uff14-01-01T00:00:00+00:00",
    SOME_UUID,
    SOME_UUID.replace("0", "\u0660"),
    "not-a-uuid",
    "inf",
    "-inf",
    "nan",
    "NaN",
    "1e999",
    "1e300",
    "-1",
    "0.5",
    "9" * 400,
    "\u0660.\u0665",
    "\x00",
    "",
    "\u00e9",
)

FORGED_CURSORS: tuple[str, ...] = (
    "!!!",
    "a",
    "====",
    "%00",
    "A" * 5000,
    b64(b"\xff\xfe\x00|\x80"),
    b64(b"\xed\xa0\x80|\xed\xa0\x80"),
    b64(uuid.uuid4().bytes * 3),  # well-formed base64 of garbage
    b64("|"),
    b64("||"),
    b64("|||"),
    b64("a|b|c|d|e"),
    b64("\x00"),
    b64(f"0001-01-01T00:00:00+14:00|{SOME_UUID}"),
    b64(f"9999-12-31T23:59:59-14:00|{SOME_UUID}"),
    b64(f"2024-01-01T00:00:00|{SOME_UUID}"),
    b64(f"2024-01-01T00:00:00+00:00|{SOME_UUID.replace('0', chr(0x660))}"),
    b64(f"inf|2024-01-01T00:00:00+00:00|{SOME_UUID}"),
    b64(f"-inf|2024-01-01T00:00:00+00:00|{SOME_UUID}"),
    b64(f"nan|2024-01-01T00:00:00+00:00|{SOME_UUID}"),
    b64(f"1e999|2024-01-01T00:00:00+00:00|{SOME_UUID}"),
    b64(f"{'9' * 400}|2024-01-01T00:00:00+00:00|{SOME_UUID}"),
    b64(f"0.5|0001-01-01T00:00:00+14:00|{SOME_UUID}"),
    b64(f"-1|2024-01-01T00:00:00+00:00|{SOME_UUID}"),
    b64("\u00b2"),
    b64("9" * 400),
    b64(f"{SOME_UUID}|{SOME_UUID}"),
)


def forged_cursor() -> st.SearchStrategy[str]:
    """A cursor of one to four fields, each a hostile field or hostile text, base64url-encoded."""
    fields = st.one_of(st.sampled_from(CURSOR_FIELDS), hostile_text())
    assembled = st.lists(fields, min_size=1, max_size=4).map(lambda parts: b64("|".join(parts)))
    return st.one_of(st.sampled_from(FORGED_CURSORS), assembled)


# -- signed URLs -----------------------------------------------------------------------------------

EXPIRIES: tuple[str, ...] = (
    "\u00b2",
    "\u0663",
    "\u0663" * 10,
    "",
    "-1",
    "0",
    "00",
    "1e9",
    "1e309",
    "9" * 12,
    "9" * 13,
    "9" * 400,
    "+5",
    " 5",
    "5\n",
    "1_000",
    "0x10",
    "NaN",
    "inf",
    str(int(time.time()) + 3600) + ".0",
    "\x00",
)

SIGNATURES: tuple[str, ...] = (
    "",
    "0" * 64,
    "0" * 63,
    "0" * 6400,
    "\u00b2" * 64,
    "\u00e9",
    "\u0663" * 64,
    "\x00",
    "%",
    "\U0001f44d",
    "Z" * 64,
)


# -- bearer tokens ---------------------------------------------------------------------------------


def _part(value: Mapping[str, Any] | str) -> str:
    text = value if isinstance(value, str) else dump(value)
    return b64(text)


def forge(header: Mapping[str, Any] | str, claims: Mapping[str, Any] | str, key: bytes | None) -> str:
    """A JWT with these (possibly absurd) header and claims, HS256-signed with `key`, unsigned if None."""
    signing_input = f"{_part(header)}.{_part(claims)}"
    if key is None:
        return signing_input + "."
    digest = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(digest)}"


def _claims(user_id: str, **changed: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user_id,
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "type": "access",
    }
    for name, value in changed.items():
        if value is _DROP:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


_DROP = object()
HS256 = {"alg": "HS256", "typ": "JWT"}


def forged_authorizations(secret: bytes, user_id: str, gone_user_token: str) -> list[str]:
    """Authorization headers no client holds rightly: malformed, unsigned, signed with another key,
    and signed with the api's own key around claims of every wrong type (what a leaked key or a
    bug that signs client input would let through to the claim checks)."""
    valid = _claims(user_id)
    wrong_key = b"not-the-key-" + b"y" * 32
    odd_claims: list[dict[str, Any]] = [
        _claims(user_id, exp="x"),
        _claims(user_id, exp=Raw("1e300")),
        _claims(user_id, exp=Raw("-1e300")),
        _claims(user_id, exp=Raw("1e400")),
        _claims(user_id, exp=Raw("Infinity")),
        _claims(user_id, exp=Raw("NaN")),
        _claims(user_id, exp=10**30),
        _claims(user_id, exp=2**63),
        _claims(user_id, exp=253402300800),  # year 10000
        _claims(user_id, exp=int(time.time()) + 600.5),
        _claims(user_id, exp=None),
        _claims(user_id, exp=[]),
        _claims(user_id, exp={}),
        _claims(user_id, exp=True),
        _claims(user_id, exp=str(int(time.time()) + 600)),
        _claims(user_id, exp="\u0663" * 10),
        _claims(user_id, exp=_DROP),
        _claims(user_id, iat="x"),
        _claims(user_id, iat=Raw("1e300")),
        _claims(user_id, iat=Raw("Infinity")),
        _claims(user_id, iat=10**30),
        _claims(user_id, iat=_DROP),
        _claims(user_id, nbf="x"),
        _claims(user_id, nbf=Raw("1e300")),
        _claims(user_id, nbf=10**30),
        _claims(user_id, sub="not-a-uuid"),
        _claims(user_id, sub=SOME_UUID.replace("0", "\u0660")),
        _claims(user_id, sub=ZERO_UUID),
        _claims(user_id, sub=str(uuid.uuid4())),  # a user who never was
        _claims(user_id, sub=12345),
        _claims(user_id, sub=None),
        _claims(user_id, sub=[user_id]),
        _claims(user_id, sub={"id": user_id}),
        _claims(user_id, sub="\x00"),
        _claims(user_id, sub=Raw('"\\ud800"')),
        _claims(user_id, sub=_DROP),
        _claims(user_id, type="refresh"),
        _claims(user_id, type=None),
        _claims(user_id, type=["access"]),
        _claims(user_id, jti=_DROP),
        _claims(user_id, aud=["x", 1]),
        _claims(user_id, iss=1),
    ]
    tokens = [
        forge({"alg": "none", "typ": "JWT"}, valid, None),
        forge({"alg": "None"}, valid, None),
        forge({"alg": "NONE"}, valid, None),
        forge({"alg": "none"}, valid, secret),
        forge({"alg": "HS256"}, valid, None),
        forge(HS256, valid, wrong_key),
        forge({"alg": "HS512", "typ": "JWT"}, valid, secret),
        forge({"alg": "RS256", "typ": "JWT"}, valid, secret),  # algorithm confusion
        forge({"alg": "HS256", "kid": "../../etc/passwd"}, valid, wrong_key),
        forge({"alg": "HS256", "crit": ["exp"]}, valid, secret),
        forge({"alg": "HS256", "jku": "http://169.254.169.254/"}, valid, wrong_key),
        forge({"alg": ["HS256"]}, valid, secret),
        forge({"alg": None}, valid, secret),
        forge("[]", valid, secret),
        forge("not json", valid, secret),
        forge(HS256, "[]", secret),
        forge(HS256, "not json", secret),
        forge(HS256, '"a string"', secret),
        forge(HS256, "{" * 5000, secret),
        forge(HS256, '{"sub":"\\ud800"}', secret),
        gone_user_token,
        *(forge(HS256, claims, secret) for claims in odd_claims),
    ]
    headers = [
        "",
        " ",
        "Bearer",
        "Bearer ",
        "Bearer    ",
        "bearer",
        "Basic dXNlcjpwYXNz",
        "Token abc",
        "Bearer a",
        "Bearer a.b",
        "Bearer a.b.c",
        "Bearer ...",
        "Bearer a.b.c.d",
        "Bearer !!!.!!!.!!!",
        "Bearer " + "a" * 8000,
        "Bearer " + "A" * 2000 + "." + "A" * 2000 + "." + "A" * 2000,
        "Bearer \u00e9",
        "Bearer \u00ff\u00fe",
        "Bearer\ttoken",
        "Bearer  Bearer x",
    ]
    return headers + [f"Bearer {token}" for token in tokens]
