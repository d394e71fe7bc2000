"""Hostile input against every operation of the api: no input may produce a 5xx, and every 4xx is a
problem document (CONTRACT.md, Conventions).

The operations come from the api's own OpenAPI document, so a new route is fuzzed as soon as it is
described (and `tests/api/test_openapi.py` fails for a route that is not). Each property test sets
up its users and objects once, then every hypothesis example sends one request to each operation:
hostile path segments and query values, JSON bodies of every wrong type and size, forged cursors,
forged signed-URL parameters and forged bearer tokens, signed in as an admin, as a plain member,
and as nobody. The corpora the contract names (forged cursors, signed-URL expiries, tokens) are also
sent in full, deterministically.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import pytest
from falcon.testing import Result
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import delete

from api.deps import Deps
from chat.cli import set_admin
from chat.infra.storage import LocalStorage
from chat.jobqueue import deadletters
from chat.models import User
from chat.settings import Settings
from tests.support import ApiClient, TestUser, assert_problem
from tests.support.fuzz import (
    CONTENT_TYPES,
    EXPIRIES,
    FORGED_CURSORS,
    FUZZ,
    HOSTILE_TEXT,
    RAW_BODIES,
    SIGNATURES,
    SOME_UUID,
    Operation,
    encode,
    excerpt,
    fault,
    forged_authorizations,
    forged_cursor,
    hostile_json,
    hostile_text,
    operations,
    plausible,
    url_value,
)
from tests.support.serverapi import server_key
from tests.support.settings import RunWorker

THUMBS_UP = "\N{THUMBS UP SIGN}"
# HEAD is left out: its answers have no body to be a problem document.
METHODS = ("GET", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "PROPFIND")


@dataclass
class World:
    """The api with two users in a group, a stored message, an uploaded file and a webhook."""

    api: ApiClient
    ops: list[Operation]
    admin: TestUser
    member: TestUser
    server: TestUser  # a server key (/server/*)
    ids: dict[str, str]  # path parameter -> a value that names a real object, escaped
    fields: dict[str, Any]  # body field -> a plausible value
    put_url: str  # the upload's signed PUT URL: path?query
    get_url: str  # its signed GET URL
    secret: bytes
    gone_token: str  # the access token of a user whose row is gone
    message_id: str

    def caller(self, name: str) -> dict[str, str]:
        user = {"admin": self.admin, "member": self.member, "server": self.server}.get(name)
        return {"Authorization": f"Bearer {user.access_token}"} if user else {}

    async def send(
        self,
        method: str,
        path: str,
        query: str = "",
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> Result:
        result: Result = await self.api.conductor.simulate_request(
            method, path, query_string=query or None, headers=headers, body=body
        )
        return result


def _path_and_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The world's webhook points at a closed port: one try each, so a worker run never waits out
    # the deliveries' back-off.
    return settings.model_copy(update={"webhook_max_tries": 1})


@pytest.fixture
async def world(api: ApiClient, deps: Deps, run_worker: RunWorker) -> AsyncIterator[World]:
    admin, member = await api.user(), await api.user()
    assert await set_admin(deps.settings, admin.username, True)
    cid = (await api.conversation(admin, member))["id"]
    sent = await api.post(f"/conversations/{cid}/messages", admin, json={"body": "hello @" + member.username})
    assert sent.status_code == 202, sent.text
    await run_worker()
    ticket = (
        await api.post("/uploads", admin, json={"filename": "a.txt", "content_type": "text/plain", "size": 3})
    ).json
    put_url = _path_and_query(ticket["upload_url"])
    path, query = put_url.split("?", 1)
    stored = await api.conductor.simulate_put(
        path, query_string=query, body=b"abc", headers=ticket["headers"]
    )
    assert stored.status_code == 204, stored.text
    assert isinstance(deps.storage, LocalStorage)
    get_url = deps.storage.presign_get(uuid.UUID(ticket["id"]), "a.txt")
    hook = await api.post(
        "/admin/webhooks", admin, json={"url": "http://127.0.0.1:9/in", "events": ["message.created"]}
    )
    assert hook.status_code == 201, hook.text
    server = await server_key(deps)
    app_user = await api.put("/server/users/fuzz-user", server, json={"display_name": "Fuzz"})
    assert app_user.status_code == 201, app_user.text
    gone = await api.user()
    async with deps.engine.begin() as conn:
        await conn.execute(delete(User).where(User.id == uuid.UUID(gone.id)))
    document = (await api.conductor.simulate_get("/openapi.json")).json
    ops = operations(document)
    assert len(ops) > 40, [str(op) for op in ops]  # the document, not an empty one
    message_id = sent.json["id"]
    yield World(
        api=api,
        ops=ops,
        admin=admin,
        member=member,
        server=server,
        ids={
            "external_id": "fuzz-user",
            "member_external_id": "fuzz-user",
            "conversation_id": cid,
            "user_id": member.id,
            "message_id": message_id,
            "emoji": quote(THUMBS_UP),
            "upload_id": ticket["id"],
            "job_id": sent.json["job_id"],
            "webhook_id": hook.json["id"],
        },
        fields={
            "participant_ids": [member.id],
            "user_ids": [member.id],
            "kind": "group",
            "title": "a group",
            "body": "hello",
            "client_id": "c1",
            "reply_to": message_id,
            "attachments": [],
            "seq": 1,
            "muted": True,
            "url": "https://hooks.example.com/in",
            "events": ["message.created"],
            "filename": "a.txt",
            "content_type": "text/plain",
            "size": 3,
            "username": admin.username,
            "password": "not the password",
            "refresh_token": "x" * 43,
            "display_name": "Someone",
        },
        put_url=put_url,
        get_url=get_url,
        secret=deps.settings.secret_key.get_secret_value().encode(),
        gone_token=gone.access_token,
        message_id=message_id,
    )


def _describe(method: str, path: str, query: str, headers: dict[str, str], body: bytes | None) -> str:
    auth = headers.get("Authorization", "")
    shown = (auth[:60] + "...") if len(auth) > 60 else auth
    return f"{method} {path}{'?' + query[:300] if query else ''} [auth {shown!r}] body {excerpt(body)}"


def _check(faults: list[str], result: Result, request: str) -> None:
    problem = fault(result)
    if problem is not None:
        faults.append(f"{request}\n    -> {problem}")


def _query_value(name: str) -> st.SearchStrategy[str]:
    """A value for a query parameter, escaped: the hostile forms its name invites, or any."""
    special: dict[str, st.SearchStrategy[str]] = {
        "cursor": forged_cursor(),
        "expires": st.sampled_from(EXPIRIES),
        "signature": st.sampled_from(SIGNATURES),
        "limit": st.sampled_from(["10", "200", "201", "0"]),
        "q": st.sampled_from(["hello", "a" * 300, "' OR 1=1 --", "\\", "%", "_"]),
    }
    plain = special.get(name, st.nothing()).map(lambda s: quote(s, safe=""))
    return st.one_of(plain, url_value())


def _query(data: st.DataObject, op: Operation) -> str:
    pairs = []
    for name in op.query_params:
        if data.draw(st.booleans(), label=f"{op} ?{name} given"):
            pairs.append((name, data.draw(_query_value(name), label=f"{op} ?{name}")))
    # Parameters twice over, and ones no route reads.
    names = st.sampled_from([*op.query_params, "x", "", "cursor[]"])
    pairs += data.draw(st.lists(st.tuples(names, url_value()), max_size=2), label=f"{op} extra query")
    return "&".join(f"{quote(name, safe='')}={value}" for name, value in pairs)


def _object(data: st.DataObject, op: Operation, fields: dict[str, Any]) -> dict[str, Any]:
    assert op.body is not None
    obj: dict[str, Any] = {}
    for name, schema in op.body.get("properties", {}).items():
        how = data.draw(st.sampled_from(["plausible", "hostile", "text", "absent"]), label=f"{op} .{name}")
        if how == "plausible":
            obj[name] = plausible(name, schema, fields)
        elif how == "hostile":
            obj[name] = data.draw(hostile_json(), label=f"{op} .{name} value")
        elif how == "text":
            obj[name] = data.draw(hostile_text(), label=f"{op} .{name} text")
    extra = st.dictionaries(st.text(max_size=8), hostile_json(), max_size=2)
    obj.update(data.draw(extra, label=f"{op} extra fields"))
    return obj


def _body(data: st.DataObject, op: Operation, fields: dict[str, Any]) -> tuple[bytes, str]:
    content_type = data.draw(
        st.one_of(st.just("application/json"), st.sampled_from(CONTENT_TYPES)), label=f"{op} content type"
    )
    if data.draw(st.integers(0, 4), label=f"{op} raw body") == 0:
        return data.draw(st.sampled_from(RAW_BODIES), label=f"{op} body"), content_type
    obj = _object(data, op, fields)
    if content_type == "application/x-www-form-urlencoded":
        form = {k: v if isinstance(v, str) else encode(v).decode("utf-8", "replace") for k, v in obj.items()}
        return urlencode(form).encode(), content_type
    return encode(obj, ascii_only=data.draw(st.booleans(), label=f"{op} ascii")), content_type


# -- properties over every operation ---------------------------------------------------------------


@FUZZ
@given(data=st.data())
async def test_hostile_paths_and_queries_on_every_operation(world: World, data: st.DataObject) -> None:
    faults: list[str] = []
    for op in world.ops:
        values = {
            name: data.draw(
                st.one_of(st.just(world.ids.get(name, SOME_UUID)), url_value()), label=f"{op} {{{name}}}"
            )
            for name in op.path_params
        }
        path, query = op.path(values), _query(data, op)
        headers = world.caller(
            data.draw(st.sampled_from(["admin", "member", "server", "nobody"]), label=f"{op} as")
        )
        # Now and then a method the route may not have (405 is a problem too).
        method = data.draw(st.one_of(st.just(op.method), st.sampled_from(METHODS)), label=f"{op} method")
        result = await world.send(method, path, query, headers)
        _check(faults, result, _describe(method, path, query, headers, None))
    assert not faults, "\n".join(faults)


@FUZZ
@given(data=st.data())
async def test_hostile_bodies_on_every_operation_that_takes_one(world: World, data: st.DataObject) -> None:
    faults: list[str] = []
    for op in (op for op in world.ops if op.body is not None):
        path = op.path({name: world.ids.get(name, SOME_UUID) for name in op.path_params})
        body, content_type = _body(data, op, world.fields)
        caller = data.draw(
            st.sampled_from(["admin", "admin", "member", "server", "nobody"]), label=f"{op} as"
        )
        headers = {**world.caller(caller), "Content-Type": content_type}
        result = await world.send(op.method, path, "", headers, body)
        _check(faults, result, _describe(op.method, path, "", headers, body))
    assert not faults, "\n".join(faults)


@FUZZ
@given(data=st.data())
async def test_forged_bearer_tokens_on_every_operation(world: World, data: st.DataObject) -> None:
    authorizations = forged_authorizations(world.secret, world.admin.id, world.gone_token)
    faults: list[str] = []
    for op in (op for op in world.ops if op.auth):
        path = op.path({name: world.ids.get(name, SOME_UUID) for name in op.path_params})
        headers = {"Authorization": data.draw(st.sampled_from(authorizations), label=f"{op} auth")}
        result = await world.send(op.method, path, "", headers, b"{}" if op.body else None)
        _check(faults, result, _describe(op.method, path, "", headers, None))
    assert not faults, "\n".join(faults)


# -- the named corpora, each in full ---------------------------------------------------------------


async def test_every_forged_authorization_is_401(world: World) -> None:
    faults: list[str] = []
    for authorization in forged_authorizations(world.secret, world.admin.id, world.gone_token):
        headers = {"Authorization": authorization}
        result = await world.send("GET", "/api/v1/users/me", headers=headers)
        request = _describe("GET", "/api/v1/users/me", "", headers, None)
        _check(faults, result, request)
        # A token signed with the api's own key around odd claims may be read as valid; anything
        # else is not a token of ours.
        if result.status_code not in (200, 401) or (
            result.status_code == 401 and not result.headers.get("www-authenticate", "").startswith("Bearer")
        ):
            faults.append(f"{request}\n    -> {result.status_code} {result.headers}: {result.text[:200]}")
    assert not faults, "\n".join(faults)


async def test_a_gone_users_token_is_401_on_every_operation(world: World) -> None:
    faults: list[str] = []
    headers = {"Authorization": f"Bearer {world.gone_token}"}
    for op in (op for op in world.ops if op.auth):
        path = op.path({name: world.ids.get(name, SOME_UUID) for name in op.path_params})
        result = await world.send(op.method, path, "", headers, b"{}" if op.body else None)
        request = _describe(op.method, path, "", headers, None)
        _check(faults, result, request)
        if result.status_code != 401:
            faults.append(f"{request}\n    -> {result.status_code}, not 401: {result.text[:200]}")
    assert not faults, "\n".join(faults)


async def test_every_forged_cursor_is_422_on_every_list(world: World) -> None:
    listing = [op for op in world.ops if "cursor" in op.query_params and op.method == "GET"]
    assert len(listing) >= 4, [str(op) for op in listing]
    faults: list[str] = []
    for op in listing:
        headers = world.caller("server" if "/server/" in op.template else "admin")
        path = op.path({name: world.ids.get(name, SOME_UUID) for name in op.path_params})
        for cursor in FORGED_CURSORS:
            query = "q=hello&cursor=" + quote(cursor, safe="")
            result = await world.send("GET", path, query, headers)
            request = _describe("GET", path, query, headers, None)
            _check(faults, result, request)
            if result.status_code != 422 or "query.cursor" not in result.text:
                faults.append(f"{request}\n    -> {result.status_code}, not a 422 naming query.cursor")
    assert not faults, "\n".join(faults)


def _signed_url_forgeries(url: str, bound: tuple[str, ...]) -> list[tuple[str, str, bool]]:
    """(path, query, forged) for `url` with its expiry, signature or bound values forged (forged:
    True, no signature of ours covers it), or with a valid parameter given twice (forged: False)."""
    path, query = url.split("?", 1)
    signed = dict(parse_qsl(query, keep_blank_values=True))
    variants: list[dict[str, str]] = []
    variants += [{**signed, "expires": expires} for expires in EXPIRIES]
    variants += [{**signed, "signature": signature} for signature in SIGNATURES]
    variants += [{k: v for k, v in signed.items() if k != drop} for drop in ("expires", "signature")]
    variants += [{**signed, name: text} for name in bound for text in HOSTILE_TEXT[:24]]
    forged = [(path, urlencode(v, quote_via=quote), True) for v in variants]
    forged += [
        (path, query.replace("signature=", "signature=%ED%A0%80"), True),
        (path, query.replace("expires=", "expires=%D9%A3"), True),
        (path, query.replace("expires=", "expires=%C2%B2"), True),
        (path, f"{query}&expires=%C2%B2", False),
        (path, f"expires=%C2%B2&{query}", False),
        (path, f"{query}&signature=%ff", False),
    ]
    return forged


async def test_forged_signed_urls_are_403_on_the_content_routes(world: World) -> None:
    faults: list[str] = []
    routes = (("PUT", world.put_url, ("content_type", "size")), ("GET", world.get_url, ("filename",)))
    for method, url, bound in routes:
        for path, query, forged in _signed_url_forgeries(url, bound):
            headers = {"Content-Type": "text/plain"}
            body = b"abc" if method == "PUT" else None
            result = await world.send(method, path, query, headers, body)
            request = _describe(method, path, query, headers, body)
            _check(faults, result, request)
            if forged and result.status_code != 403:
                faults.append(f"{request}\n    -> {result.status_code}, not 403: {result.text[:200]}")
    assert not faults, "\n".join(faults)


async def test_a_signed_url_with_a_non_ascii_signature_is_403(world: World) -> None:
    # hmac.compare_digest refuses str with non-ASCII characters (TypeError): a 500 for anyone.
    for method, url in (("PUT", world.put_url), ("GET", world.get_url)):
        path, query = url.split("?", 1)
        forged = re.sub(r"signature=[0-9a-f]+", "signature=%C3%A9", query)
        body = b"abc" if method == "PUT" else None
        assert_problem(await world.send(method, path, forged, {"Content-Type": "text/plain"}, body), 403)


async def test_bodies_of_only_invisible_characters_are_refused(world: World) -> None:
    """A body of format characters alone is blank to every reader: the contract's non-blank rule."""
    cid = world.ids["conversation_id"]
    invisible = [
        "\u200b",
        "\u200b\u200c\u200d",
        "\u2060",
        "\ufeff",
        "\u200e\u200f",
        "\u202e",
        "\u00ad",
        " \u200b\n",
    ]
    for text in invisible:
        for method, path in (
            ("POST", f"/conversations/{cid}/messages"),
            ("PATCH", f"/messages/{world.message_id}"),
        ):
            result = await world.api.request(method, path, world.admin, json={"body": text})
            problem = assert_problem(result, 422)
            assert "body.body" in [e["field"] for e in problem["errors"]], (text, problem)


