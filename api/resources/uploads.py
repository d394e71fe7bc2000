"""Uploads: `POST /uploads` announces a file and answers where to PUT its bytes (a presigned URL
to the store); a send then names the upload in `attachments`.

With the local-disk store the presigned URLs point back here, at `/uploads/{id}/content`: PUT
the bytes, GET them back. Those two take no bearer token: the URL's signature is the credential,
as it is for an S3 presigned URL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from falcon.asgi import Request, Response
from pydantic import BaseModel, ConfigDict, Strict, field_validator

from api.auth import current_user
from api.http import parse, path_uuid, send
from api.throttle import UserLimit
from chat.domain import attachments
from chat.domain.quota import ByteQuota
from chat.errors import Conflict, Forbidden, NotFound, PayloadTooLarge, field_error
from chat.infra.db import Sessions
from chat.infra.numbers import parse_int
from chat.infra.storage import BadSignature, LocalStorage, Storage, content_disposition
from chat.usecases import uploads


class UploadBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    filename: str
    content_type: str
    size: Annotated[int, Strict()]

    @field_validator("filename")
    @classmethod
    def _filename(cls, value: str) -> str:
        problem = attachments.filename_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("content_type")
    @classmethod
    def _content_type(cls, value: str) -> str:
        problem = attachments.content_type_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value.lower()


@dataclass(frozen=True, slots=True)
class Uploads:
    sessions: Sessions
    storage: Storage
    max_upload: int
    max_body: int
    limit: UserLimit
    quota: ByteQuota

    async def on_post(self, req: Request, resp: Response) -> None:
        me = current_user(req)
        body = await parse(req, UploadBody, self.max_body)
        upload_id, presigned = await uploads.announce(
            self.sessions,
            self.storage,
            self.limit,
            self.quota,
            self.max_upload,
            me,
            body.filename,
            body.content_type,
            body.size,
        )
        # Local disk without PUBLIC_API_URL hands out a path: made absolute on this request's own
        # address, so any HTTP client can PUT to it as it is.
        url = presigned.url if "://" in presigned.url else req.forwarded_prefix + presigned.url
        send(
            resp,
            {
                "id": upload_id,
                "upload_url": url,
                "method": "PUT",
                "headers": presigned.headers,
                "expires_at": presigned.expires_at,
            },
            201,
        )


async def _limited(req: Request, size: int) -> AsyncIterator[bytes]:
    """The request's bytes, refusing more than were announced (413) as soon as they arrive."""
    total = 0
    async for chunk in req.stream:
        total += len(chunk)
        if total > size:
            raise PayloadTooLarge(f"The body is larger than the {size} bytes this upload announced.")
        yield chunk


@dataclass(frozen=True, slots=True)
class UploadContent:
    """The local-disk store's end of presigned URLs; 404 when the store is S3 (the URLs go there)."""

    store: LocalStorage | None
    max_upload: int
    auth_required = False

    def _local(self) -> LocalStorage:
        if self.store is None:
            raise NotFound("No such upload here: uploads go to object storage.")
        return self.store

    async def on_put(self, req: Request, resp: Response, upload_id: str) -> None:
        key = path_uuid(upload_id, "upload")
        store = self._local()
        content_type, size = req.get_param("content_type") or "", req.get_param("size") or ""
        try:
            store.verify(
                "PUT", key, req.get_param("expires"), req.get_param("signature"), (content_type, size)
            )
        except BadSignature as exc:
            raise Forbidden(str(exc)) from None
        announced = parse_int(size)  # signed by us: a decimal integer
        if announced > self.max_upload:
            raise PayloadTooLarge(f"A file is at most {self.max_upload} bytes.")
        sent_type = (req.content_type or "").split(";", 1)[0].strip().lower()
        if sent_type != content_type:
            raise field_error("header.Content-Type", f"Must be {content_type}, as the upload announced.")
        if req.content_length is not None and req.content_length != announced:
            if req.content_length > announced:
                raise PayloadTooLarge(f"The body is larger than the {announced} bytes this upload announced.")
            raise field_error("header.Content-Length", f"Must be {announced}, as the upload announced.")
        # Once stored, the bytes stay what the message that names them was checked against.
        if await store.head(key) is not None:
            raise Conflict("This upload's bytes are stored already.")
        try:
            complete = await store.write(key, content_type, _limited(req, announced), size=announced)
        except FileExistsError:
            raise Conflict("This upload's bytes are stored already.") from None
        if not complete:
            raise field_error(
                "body", f"The body is shorter than the {announced} bytes this upload announced."
            )
        resp.status = 204

    async def on_get(self, req: Request, resp: Response, upload_id: str) -> None:
        key = path_uuid(upload_id, "upload")
        store = self._local()
        filename = req.get_param("filename") or ""
        try:
            store.verify("GET", key, req.get_param("expires"), req.get_param("signature"), (filename,))
        except BadSignature as exc:
            raise Forbidden(str(exc)) from None
        found = await store.read(key)
        if found is None:
            raise NotFound("No such upload (or its bytes were never uploaded).")
        stored, chunks = found
        resp.content_type = stored.content_type
        resp.content_length = stored.size
        resp.set_header("Content-Disposition", content_disposition(filename))
        resp.set_header("Cache-Control", "private, max-age=300")
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.stream = chunks
