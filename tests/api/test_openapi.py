"""The OpenAPI document: generated from the routes, complete, valid, and served with its pages."""

from __future__ import annotations

import pytest
from falcon import inspect
from openapi_spec_validator import validate

from api.app import routes
from api.deps import Deps
from api.openapi import describe
from api.operations import OPERATIONS, SELF_DESCRIBING, TAGS, Operation, route_table
from tests.support import ApiClient


def routed(app: object) -> set[tuple[str, str]]:
    return {
        (route.path, info.method)
        for route in inspect.inspect_routes(app)  # type: ignore[arg-type]
        for info in route.methods
        if not info.internal and info.method != "OPTIONS" and route.path not in SELF_DESCRIBING
    }


async def test_the_document_describes_every_route_and_is_valid(api: ApiClient) -> None:
    served = await api.conductor.simulate_get("/openapi.json")
    assert served.status_code == 200 and served.headers["content-type"].startswith("application/json")
    document = served.json
    validate(document)  # OpenAPI 3.1, JSON Schema 2020-12
    described = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    assert described == routed(api.conductor.app)
    declared = {key for key, op in OPERATIONS.items() if op.described}
    assert declared == described, "declarations of routes that no longer exist"
    assert {op.tag for op in OPERATIONS.values()} <= set(TAGS)
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            assert op["summary"] and op["operationId"], where
            assert "security" in op, where
            for status, response in op["responses"].items():
                assert response["description"], (where, status)
                if status.startswith(("4", "5")):
                    assert "application/problem+json" in response["content"], (where, status)
            if "requestBody" in op:
                assert "example" in op["requestBody"]["content"]["application/json"], where
                assert {"400", "413", "422"} <= set(op["responses"]), where
            if op["security"]:
                assert "401" in op["responses"], where
            assert "500" not in op["responses"], where
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    # What webhook receivers get is described too (OpenAPI 3.1 `webhooks`): the signed headers and
    # the body, whose schema names every field a delivery carries.
    delivery = document["webhooks"]["event"]["post"]
    headers = {p["name"] for p in delivery["parameters"] if p["in"] == "header"}
    assert headers == {"X-Webhook-Id", "X-Webhook-Timestamp", "X-Webhook-Signature"}
    ref = delivery["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert set(body["required"]) == {"id", "type", "created_at", "data"}


def test_a_route_without_a_description_is_an_error(deps: Deps) -> None:
    class Undocumented:
        async def on_get(self, req: object, resp: object) -> None: ...

    with pytest.raises(LookupError, match="undocumented"):
        describe([*routes(deps), ("/api/v1/undocumented", Undocumented())])


class GetOnly:
    async def on_get(self, req: object, resp: object) -> None: ...


class GetAndPut(GetOnly):
    async def on_put(self, req: object, resp: object) -> None: ...


def declared_get(path: str) -> Operation:
    return Operation("GET", path, GetOnly, "users", "Something", "self", {200: ("It.", None)})


def test_the_route_table_serves_what_is_declared_and_nothing_else() -> None:
    assert route_table([declared_get("/a"), declared_get("/b")], {GetOnly: (one := GetOnly())}) == [
        ("/api/v1/a", one),
        ("/api/v1/b", one),
    ]
    with pytest.raises(LookupError, match=r"serves \['GET', 'PUT'\]; api/operations declares \['GET'\]"):
        route_table([declared_get("/a")], {GetOnly: GetAndPut()})
    with pytest.raises(LookupError, match="declared without a resource"):
        route_table([declared_get("/a")], {})
    with pytest.raises(LookupError, match="resources no operation declares"):
        route_table([declared_get("/a")], {GetOnly: GetOnly(), GetAndPut: GetAndPut()})


async def test_the_pages_and_their_assets_are_served(api: ApiClient) -> None:
    for path, kind in (
        ("/docs", "text/html"),
        ("/docs/init.js", "text/javascript"),
        ("/docs/assets/swagger-ui-bundle.js", "text/javascript"),
        ("/docs/assets/swagger-ui.css", "text/css"),
        ("/redoc", "text/html"),
        ("/redoc/redoc.standalone.js", "text/javascript"),
    ):
        got = await api.conductor.simulate_get(path)
        assert got.status_code == 200, path
        assert got.headers["content-type"].startswith(kind), path
        if kind == "text/html":
            assert "https://" not in got.text and "http://" not in got.text, path
            assert "default-src 'none'" in got.headers["content-security-policy"]
    assert (await api.conductor.simulate_get("/docs/assets/nope.js")).status_code == 404