async def test_reactions_named_by_dots_are_refused_and_leave_the_message(
    world: World, run_worker: RunWorker
) -> None:
    # `..` as a path segment is `DELETE /messages/{id}` to every client that normalises URLs.
    for emoji in (".", "..", "...", "%2e%2e", "%2E"):
        for method in ("PUT", "DELETE"):
            result = await world.send(
                method, f"/api/v1/messages/{world.message_id}/reactions/{emoji}", "", world.caller("admin")
            )
            assert_problem(result, 422)
    await run_worker()
    message = (await world.api.get(f"/messages/{world.message_id}", world.admin)).json
    assert (message["deleted"], message["reactions"]) == (False, [])


async def test_hostile_text_that_is_accepted_is_stored_and_reads_back(
    world: World, deps: Deps, run_worker: RunWorker
) -> None:
    """What the api accepts of the hostile text, as message bodies, client ids, display names, titles
    and reactions, the worker stores (no job dead-lettered) and every read of it answers."""
    faults: list[str] = []
    cid, admin = world.ids["conversation_id"], world.admin
    auth = world.caller("admin")
    texts = [t for t in HOSTILE_TEXT if t.strip()][::2]  # half of them keeps the test to a second or two
    sent: list[str] = []
    groups: list[str] = []

    async def write(method: str, path: str, payload: dict[str, Any] | None) -> Result:
        result = await world.api.request(method, path, admin, json=payload)
        _check(faults, result, f"{method} {path} {payload!r:.200}")
        return result

    for i, text in enumerate(texts):
        result = await write("POST", f"/conversations/{cid}/messages", {"body": text, "client_id": text[:64]})
        if result.status_code == 202:
            sent.append(result.json["id"])
        await write(
            "POST", f"/conversations/{cid}/messages", {"body": f"{text} @{world.member.username} {i}"}
        )
        if i % 2 == 0:  # each of these reads back the same way: half of the texts will do
            await write("PATCH", "/users/me", {"display_name": text[:64]})
            await write("PUT", f"/messages/{world.message_id}/reactions/{quote(text, safe='')}", None)
            body = {"kind": "group", "title": text[:200], "participant_ids": [world.member.id]}
            created = await write("POST", "/conversations", body)
            if created.status_code == 201:
                groups.append(created.json["id"])
    await run_worker()
    reads = [
        f"/api/v1/conversations/{cid}/messages?limit=200",
        "/api/v1/conversations?limit=200",
        "/api/v1/users/me",
        f"/api/v1/messages/{world.message_id}",
        *(f"/api/v1/messages/{mid}" for mid in sent),
        *(f"/api/v1/conversations/{gid}" for gid in groups),
        *(f"/api/v1/search/messages?limit=200&q={quote(text, safe='')}" for text in texts[::2]),
        *(f"/api/v1/users?q={quote(text, safe='')}" for text in texts[1::3]),
    ]
    for url in reads:
        path, _, query = url.partition("?")
        result = await world.send("GET", path, query, auth)
        _check(faults, result, f"GET {url[:300]}")
        if result.status_code != 200 and "?q=" not in url and "&q=" not in url:  # a query may be refused
            faults.append(f"GET {url[:300]}\n    -> {result.status_code}: {result.text[:200]}")
    # (The world's webhook points nowhere: its deliveries are expected to fail.)
    failed, _ = await deadletters.page(deps.redis, limit=200)
    assert [d for d in failed if d["function"] != "deliver_webhook"] == []
    assert not faults, "\n".join(faults)


