"""The bytes of an upload through the api's own signed URLs (local disk, no S3): the PUT a client
sends to `upload_url` and the GET of an attachment's `url`, on the in-process test client."""

from __future__ import annotations

from urllib.parse import urlsplit

from falcon.testing import Result

from tests.support import ApiClient


async def put_signed(api: ApiClient, url: str, data: bytes, headers: dict[str, str]) -> Result:
    parts = urlsplit(url)
    result: Result = await api.conductor.simulate_put(
        parts.path, query_string=parts.query, body=data, headers=headers
    )
    return result


async def get_signed(api: ApiClient, url: str) -> Result:
    parts = urlsplit(url)
    result: Result = await api.conductor.simulate_get(parts.path, query_string=parts.query)
    return result
