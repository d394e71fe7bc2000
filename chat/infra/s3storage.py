"""Attachments on S3-compatible storage (AWS S3, MinIO, R2, moto), through boto3.

Imported only when S3_BUCKET is set (`chat.infra.stores.create_storage`): the push process never
loads boto3, the api and the worker only when they use it. Presigning is local computation;
HEAD is a blocking HTTP call, so it runs in a thread.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from chat.infra.storage import Presigned, StorageUnavailable, StoredObject, content_disposition
from chat.settings import Settings

if TYPE_CHECKING:  # the stubs are a dev dependency
    from mypy_boto3_s3 import S3Client

_MISSING = {"404", "NoSuchKey", "NotFound"}


class S3Storage:
    def __init__(self, settings: Settings) -> None:
        self._bucket = settings.s3_bucket
        self._put_seconds = settings.upload_url_expire_seconds
        self._get_seconds = settings.download_url_expire_seconds
        secret = settings.s3_secret_access_key.get_secret_value()
        self._client: S3Client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url or None,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id or None,
            aws_secret_access_key=secret or None,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": settings.s3_addressing_style},
                # A store that does not answer fails the HEAD fast: the api says 503, the worker
                # retries the job with back-off, instead of either hanging on it.
                connect_timeout=3,
                read_timeout=10,
                retries={"max_attempts": 2, "mode": "standard"},
            ),
        )

    def presign_put(self, key: uuid.UUID, content_type: str, size: int) -> Presigned:
        # Content-Type and Content-Length are signed headers: S3 refuses a PUT with other values.
        # If-None-Match: * makes the PUT a create: once the bytes are stored (and checked, and
        # sent), a second PUT with the same URL is refused (412) instead of replacing them.
        url = self._client.generate_presigned_url(
            "put_object",
            Params={
                "Bucket": self._bucket,
                "Key": str(key),
                "ContentType": content_type,
                "ContentLength": size,
                "IfNoneMatch": "*",
            },
            ExpiresIn=self._put_seconds,
        )
        headers = {"Content-Type": content_type, "Content-Length": str(size), "If-None-Match": "*"}
        return Presigned(url, headers, datetime.now(UTC) + timedelta(seconds=self._put_seconds))

    def presign_get(self, key: uuid.UUID, filename: str) -> str:
        return self._client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self._bucket,
                "Key": str(key),
                "ResponseContentDisposition": content_disposition(filename),
            },
            ExpiresIn=self._get_seconds,
        )

    async def head(self, key: uuid.UUID) -> StoredObject | None:
        try:
            found = await asyncio.to_thread(self._client.head_object, Bucket=self._bucket, Key=str(key))
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if code in _MISSING or status == 404:
                return None
            if status >= 500 or status in (429, 503):
                raise StorageUnavailable(f"object storage answered {status}") from exc
            raise
        except (BotoConnectionError, HTTPClientError) as exc:
            raise StorageUnavailable(f"object storage did not answer: {exc}") from exc
        return StoredObject(int(found["ContentLength"]), found.get("ContentType", ""))

    async def delete(self, key: uuid.UUID) -> None:
        # S3 answers 204 whether or not the key held anything.
        try:
            await asyncio.to_thread(self._client.delete_object, Bucket=self._bucket, Key=str(key))
        except ClientError as exc:
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if status >= 500 or status == 429:
                raise StorageUnavailable(f"object storage answered {status}") from exc
            raise
        except (BotoConnectionError, HTTPClientError) as exc:
            raise StorageUnavailable(f"object storage did not answer: {exc}") from exc
