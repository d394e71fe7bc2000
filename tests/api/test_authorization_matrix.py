"""The authorization matrix, generated from the route table: every route, every kind of caller.

Each (method, path) the app routes is declared in `api.operations`, which says who may call it
(`caller`); each path parameter needs a filler in `FILLERS`, and each request body a valid one in
`BODIES`; a route added without them fails every test here, with a message that names it. The
callers: no token, an expired token, an uninvolved user, a former participant, a non-admin, and
the rightful caller (the participant, the job's owner, an admin), whose success
shows that each request's body is valid, so the refusals come from authorization alone.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from falcon import inspect
from falcon.testing import Result
from pydantic import SecretStr

from api.deps import Deps
from api.operations import OPERATIONS, SELF_DESCRIBING, Scope
from chat.cli import set_admin
from chat.identity.security import Tokens
from chat.jobqueue import deadletters
from chat.settings import Settings
from chat.usecases import server_keys
from tests.support import PASSWORD, PREFIX, PROFILE_FIELDS, ApiClient, TestUser, assert_problem
from tests.support.appbackend import APP_SECRET, claims, mint_hs256
from tests.support.serverapi import server_key
from tests.support.settings import RunWorker

DEAD_TO_SHOW, DEAD_TO_RETRY = "persist:matrix-dead-1", "persist:matrix-dead-2"
# The server API's conversation and its member, and the user its user routes make, by the app's ids.
MATRIX_GROUP, MATRIX_MEMBER, MATRIX_USER = "matrix-group", "matrix-member", "matrix-user"
# Nothing listens there: no test here runs a worker after registering it.
WEBHOOK = {"url": "http://127.0.0.1:9/matrix", "events": ["message.created"]}


@dataclass
class World:
    alice: TestUser  # owns the group, sent both messages, caused the job
    bob: TestUser  # in both conversations
    dave: TestUser  # in the group; the owner removes him in the rightful-caller run
    carol: TestUser  # was in the group, read its history, and left: a non-participant now
    eve: TestUser  # in nothing: another user
    admin: TestUser
    group: str
    direct: str
    group_message: str
    direct_message: str
    job: str  # alice's persist job of the direct message
    expired: str  # alice's access token, an hour past its expiry
    webhook: str  # registered by the admin
    server: TestUser  # a server key, for /server/*
    revoked_server: str  # a server key that was revoked
    app_token: str  # a valid token of the app's backend (APP_JWT_SECRET), for an app user


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """App tokens on: a valid one must open no server route."""
    return settings.model_copy(update={"app_jwt_secret": SecretStr(APP_SECRET)})


async def build_world(api: ApiClient, deps: Deps, run_worker: RunWorker) -> World:
    alice, bob, carol, dave, eve, admin = [await api.user() for _ in range(6)]
    assert await set_admin(deps.settings, admin.username, True)
    group = (await api.conversation(alice, bob, carol, dave))["id"]
    direct = (await api.conversation(alice, bob, kind="direct"))["id"]
    sent = {}
    for cid in (group, direct):
        result = await api.post(f"/conversations/{cid}/messages", alice, json={"body": "hello"})
        assert result.status_code == 202, result.text
        sent[cid] = result.json
    assert await run_worker() == 2
    seen = await api.get(f"/conversations/{group}/messages", carol)
    assert len(seen.json["items"]) == 1
    assert (await api.delete(f"/conversations/{group}/participants/{carol.id}", carol)).status_code == 204
    for job_id in (DEAD_TO_SHOW, DEAD_TO_RETRY):
        entry = {
            "job_id": job_id,
            "function": "persist_message",
            "args": [{}],
            "error": "ValueError: matrix",
            "reason": "raised",
            "traceback": "Traceback: matrix",
            "tries": 1,
            "enqueued_at": None,
            "failed_at": datetime.now(UTC).isoformat(),
            "worker_id": None,
        }
        await deadletters.record(deps.redis, entry, 100, 3600)
    hook = await api.post("/admin/webhooks", admin, json=WEBHOOK)
    assert hook.status_code == 201, hook.text
    expired = Tokens(deps.settings).issue_access(
        uuid.UUID(alice.id), now=datetime.now(UTC) - timedelta(hours=1)
    )
    server = await server_key(deps)
    member = await api.put(f"/server/users/{MATRIX_MEMBER}", server, json={})
    assert member.status_code == 201, member.text
    revoked_name = f"matrix-revoked-{uuid.uuid4().hex[:8]}"
    revoked = await server_keys.create(deps.sessions, revoked_name)
    await server_keys.revoke(deps.sessions, revoked_name)
    app_token = mint_hs256(claims())
    assert (await api.get("/users/me", TestUser("", "", app_token, ""))).status_code == 200
    return World(
        alice=alice,
        bob=bob,
        dave=dave,
        carol=carol,
        eve=eve,
        admin=admin,
        group=group,
        direct=direct,
        group_message=sent[group]["id"],
        direct_message=sent[direct]["id"],
        job=sent[direct]["job_id"],
        expired=expired,
        webhook=hook.json["id"],
        server=server,
        revoked_server=revoked,
        app_token=app_token,
    )


@pytest.fixture
async def world(api: ApiClient, deps: Deps, run_worker: RunWorker) -> World:
    return await build_world(api, deps, run_worker)


# -- path parameters -------------------------------------------------------------------------------

Fill = Callable[[World, str], str]  # (world, route path) -> the value for the rightful caller

_JOB_IDS: dict[str, Callable[[World], str]] = {
    f"{PREFIX}/jobs/{{job_id}}": lambda w: w.job,
    f"{PREFIX}/admin/jobs/{{job_id}}": lambda w: w.job,
    f"{PREFIX}/admin/dead-letters/{{job_id}}": lambda w: DEAD_TO_SHOW,
    f"{PREFIX}/admin/dead-letters/{{job_id}}/retry": lambda w: DEAD_TO_RETRY,
    f"{PREFIX}/server/jobs/{{job_id}}": lambda w: w.job,
}


def _job_id(w: World, path: str) -> str:
    if path not in _JOB_IDS:
        pytest.fail(f"no job id for {path}: add it to _JOB_IDS", pytrace=False)
    return _JOB_IDS[path](w)


FILLERS: dict[str, Fill] = {
    "conversation_id": lambda w, path: w.group,
    "message_id": lambda w, path: w.group_message,
    # Under a conversation: a participant whom only the owner may remove. Under blocks: someone
    # else to block. Else: a user to look at.
    "user_id": lambda w, path: (
        w.dave.id if "/participants/" in path else w.carol.id if "/blocks/" in path else w.alice.id
    ),
    "job_id": _job_id,
    "emoji": lambda w, path: "%F0%9F%91%8D",  # a thumbs up, as a client puts it in a URL
    "name": lambda w, path: "swagger-ui.css",  # a file of the docs pages
    "webhook_id": lambda w, path: w.webhook,
    "upload_id": lambda w, path: str(uuid.uuid4()),  # signed routes refuse before looking it up
    "external_id": lambda w, path: MATRIX_USER if "/server/users/" in path else MATRIX_GROUP,
    "member_external_id": lambda w, path: MATRIX_MEMBER,
}
PARAM = re.compile(r"{(\w+)}")


def fill(world: World, path: str, **override: str) -> str:
    return PARAM.sub(lambda m: override.get(m.group(1)) or FILLERS[m.group(1)](world, path), path)


# -- the matrix ------------------------------------------------------------------------------------

Body = Callable[["Call", TestUser | None], Awaitable[dict[str, Any] | None]]


@dataclass
class Call:
    api: ApiClient
    world: World


@dataclass(frozen=True)
class Row:
    """Who may call a route: `scope` is its declaration's `caller` (`api.operations.base.Scope`
    says what each means). `ok` is the rightful caller's status, the declared success, except on
    `signed` routes: there it is the 403 that everyone without the signature gets. `body` builds a
    valid body for a caller; `query` is a valid query string."""

    scope: Scope
    ok: int
    body: Body | None = None
    query: str | None = None


async def _register(call: Call, caller: TestUser | None) -> dict[str, Any]:
    return {"username": f"m{uuid.uuid4().hex[:10]}", "password": PASSWORD}


async def _login(call: Call, caller: TestUser | None) -> dict[str, Any]:
    return {"username": call.world.alice.username, "password": PASSWORD}


async def _fresh_refresh_token(call: Call, caller: TestUser | None) -> dict[str, Any]:
    """A refresh token of a login of its own, so that using it touches no other test's login."""
    login = await call.api.post("/auth/login", json=await _login(call, caller))
    return {"refresh_token": login.json["refresh_token"]}


