"""Which store a process uses: S3-compatible storage when `S3_BUCKET` is set, else local disk.

Apart from `chat.infra.storage`, so that `chat.infra.s3storage` (which builds on it) is no import cycle.
"""

from __future__ import annotations

from chat.infra.storage import LocalStorage, Storage
from chat.settings import Settings


def create_storage(settings: Settings) -> Storage:
    if settings.s3_bucket:
        # Imported here: boto3 costs tens of MB and a second of start-up, for S3 users only.
        from chat.infra.s3storage import S3Storage

        return S3Storage(settings)
    return LocalStorage.from_settings(settings)
