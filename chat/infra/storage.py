"""Where attachment bytes live, behind one small interface: the api presigns uploads and checks
that they arrived, the worker checks again before it stores a message, and every message read
presigns downloads. Clients move the bytes themselves, straight to the store, so neither the api
nor the workers carry them (except the local-disk store, whose URLs point back at the api).

`chat.infra.stores.create_storage(settings)` picks S3-compatible storage when `S3_BUCKET` is
set, else local disk. It is built once per process (the api's `Deps`, the worker's ctx) and
passed in, never global.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Protocol
from urllib.parse import quote, urlencode

from chat.infra.numbers import parse_int
from chat.settings import Settings

CONTENT_PATH = "/api/v1/uploads/{upload_id}/content"
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Presigned:
    """Where and how a client sends one object: the URL and the headers the signature binds."""

    url: str
    headers: dict[str, str]
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class StoredObject:
    size: int
    content_type: str


class StorageUnavailable(Exception):
    """The store did not answer: a transient failure (the worker retries, the api answers 503)."""


class Storage(Protocol):
    def presign_put(self, key: uuid.UUID, content_type: str, size: int) -> Presigned: ...

    def presign_get(self, key: uuid.UUID, filename: str) -> str: ...

    async def head(self, key: uuid.UUID) -> StoredObject | None:
        """The object's size and content type, or None while nothing was uploaded under the key."""
        ...

    async def delete(self, key: uuid.UUID) -> None:
        """Remove the object; nothing to remove is no error."""
        ...


def content_disposition(filename: str) -> str:
    # RFC 6266 / 5987: the UTF-8 name, percent-encoded, survives any character a user chose.
    return f"attachment; filename*=UTF-8''{quote(filename, safe='')}"


class BadSignature(Exception):
    """The URL was not signed by us, was signed for something else, or has expired."""


class LocalStorage:
    """Files under one directory, uploaded to and downloaded from the api under URLs it signs
    with SECRET_KEY (HMAC-SHA256 over method, id, expiry and, for a PUT, type and size): the
    signature is the credential, as an S3 presigned URL's is, so those routes need no token."""

    def __init__(
        self, root: Path, secret: bytes, base_url: str, *, put_seconds: int, get_seconds: int
    ) -> None:
        self.root = root
        self._secret = secret
        self._base = base_url.rstrip("/")
        self._put_seconds = put_seconds
        self._get_seconds = get_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalStorage:
        return cls(
            Path(settings.uploads_dir),
            settings.secret_key.get_secret_value().encode(),
            settings.public_api_url,
            put_seconds=settings.upload_url_expire_seconds,
            get_seconds=settings.download_url_expire_seconds,
        )

    def _signature(self, method: str, key: uuid.UUID, expires: int, bound: tuple[str, ...]) -> str:
        what = "\n".join((method, str(key), str(expires), *bound))
        return hmac.new(self._secret, what.encode(), hashlib.sha256).hexdigest()

    def _url(self, key: uuid.UUID, query: dict[str, str]) -> str:
        return self._base + CONTENT_PATH.format(upload_id=key) + "?" + urlencode(query)

    def presign_put(self, key: uuid.UUID, content_type: str, size: int) -> Presigned:
        expires = int(time.time()) + self._put_seconds
        query = {
            "expires": str(expires),
            "content_type": content_type,
            "size": str(size),
            "signature": self._signature("PUT", key, expires, (content_type, str(size))),
        }
        headers = {"Content-Type": content_type, "Content-Length": str(size)}
        return Presigned(self._url(key, query), headers, datetime.fromtimestamp(expires, UTC))

    def presign_get(self, key: uuid.UUID, filename: str) -> str:
        # Rounded up to the minute: every read within a minute hands out the same URL, which
        # clients and proxies can cache.
        expires = (int(time.time()) + self._get_seconds + 59) // 60 * 60
        signature = self._signature("GET", key, expires, (filename,))
        return self._url(key, {"expires": str(expires), "filename": filename, "signature": signature})

    def verify(
        self,
        method: str,
        key: uuid.UUID,
        expires: str | None,
        signature: str | None,
        bound: tuple[str, ...],
        *,
        now: float | None = None,
    ) -> None:
        """Raise BadSignature unless the URL's signature is ours, for this request and the values it
        binds (a PUT's content type and size, a GET's filename), and current."""
        when = _expiry(expires)
        if when is None or not signature:
            raise BadSignature("The URL is missing its expiry or signature.")
        expected = self._signature(method, key, when, bound)
        # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500 before).
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogatepass")):
            raise BadSignature("The URL's signature does not match.")
        if when < (time.time() if now is None else now):
            raise BadSignature("The URL has expired.")

    def _paths(self, key: uuid.UUID) -> tuple[Path, Path]:
        return self.root / str(key), self.root / f"{key}.type"

    async def head(self, key: uuid.UUID) -> StoredObject | None:
        return await asyncio.to_thread(self._head, key)

    def _head(self, key: uuid.UUID) -> StoredObject | None:
        data, kind = self._paths(key)
        try:
            return StoredObject(data.stat().st_size, kind.read_text())
        except FileNotFoundError:
            return None

    async def delete(self, key: uuid.UUID) -> None:
        await asyncio.to_thread(self._delete, key)

    def _delete(self, key: uuid.UUID) -> None:
        # The bytes first: a head() between the two finds nothing, never bytes without a type.
        for path in self._paths(key):
            path.unlink(missing_ok=True)

    async def write(
        self, key: uuid.UUID, content_type: str, chunks: AsyncIterator[bytes], *, size: int
    ) -> bool:
        """Store exactly `size` bytes under the key, once; False, storing nothing, when fewer came,
        and FileExistsError when the key holds bytes already. Readers see the whole object or none
        of it: a temporary file linked into place, its content type first."""
        data, kind = self._paths(key)
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        temporary = self.root / f".{key}.{uuid.uuid4().hex}.part"
        handle: IO[bytes] = await asyncio.to_thread(temporary.open, "wb")
        written = 0
        try:
            with handle:
                async for chunk in chunks:
                    await asyncio.to_thread(handle.write, chunk)
                    written += len(chunk)
            if written != size:
                return False
            await asyncio.to_thread(_replace_text, kind, content_type)
            # A hard link, not a rename: of two PUTs racing to store one upload, one wins and the
            # other fails (FileExistsError), so stored bytes never change under a sent message.
            await asyncio.to_thread(os.link, temporary, data)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(temporary.unlink)

    async def read(self, key: uuid.UUID) -> tuple[StoredObject, AsyncIterator[bytes]] | None:
        found = await self.head(key)
        if found is None:
            return None
        data, _ = self._paths(key)
        try:
            handle: IO[bytes] = await asyncio.to_thread(data.open, "rb")
        except FileNotFoundError:
            return None
        return found, _chunks(handle)


def _replace_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    temporary.write_text(text)
    os.replace(temporary, path)


async def _chunks(handle: IO[bytes]) -> AsyncIterator[bytes]:
    with handle:
        while chunk := await asyncio.to_thread(handle.read, _CHUNK):
            yield chunk


def _expiry(text: str | None) -> int | None:
    """A signed URL's `expires`, exactly as `presign_*` write it (unix seconds); None for anything
    else, which no signature of ours covers."""
    try:
        when = parse_int(text or "", max_digits=12)
    except ValueError:
        return None
    return when if str(when) == text else None