async def _logout(call: Call, caller: TestUser | None) -> dict[str, Any]:
    # The rightful caller logs out a login of their own; anyone else presents alice's token, which
    # must not end her login (checked in the uninvolved user's test).
    if caller is call.world.alice:
        return await _fresh_refresh_token(call, caller)
    return {"refresh_token": call.world.alice.refresh_token}


def _json(payload: dict[str, Any]) -> Body:
    async def body(call: Call, caller: TestUser | None) -> dict[str, Any]:
        return payload

    return body


async def _add_self(call: Call, caller: TestUser | None) -> dict[str, Any]:
    # An outsider trying to join; for a participant adding themselves is a no-op.
    return {"user_ids": [(caller or call.world.eve).id]}


# The api's description and the pages that show it (api/operations/docs.py), in order.
DOCS = sorted(SELF_DESCRIBING)

# A valid body for every route that takes one, and a query string where one is required.
BODIES: dict[tuple[str, str], Body] = {
    ("POST", f"{PREFIX}/auth/register"): _register,
    ("POST", f"{PREFIX}/auth/login"): _login,
    ("POST", f"{PREFIX}/auth/refresh"): _fresh_refresh_token,
    ("POST", f"{PREFIX}/auth/logout"): _logout,
    ("POST", f"{PREFIX}/uploads"): _json({"filename": "a.txt", "content_type": "text/plain", "size": 1}),
    ("PATCH", f"{PREFIX}/users/me"): _json({"display_name": "x"}),
    ("POST", f"{PREFIX}/conversations"): _json({"kind": "group", "title": "mine", "participant_ids": []}),
    ("POST", f"{PREFIX}/conversations/{{conversation_id}}/messages"): _json({"body": "x"}),
    ("POST", f"{PREFIX}/conversations/{{conversation_id}}/participants"): _add_self,
    ("POST", f"{PREFIX}/conversations/{{conversation_id}}/read"): _json({"seq": 1}),
    ("PATCH", f"{PREFIX}/conversations/{{conversation_id}}/settings"): _json({"muted": True}),
    ("PATCH", f"{PREFIX}/messages/{{message_id}}"): _json({"body": "x"}),
    ("POST", f"{PREFIX}/admin/webhooks"): _json(WEBHOOK),
    # The server API's conversations: the world needs a server conversation MATRIX_GROUP with a
    # member whose external id is MATRIX_MEMBER (made with the server key in build_world).
    ("PUT", f"{PREFIX}/server/conversations/{{external_id}}"): _json(
        {"title": "matrix", "member_ids": [MATRIX_MEMBER]}
    ),
    ("POST", f"{PREFIX}/server/conversations/{{external_id}}/members"): _json(
        {"member_ids": [MATRIX_MEMBER]}
    ),
    ("POST", f"{PREFIX}/server/conversations/{{external_id}}/messages"): _json(
        {"body": "x", "client_id": "matrix"}
    ),
    ("PUT", f"{PREFIX}/server/users/{{external_id}}"): _json({"display_name": "Matrix"}),
    ("POST", f"{PREFIX}/server/tokens"): _json({"external_id": MATRIX_USER}),
}
QUERIES: dict[tuple[str, str], str] = {("GET", f"{PREFIX}/search/messages"): "q=hello"}

