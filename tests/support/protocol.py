"""Every frame the push tests receive is checked against the published AsyncAPI document."""

from __future__ import annotations

from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from chat.realtime import wsprotocol


@cache
def _validators() -> dict[str, Draft202012Validator]:
    document = wsprotocol.document("test")
    root = Resource.from_contents(document, default_specification=DRAFT202012)
    registry: Registry = Registry().with_resource("urn:asyncapi", root)
    validators = {}
    for message in document["channels"]["ws"]["messages"].values():
        schema = {"$ref": "urn:asyncapi" + message["payload"]["$ref"]}
        validators[message["name"]] = Draft202012Validator(schema, registry=registry)
    return validators


def check_frame(frame: dict[str, Any]) -> dict[str, Any]:
    """The frame, after checking that the protocol document describes it exactly."""
    validator = _validators().get(frame.get("type", ""))
    assert validator is not None, f"a frame type the protocol does not describe: {frame}"
    errors = sorted(validator.iter_errors(frame), key=str)
    assert not errors, f"{frame} breaks the protocol: {[e.message for e in errors]}"
    return frame