# -- logs ------------------------------------------------------------------------------------------


async def test_a_flood_of_forged_urls_logs_a_bounded_number_of_records(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    listing = [op for op in world.ops if "cursor" in op.query_params and op.method == "GET"]
    requests: list[tuple[str, str, str]] = []
    for method, url, bound in (
        ("PUT", world.put_url, ("content_type", "size")),
        ("GET", world.get_url, ("filename",)),
    ):
        requests += [(method, path, query) for path, query, _ in _signed_url_forgeries(url, bound)]
    for op in listing:
        path = op.path({name: world.ids.get(name, SOME_UUID) for name in op.path_params})
        requests += [("GET", path, "cursor=" + quote(c, safe="")) for c in FORGED_CURSORS]
    flood = (requests * (500 // len(requests) + 1))[:500]
    headers = {**world.caller("admin"), "Content-Type": "text/plain"}
    with caplog.at_level(logging.WARNING):
        for method, path, query in flood:
            await world.send(method, path, query, headers, b"abc" if method == "PUT" else None)
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    traced = [r for r in loud if r.exc_info or "Traceback" in r.getMessage()]
    assert not traced, [r.getMessage()[:500] for r in traced[:3]]
    # Refusing a client's bad URL is routine: at most a handful of lines, not one per request.
    assert len(loud) <= 5, [f"{r.name}: {r.getMessage()[:200]}" for r in loud[:10]]
