"""Configuration for every process type, read from the environment and an optional `.env`."""

from __future__ import annotations

import ipaddress
import secrets
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from chat.domain import ratelimit
from chat.jobqueue.keys import DEFAULT_QUEUE

EMBEDDED_DATABASE_URL = "sqlite+aiosqlite:///./headless-chat.db"
EMBEDDED_REDIS_URL = "memory://"
MIN_SECRET_KEY_LENGTH = 32


class Settings(BaseSettings):
    """Everything a process needs to know about its environment.

    `environment` decides how strict startup is: `production` (the default, so a forgotten
    variable fails loudly) demands a strong SECRET_KEY and real Postgres/Redis URLs; `dev` and
    `test` fall back to the embedded SQLite + in-process Redis and a throwaway key.
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    environment: Literal["production", "dev", "test"] = "production"
    database_url: str = EMBEDDED_DATABASE_URL
    redis_url: str = EMBEDDED_REDIS_URL
    # standalone: REDIS_URL is the Redis. sentinel: REDIS_URL names the sentinels
    # (redis+sentinel://host:port,host:port/db) and REDIS_SENTINEL_MASTER the master's name.
    # cluster: REDIS_URL names any one node of a Redis Cluster (db 0).
    redis_mode: Literal["standalone", "sentinel", "cluster"] = "standalone"
    redis_sentinel_master: str = "mymaster"
    # The queue shards a conversation's writes are hashed onto, each in one hash slot with the
    # conversation's own keys (`chat.jobqueue.shards`). Unset: 16 on a cluster, else 1. Changing it
    # moves conversations to other shards: drain the queue first.
    queue_shards: int | None = Field(default=None, ge=1, le=1024)
    # The shards this worker claims from ("0,3-5"); empty: all of them.
    worker_shards: str = ""
    # none: 202 once the queue's Redis primary has the write. replica: also once a replica has it
    # (WAIT), else 503; a primary that dies right after answering then loses nothing.
    accept_durability: Literal["none", "replica"] = "none"
    accept_replica_timeout_ms: int = Field(default=500, ge=1, le=60000)
    secret_key: SecretStr = SecretStr("")
    algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    access_token_expire_minutes: int = Field(default=15, ge=1)
    refresh_token_expire_days: int = Field(default=30, ge=1)
    # App tokens: JWTs the app's backend signs for its users (chat/identity/apptokens.py). HS256
    # with APP_JWT_SECRET, and/or RS256, ES256, EdDSA with the keys APP_JWKS_URL serves.
    app_jwt_secret: SecretStr = SecretStr("")
    # off: only the app's tokens sign users in; register and login answer 404 and leave the docs.
    password_auth: Literal["on", "off"] = "on"
    app_jwks_url: str = ""
    app_jwt_issuer: str = ""
    app_jwt_audience: str = ""
    app_jwt_max_ttl_seconds: int = Field(default=86400, ge=1)
    app_jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    # An unknown `kid` fetches the JWKS again at most this often (a flood of made-up kids cannot
    # make us hammer the app's server); also the shortest a fetched JWKS is kept.
    app_jwks_min_refresh_seconds: float = Field(default=60, gt=0)

    # Argon2id cost; tests lower it, production keeps argon2-cffi's RFC 9106 "low memory" profile.
    password_hash_time_cost: int = Field(default=3, ge=1)
    password_hash_memory_kib: int = Field(default=65536, ge=8)

    max_body_bytes: int = 64 * 1024
    database_pool_size: int = Field(default=10, ge=1)
    # A request that cannot get a connection this fast answers 503 instead of queueing forever.
    database_pool_timeout_seconds: float = Field(default=5, gt=0)
    # Argon2 costs 64 MiB and tens of ms of CPU per login; this many run at once, the rest wait
    # their turn without holding a database connection.
    password_hash_concurrency: int = Field(default=4, ge=1)

    # Queue and events.
    queue_name: str = DEFAULT_QUEUE
    job_max_tries: int = Field(default=12, ge=1)
    # A job that meets Postgres, Redis or the object store away spends no try: it waits, its
    # back-off growing with its age up to JOB_OUTAGE_RETRY_MAX_SECONDS (how soon a backlog drains
    # once the dependency is back), and is dead-lettered only once older than JOB_OUTAGE_MAX_SECONDS.
    job_outage_max_seconds: float = Field(default=86400, gt=0)
    job_outage_retry_max_seconds: float = Field(default=10, gt=0)
    job_timeout_seconds: float = Field(default=30, gt=0)
    job_keep_result_seconds: int = Field(default=86400, ge=1)
    worker_max_jobs: int = Field(default=50, ge=1)
    worker_poll_seconds: float = Field(default=0.5, gt=0)
    # The worker's /metrics port (else $PORT); the first of a range, so workers sharing a host each
    # take the next free one (workers/__main__.py).
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # A worker beats every few seconds; one whose record outlives no beat for the ttl is dead, and a
    # live worker releases its jobs. A stopping worker gives its running jobs the grace to finish.
    worker_heartbeat_seconds: float = Field(default=2.0, gt=0)
    worker_heartbeat_ttl_seconds: float = Field(default=8.0, gt=0)
    worker_shutdown_grace_seconds: float = Field(default=5.0, ge=0)
    dead_letter_max_count: int = Field(default=10_000, ge=1)
    dead_letter_max_age_days: float = Field(default=7, gt=0)
    event_stream_maxlen: int = Field(default=1000, ge=10)
    # Rooms (docs/design/fanout.md): a conversation of this many members or more has its events
    # stored once in its own stream and published once to every push process, not once a member.
    large_room_members: int = Field(default=200, ge=2)
    room_stream_maxlen: int = Field(default=10_000, ge=10)
    room_stream_retention_seconds: int = Field(default=86_400, ge=60)
    # A room member's resume reads every stream but the position's own from this long before it:
    # across streams entries are not written in id order within a millisecond, and on a cluster the
    # streams live on nodes whose clocks differ. Unset: 0 on one Redis (Sentinel too), 1000 on a cluster.
    resume_overlap_ms: int | None = Field(default=None, ge=0, le=60_000)
    typing_interval_seconds: float = Field(default=1.0, gt=0)
    # How long Redis answers repeats of a client_id by itself (about 100 bytes per message);
    # older repeats are recognised by the worker: stored once, no second event (docs/api.md).
    client_id_claim_seconds: int = Field(default=7 * 86400, ge=60)

    # Rate limits in the `limits` notation (N/second|minute|hour, N/15minutes), or "off"; see
    # docs/api.md. The socket limit is a count of open WebSockets, not a rate.
    rate_limit_login_per_username: str = "10/15minutes"
    rate_limit_login_per_address: str = "100/minute"
    rate_limit_register_per_address: str = "20/hour"
    rate_limit_sends_per_user: str = "20/second"
    rate_limit_uploads_per_user: str = "60/minute"
    # Calls to /api/v1/server/* per server key.
    rate_limit_server_per_key: str = "1000/second"
    rate_limit_sockets_per_user: int | None = 20
    rate_limit_client_frames: str = "20/second"
    # Browser origins allowed to call the api (comma-separated, e.g. https://app.example.com);
    # none by default, "*" for any.
    cors_allowed_origins: str = ""
    # Proxies whose X-Forwarded-For is believed (CIDRs, comma-separated); the client address is
    # the first hop from the right that is not one of them. No server of ours rewrites the peer
    # address from the header itself (chat/infra/serving.py): this is the only rule.
    trusted_proxies: str = ""
    # A connection to the api or push port that has not sent a request's headers this long after
    # it opened (or after it began its next request) is closed: slow-header clients hold no socket.
    http_header_timeout_seconds: float = Field(default=10, gt=0)
    # text: a line for people; json: one object a line for log pipelines (chat/infra/logformat.py).
    log_format: Literal["text", "json"] = "text"

    # Webhooks (docs/api.md). A delivery is retried on a timeout, a connection error or a non-2xx
    # answer, BACKOFF * 2^(try - 1) seconds later (capped), and dead-lettered after MAX_TRIES.
    webhook_timeout_seconds: float = Field(default=10, gt=0)
    webhook_max_tries: int = Field(default=8, ge=1)
    # Deliveries run in slots of their own (`webhook_queue_name`), beside WORKER_MAX_JOBS: a
    # receiver that hangs holds these, never the slots that store messages.
    webhook_max_jobs: int = Field(default=20, ge=1)
    webhook_backoff_seconds: float = Field(default=1, gt=0)
    webhook_backoff_max_seconds: float = Field(default=600, gt=0)
    # How stale a process's copy of the registered webhooks may get for deliveries (a deleted
    # webhook's last attempts). Dispatch asks for the list as of its job's enqueue time instead.
    webhook_registry_refresh_seconds: float = Field(default=1.0, ge=0)
    # Attachments. With S3_BUCKET set they live in that S3-compatible bucket, reached through
    # presigned URLs; without it, in UPLOADS_DIR on local disk, served by the api itself under
    # URLs it signs (dev mode, single-host installs). See docs/operations.md.
    upload_max_bytes: int = Field(default=25 * 1024 * 1024, ge=1)
    # S3 refuses presigned URLs valid for more than 7 days.
    upload_url_expire_seconds: int = Field(default=900, ge=1, le=7 * 86400)
    download_url_expire_seconds: int = Field(default=3600, ge=1, le=7 * 86400)
    uploads_dir: str = "./uploads"
    # An upload no send named within this long is discarded, and no send may name it any more.
    upload_unsent_ttl_seconds: int = Field(default=86400, ge=60)
    # How often one of the workers deletes the bytes of discarded uploads (and of deleted messages).
    upload_sweep_seconds: float = Field(default=300, gt=0)
    # Bytes one user may announce at POST /uploads per UTC day (by each file's declared size);
    # "off" or 0 for no quota.
    upload_bytes_per_user_per_day: int | None = Field(default=1024**3, ge=0)
    # Where clients reach the api (https://chat.example.com), prefixed to local-disk upload and
    # download URLs; empty leaves them relative to the api's own address.
    public_api_url: str = ""
    s3_bucket: str = ""
    # Empty: AWS's own endpoint for the region; else MinIO, R2, moto and the like.
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    # Empty: boto3's own credential chain (instance roles, ~/.aws).
    s3_access_key_id: str = ""
    s3_secret_access_key: SecretStr = SecretStr("")
    # Most S3-compatible servers want path-style (endpoint/bucket/key) addressing.
    s3_addressing_style: Literal["path", "virtual", "auto"] = "path"

    # Push process. Where clients reach it (host:port), for the published protocol description.
    push_public_host: str = "localhost:8001"
    push_send_queue_size: int = Field(default=512, ge=1)
    push_socket_sndbuf: int = Field(default=65536, ge=4096)
    push_ping_interval_seconds: float = Field(default=20, gt=0)
    presence_ttl_seconds: int = Field(default=60, ge=5)

    @field_validator(
        "rate_limit_login_per_username",
        "rate_limit_login_per_address",
        "rate_limit_register_per_address",
        "rate_limit_sends_per_user",
        "rate_limit_uploads_per_user",
        "rate_limit_server_per_key",
        "rate_limit_client_frames",
    )
    @classmethod
    def _rate(cls, value: str) -> str:
        return ratelimit.validate(value)

    @field_validator("rate_limit_sockets_per_user", "upload_bytes_per_user_per_day", mode="before")
    @classmethod
    def _count(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() == ratelimit.OFF else value

    @field_validator("upload_bytes_per_user_per_day")
    @classmethod
    def _zero_is_off(cls, value: int | None) -> int | None:
        return value or None

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        for part in filter(None, (p.strip() for p in value.split(","))):
            ipaddress.ip_network(part, strict=False)  # a ValueError names the bad entry
        return value

    @property
    def shard_count(self) -> int:
        if self.queue_shards is not None:
            return self.queue_shards
        return 16 if self.redis_mode == "cluster" else 1

    @field_validator("worker_shards")
    @classmethod
    def _shard_list(cls, value: str) -> str:
        parse_shard_list(value)  # a ValueError names the bad part
        return value

    @property
    def resume_overlap(self) -> int:
        if self.resume_overlap_ms is not None:
            return self.resume_overlap_ms
        return 1000 if self.redis_mode == "cluster" else 0

    @property
    def webhook_queue_name(self) -> str:
        """The queue of webhook deliveries: next to `queue_name`, served by the same workers."""
        return f"{self.queue_name}:webhooks"

    @property
    def trusted_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [
            ipaddress.ip_network(p.strip(), strict=False)
            for p in self.trusted_proxies.split(",")
            if p.strip()
        ]

    @model_validator(mode="after")
    def _check_production(self) -> Settings:
        if self.worker_heartbeat_ttl_seconds <= self.worker_heartbeat_seconds:
            raise ValueError("WORKER_HEARTBEAT_TTL_SECONDS must be longer than WORKER_HEARTBEAT_SECONDS")
        if self.upload_unsent_ttl_seconds <= self.upload_url_expire_seconds:
            # Else an upload would be discarded while its client may still be sending the bytes.
            raise ValueError("UPLOAD_UNSENT_TTL_SECONDS must be longer than UPLOAD_URL_EXPIRE_SECONDS")
        _check_app_secret(self)
        if self.environment != "production":
            if not self.secret_key.get_secret_value():
                # A per-process random key: tokens survive only within one dev process, by design.
                self.secret_key = SecretStr(secrets.token_urlsafe(48))
            return self
        problems = []
        if len(self.secret_key.get_secret_value()) < MIN_SECRET_KEY_LENGTH:
            problems.append(
                f"SECRET_KEY must be set to a random string of at least {MIN_SECRET_KEY_LENGTH} characters"
                " (for example: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        if self.redis_mode != "standalone" and self.redis_url.startswith("memory://"):
            problems.append(f"REDIS_MODE={self.redis_mode} needs a real REDIS_URL, not memory://")
        if self.redis_url.startswith("memory://"):
            problems.append(
                "REDIS_URL=memory:// only works inside one process (dev mode); "
                "set REDIS_URL to a real Redis, or ENVIRONMENT=dev"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _check_app_secret(settings: Settings) -> None:
    app_secret = settings.app_jwt_secret.get_secret_value()
    if not app_secret:
        return
    if len(app_secret.encode()) < MIN_SECRET_KEY_LENGTH:
        raise ValueError(f"APP_JWT_SECRET must be at least {MIN_SECRET_KEY_LENGTH} bytes")
    if app_secret == settings.secret_key.get_secret_value():
        # Else the app's backend could sign our own access tokens (any user id) with it.
        raise ValueError("APP_JWT_SECRET must differ from SECRET_KEY")


def parse_shard_list(value: str) -> list[int]:
    """ "0,3-5" → [0, 3, 4, 5]; empty → [] (every shard)."""
    shards: list[int] = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        first, _, last = part.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise ValueError(f"WORKER_SHARDS: {part!r} is not a shard number or range like 3-5")
        shards.extend(range(int(first), int(last or first) + 1))
    return sorted(set(shards))
