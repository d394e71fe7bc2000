"""The AsyncAPI description of the WebSocket: complete, well-formed, and true of the frames built."""

from __future__ import annotations

import typing
import uuid

import orjson
from jsonschema import Draft202012Validator

from chat.realtime import events, wsprotocol
from push import frames
from tests.support import ApiClient
from tests.support.messages import message_created
from tests.support.protocol import check_frame


def test_the_document_covers_every_event_and_control_frame() -> None:
    document = wsprotocol.document("1.2.3", "push.example.com:443")
    assert document["asyncapi"] == "3.0.0" and document["info"]["version"] == "1.2.3"
    assert document["servers"]["push"]["host"] == "push.example.com:443"
    messages = document["channels"]["ws"]["messages"]
    kinds = {m["name"] for m in messages.values()}
    stored = {m.model_fields["type"].default for m in typing.get_args(events.StoredEvent)}
    assert stored | {"typing", "ready", "resync_required", "pong", "error", "ping"} == kinds
    for message in messages.values():
        ref = message["payload"]["$ref"].removeprefix("#/components/schemas/")
        Draft202012Validator.check_schema(document["components"]["schemas"][ref])
    for operation in document["operations"].values():
        for message in operation["messages"]:
            assert message["$ref"].removeprefix("#/channels/ws/messages/") in messages
    for close in wsprotocol.CLOSE_CODES:
        assert f"| `{close.code}` |" in document["info"]["description"]


def test_frames_as_built_are_what_the_document_says() -> None:
    user = uuid.uuid4()
    check_frame(orjson.loads(frames.ready(str(user), "c1", 3, "1-0")))
    check_frame(orjson.loads(frames.ready(str(user), "c1", 0, None)))
    check_frame(orjson.loads(frames.PONG))
    check_frame(orjson.loads(frames.RESYNC_REQUIRED))
    check_frame(orjson.loads(frames.error("bad frame")))
    created = message_created(user, 1, "hi")
    check_frame(orjson.loads(events.frame(b"1732700000000-0", events.encode(created))))
    typing_frame = events.Typing(conversation_id=uuid.uuid4(), data=events.UserRef(user_id=user))
    check_frame(orjson.loads(events.encode(typing_frame)))
    check_frame({"type": "ping"})


async def test_served_beside_the_openapi_document(api: ApiClient) -> None:
    served = await api.conductor.simulate_get("/asyncapi.json")
    assert served.status_code == 200 and served.json["asyncapi"] == "3.0.0"
    openapi = (await api.conductor.simulate_get("/openapi.json")).json
    assert served.json["info"]["version"] == openapi["info"]["version"]
