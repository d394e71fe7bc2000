"""A real S3-compatible server for the tests: moto's server mode on a free port, one bucket."""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REGION = "us-east-1"
KEY_ID, SECRET = "test-key-id", "test-secret-key"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str
    client: S3Client

    def settings(self) -> dict[str, Any]:
        """Settings overrides that put attachments in this server's bucket."""
        return {
            "s3_endpoint_url": self.endpoint,
            "s3_bucket": self.bucket,
            "s3_region": REGION,
            "s3_access_key_id": KEY_ID,
            "s3_secret_access_key": SECRET,
            "s3_addressing_style": "path",
        }

    def env(self) -> dict[str, str]:
        return {name.upper(): str(value) for name, value in self.settings().items()}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def moto_s3() -> Iterator[S3Server]:
    # werkzeug logs every request it serves; the tests' output has no use for them.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client: S3Client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )
        bucket = f"attachments-{uuid.uuid4().hex[:8]}"
        client.create_bucket(Bucket=bucket)
        yield S3Server(endpoint, bucket, client)
    finally:
        server.stop()