# Every declared route, in the order of the declarations (a route that removes or discards
# something comes after those that read it).
MATRIX: dict[tuple[str, str], Row] = {
    (op.method, path): Row(
        op.caller,
        403 if op.caller == "signed" else op.status,
        BODIES.get((op.method, path)),
        QUERIES.get((op.method, path)),
    )
    for (path, _), op in OPERATIONS.items()
}

# Listed on their own as well, so that making a route public is a change to this line, on purpose.
PUBLIC = {
    ("POST", f"{PREFIX}/auth/register"),
    ("POST", f"{PREFIX}/auth/login"),
    ("POST", f"{PREFIX}/auth/refresh"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", f"{PREFIX}/healthz"),
    ("GET", f"{PREFIX}/readyz"),
    ("GET", f"{PREFIX}/metrics"),
    ("GET", f"{PREFIX}/admin/ui"),
    *(("GET", path) for path in DOCS),
}

# A path parameter that names something only some users may see decides the route's scope.
SCOPE_OF_PARAM: dict[str, Scope] = {"conversation_id": "conversation", "message_id": "message"}


def app_routes(api: ApiClient) -> list[tuple[str, str]]:
    found = []
    for route in inspect.inspect_routes(api.conductor.app):
        for method in route.methods:
            if not method.internal and method.method != "OPTIONS":
                found.append((method.method, route.path))
    return found


def checked_routes(api: ApiClient) -> list[tuple[str, str]]:
    """The app's routes, in MATRIX order, once every one is declared, every parameter has a filler
    and every body a builder."""
    found = app_routes(api)
    errors = []
    missing = [f"{m} {p}" for m, p in found if (m, p) not in MATRIX]
    if missing:
        errors.append(f"routes no declaration in api/operations names (say who may call them): {missing}")
    stale = [f"{m} {p}" for m, p in MATRIX if (m, p) not in found]
    if stale:
        errors.append(f"declared routes the app does not serve: {stale}")
    takes = {(m, p) for (p, m), op in OPERATIONS.items() if op.body is not None}
    bodiless = [f"{m} {p}" for m, p in found if (m, p) in takes and (m, p) not in BODIES]
    if bodiless:
        errors.append(f"routes that take a body with none in BODIES: {bodiless}")
    unused = [f"{m} {p}" for m, p in [*BODIES, *QUERIES] if (m, p) not in found]
    unused += [f"{m} {p}" for m, p in BODIES if (m, p) in found and (m, p) not in takes]
    if unused:
        errors.append(f"BODIES or QUERIES for routes the app no longer has, or that take no body: {unused}")
    unfilled = sorted({name for _, p in found for name in PARAM.findall(p) if name not in FILLERS})
    if unfilled:
        errors.append(f"path parameters with no filler in FILLERS: {unfilled}")
    for method, path in found:
        row = MATRIX.get((method, path))
        for name, scope in SCOPE_OF_PARAM.items():
            if row is not None and f"{{{name}}}" in path and row.scope != scope:
                errors.append(f"{method} {path} takes {{{name}}}, so its scope must be {scope!r}")
    if errors:
        pytest.fail("authorization matrix out of date:\n  " + "\n  ".join(errors), pytrace=False)
    return [key for key in MATRIX if key in found]


async def call(
    api: ApiClient,
    world: World,
    method: str,
    path: str,
    caller: TestUser | None,
    token: str | None,
    **override: str,
) -> Result:
    row = MATRIX[(method, path)]
    body = await row.body(Call(api, world), caller) if row.body else None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await api.conductor.simulate_request(
        method, fill(world, path, **override), headers=headers, json=body, query_string=row.query
    )


def described(method: str, path: str, result: Result) -> str:
    return f"{method} {path} -> {result.status_code}: {result.text}"


# -- the tests -------------------------------------------------------------------------------------


def test_the_matrix_covers_every_route_and_names_the_public_ones(api: ApiClient) -> None:
    routes = checked_routes(api)
    assert len(routes) >= 30, routes
    assert {key for key, row in MATRIX.items() if row.scope == "public"} == PUBLIC


@pytest.mark.parametrize("token", ["none", "expired"])
async def test_public_routes_answer_without_a_token_and_ignore_a_stale_one(
    api: ApiClient, world: World, token: str
) -> None:
    for method, path in checked_routes(api):
        if MATRIX[(method, path)].scope != "public":
            continue
        result = await call(api, world, method, path, None, world.expired if token == "expired" else None)
        assert result.status_code == MATRIX[(method, path)].ok, described(method, path, result)


@pytest.mark.parametrize("token", ["none", "expired"])
async def test_every_other_route_is_401_without_a_valid_token(
    api: ApiClient, world: World, token: str
) -> None:
    # alice's expired token: even the owner of everything in the world is turned away.
    bearer = world.expired if token == "expired" else None
    challenge = 'Bearer error="invalid_token"' if bearer else "Bearer"
    for method, path in checked_routes(api):
        scope = MATRIX[(method, path)].scope
        if scope in ("public", "signed") or (scope == "server" and bearer):
            continue  # a user's token on a server route: the test below
        result = await call(api, world, method, path, None, bearer)
        assert result.status_code == 401, described(method, path, result)
        assert_problem(result, 401)
        assert result.headers.get("www-authenticate") == challenge, described(method, path, result)


async def test_server_routes_take_a_live_server_key_and_nothing_else(api: ApiClient, world: World) -> None:
    """No key, a revoked key, a user's token, an app's token: 401 on every server route; and a
    server key opens no other route."""
    routes = checked_routes(api)
    server_routes = [key for key in routes if MATRIX[key].scope == "server"]
    assert len(server_routes) >= 11, server_routes
    refused = {
        "revoked key": world.revoked_server,
        "user token": world.alice.access_token,
        "app token": world.app_token,
    }
    for method, path in server_routes:
        for who, token in refused.items():
            result = await call(api, world, method, path, None, token)
            assert result.status_code == 401, (who, described(method, path, result))
            assert_problem(result, 401)
    for method, path in routes:
        if MATRIX[(method, path)].scope not in ("public", "signed", "server"):
            result = await call(api, world, method, path, None, world.server.access_token)
            assert result.status_code == 401, ("server key", described(method, path, result))


async def test_signed_routes_refuse_everyone_without_the_signature(api: ApiClient, world: World) -> None:
    """A token opens nothing there, not even the owner's: only a URL the api signed does."""
    signed = [key for key in checked_routes(api) if MATRIX[key].scope == "signed"]
    assert len(signed) == 2, signed
    for method, path in signed:
        for caller in (None, world.alice, world.admin):
            result = await call(api, world, method, path, caller, caller.access_token if caller else None)
            assert_problem(result, 403)


@pytest.mark.parametrize("who", ["another user", "former participant"])
async def test_conversations_messages_and_jobs_of_others_are_404_exactly_like_missing_ones(
    api: ApiClient, world: World, who: str
) -> None:
    caller = world.eve if who == "another user" else world.carol
    targets: dict[str, tuple[str, list[str], Callable[[], str]]] = {
        "conversation": ("conversation_id", [world.group, world.direct], lambda: str(uuid.uuid4())),
        "message": ("message_id", [world.group_message, world.direct_message], lambda: str(uuid.uuid4())),
        "job": ("job_id", [world.job], lambda: f"persist:{uuid.uuid4()}"),
    }
    checked = 0
    for method, path in checked_routes(api):
        scope = MATRIX[(method, path)].scope
        if scope not in targets:
            continue
        param, hidden_ids, nonexistent = targets[scope]
        for hidden in hidden_ids:
            seen = await call(api, world, method, path, caller, caller.access_token, **{param: hidden})
            missing = await call(
                api, world, method, path, caller, caller.access_token, **{param: nonexistent()}
            )
            assert seen.status_code == 404, described(method, path, seen)
            assert_problem(missing, 404)
            # Existence never leaks: the same answer, byte for byte, as for an id that names nothing.
            assert (seen.json, seen.headers["content-type"]) == (
                missing.json,
                missing.headers["content-type"],
            ), (method, path)
            checked += 1
    assert checked >= 2 * 10 + 1
    # Nothing changed behind the 404s: carol did not get back in, and nothing of theirs was touched.
    group = (await api.get(f"/conversations/{world.group}", world.alice)).json
    assert {p["user_id"] for p in group["participants"]} == {world.alice.id, world.bob.id, world.dave.id}
    assert group["last_seq"] == 1 and {p["last_read_seq"] for p in group["participants"]} == {0}
    message = (await api.get(f"/messages/{world.direct_message}", world.alice)).json
    assert (message["body"], message["deleted"]) == ("hello", False)
    mine = (await api.get("/conversations", caller)).json["items"]
    assert {c["id"] for c in mine} & {world.group, world.direct} == set()


async def test_an_uninvolved_user_gets_only_what_is_theirs(api: ApiClient, world: World) -> None:
    eve = world.eve
    for method, path in checked_routes(api):
        row = MATRIX[(method, path)]
        if row.scope in ("self", "user"):
            result = await call(api, world, method, path, eve, eve.access_token)
            assert result.status_code == row.ok, described(method, path, result)
    assert (await api.get("/users/me", eve)).json["id"] == eve.id
    profile = (await api.get(f"/users/{world.alice.id}", eve)).json
    assert set(profile) == PROFILE_FIELDS
    # Search finds nothing of conversations eve was never in, or carol left; alice finds both.
    for caller, hits in ((eve, set()), (world.carol, set()), (world.alice, {world.group, world.direct})):
        found = (await api.get("/search/messages?q=hello", caller)).json["items"]
        assert {m["conversation_id"] for m in found} == hits
    # Searching into one: a 404 to whoever is not in it, as every conversation route answers.
    for caller in (eve, world.carol):
        searched = await api.get(f"/search/messages?q=hello&conversation_id={world.group}", caller)
        assert_problem(searched, 404)
    # eve's logout with alice's refresh token was a 204 that ended nothing: alice's login lives on.
    refreshed = await api.post("/auth/refresh", json={"refresh_token": world.alice.refresh_token})
    assert refreshed.status_code == 200, refreshed.text


@pytest.mark.parametrize("who", ["participant", "another user"])
async def test_non_admins_get_403_on_every_admin_route(api: ApiClient, world: World, who: str) -> None:
    caller = world.alice if who == "participant" else world.eve
    for method, path in checked_routes(api):
        if MATRIX[(method, path)].scope == "admin":
            result = await call(api, world, method, path, caller, caller.access_token)
            assert result.status_code == 403, described(method, path, result)
            assert_problem(result, 403)
    # Nothing was retried or discarded behind the 403s.
    for job_id in (DEAD_TO_SHOW, DEAD_TO_RETRY):
        assert (await api.get(f"/admin/dead-letters/{job_id}", world.admin)).status_code == 200


async def test_the_rightful_caller_gets_through_everywhere(api: ApiClient, world: World) -> None:
    """The control: with the same bodies, the participant (or an admin) succeeds on every route."""
    for method, path in checked_routes(api):
        row = MATRIX[(method, path)]
        caller = {"admin": world.admin, "server": world.server}.get(row.scope, world.alice)
        token = caller.access_token if row.scope != "public" else None
        result = await call(api, world, method, path, caller, token)
        assert result.status_code == row.ok, described(method, path, result)
    # An admin may read anyone's job too.
    assert (await api.get(f"/jobs/{world.job}", world.admin)).status_code == 200
