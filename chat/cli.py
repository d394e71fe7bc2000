"""`headless-chat`: the operator's command line (admins, and the job queue without a browser).

    headless-chat make-admin NAME | revoke-admin NAME
    headless-chat server-keys create NAME | list | revoke NAME   keys for your app's backend
    headless-chat jobs stats | workers | failed | show ID | retry ID | discard ID  [--json]
    headless-chat jobs check [--max-latency S]     exit 0 healthy, 1 no live worker, 2 too slow

Reads the same settings as the processes (DATABASE_URL for admins, REDIS_URL for jobs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError, model_validator
from redis.asyncio import Redis

from chat.errors import Conflict, NotFound
from chat.infra.db import create_engine, create_sessionmaker
from chat.infra.process import setting_problems
from chat.infra.redisclient import create_redis
from chat.jobqueue import heartbeats, monitor
from chat.jobqueue.lanes import Queues
from chat.settings import EMBEDDED_DATABASE_URL, Settings
from chat.usecases import deadletters, server_keys, users

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


async def set_admin(settings: Settings, username: str, admin: bool) -> bool:
    engine = create_engine(settings)
    try:
        return await users.set_admin(create_sessionmaker(engine), username, admin)
    finally:
        await engine.dispose()


def _admin(settings: Settings, args: argparse.Namespace) -> int:
    grant = args.command == "make-admin"
    if not asyncio.run(set_admin(settings, args.username, grant)):
        print(f"no user named {args.username!r}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.username}: admin={'yes' if grant else 'no'}")
    return EXIT_OK


def _print(args: argparse.Namespace, data: Any, human: Callable[[Any], str]) -> None:
    if args.json:
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z).decode())
    else:
        print(human(data))


def _ago(iso: str | None) -> str:
    if not iso:
        return "-"
    seconds = (datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds()
    return f"{seconds:.1f} s ago"


def _stats_text(counts: dict[str, Any]) -> str:
    lines = [
        f"queued       {counts['queued']}",
        f"deferred     {counts['deferred']}",
        f"in progress  {counts['in_progress']}",
        f"dead         {counts['dead']}",
        f"workers      {counts['workers']}",
        f"oldest queued job waited {counts['oldest_queued_age_s']} s",
    ]
    for name, by_state in sorted(counts.get("functions", {}).items()):
        lines.append(f"  {name}: {by_state['queued']} queued, {by_state['in_progress']} in progress")
    return "\n".join(lines)


def _workers_text(workers: list[dict[str, Any]]) -> str:
    if not workers:
        return "no live worker"
    return "\n".join(
        f"{w['id']}  {w['host']} pid {w['pid']}  running {w['running']}/{w['max_jobs']}"
        f"  done {w['done']}  failed {w['failed']}  last beat {_ago(w['last_beat_at'])}"
        for w in workers
    )


def _failed_text(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "no dead letters"
    return "\n".join(
        f"{e['failed_at']}  {e['job_id']}  {e['function']}  tries {e['tries']}  {e['error']}" for e in entries
    )


def _job_text(job: dict[str, Any]) -> str:
    lines = [f"{k}: {v}" for k, v in job.items() if k not in ("args", "traceback")]
    lines.append("args: " + orjson.dumps(job.get("args"), option=orjson.OPT_INDENT_2).decode())
    if job.get("traceback"):
        lines.append(str(job["traceback"]))
    return "\n".join(lines)


async def _jobs(settings: Settings, args: argparse.Namespace) -> int:
    redis = create_redis(settings)
    try:
        return await _jobs_command(redis, Queues.from_settings(settings), args)
    finally:
        await redis.aclose(close_connection_pool=True)


async def _jobs_command(redis: Redis, queues: Queues, args: argparse.Namespace) -> int:
    action = args.action
    if action == "stats":
        _print(args, await monitor.queue_counts(redis, queues.every, by_function=True), _stats_text)
    elif action == "workers":
        _print(args, await heartbeats.live(redis), _workers_text)
    elif action == "failed":
        entries, _ = await deadletters.page(redis, limit=args.limit, function=args.function)
        _print(args, entries, _failed_text)
    elif action == "show":
        job = await monitor.job_detail(redis, queues.for_job(args.job_id), args.job_id)
        if job is None:
            print(f"no job {args.job_id!r}", file=sys.stderr)
            return EXIT_FAILED
        _print(args, job, _job_text)
    elif action == "retry":
        try:
            await deadletters.retry(redis, queues, args.job_id)
        except (NotFound, Conflict) as exc:
            why = "is queued or running already" if isinstance(exc, Conflict) else "is not a dead letter"
            print(f"{args.job_id} {why}", file=sys.stderr)
            return EXIT_FAILED
        print(f"{args.job_id} queued again")
    elif action == "discard":
        try:
            await deadletters.discard(redis, args.job_id)
        except NotFound:
            print(f"{args.job_id} is not a dead letter", file=sys.stderr)
            return EXIT_FAILED
        print(f"{args.job_id} discarded")
    elif action == "check":
        # The messages' queue: deliveries waiting on a customer's slow receiver are no sign that
        # the workers fall behind, and scaling workers would not make that receiver faster.
        counts = await monitor.queue_counts(redis, queues.shard_queues(queues.messages))
        code, reason = monitor.check(counts, args.max_latency)
        _print(args, {"status": code, "reason": reason, **counts}, lambda _: reason)
        return code
    return EXIT_OK


async def _server_keys(settings: Settings, args: argparse.Namespace) -> int:
    engine = create_engine(settings)
    sessions = create_sessionmaker(engine)
    try:
        if args.action == "create":
            key = await server_keys.create(sessions, args.name)
            print(f"server key {args.name!r} (shown once; only its hash is kept):")
            print(key)  # alone on the last line, for `| tail -n 1`
        elif args.action == "list":
            for info in await server_keys.list_keys(sessions):
                used = info.last_used_at.isoformat() if info.last_used_at else "never"
                state = f"revoked {info.revoked_at.isoformat()}" if info.revoked_at else "live"
                print(f"{info.name}  made {info.created_at.isoformat()}  last used {used}  {state}")
        else:
            await server_keys.revoke(sessions, args.name)
            print(f"server key {args.name!r} revoked")
    except (Conflict, NotFound) as exc:
        print(f"headless-chat: {exc.detail}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        await engine.dispose()
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="headless-chat", description=__doc__.split("\n\n")[0])
    commands = root.add_subparsers(dest="command", required=True)
    grant = commands.add_parser("make-admin", help="let a registered user call /admin/* and see every job")
    grant.add_argument("username")
    revoke = commands.add_parser("revoke-admin", help="take admin rights away again")
    revoke.add_argument("username")

    keys = commands.add_parser("server-keys", help="keys your app's backend calls /api/v1/server/* with")
    key_actions = keys.add_subparsers(dest="action", required=True)
    create = key_actions.add_parser("create", help="make a key and print it (once: only its hash is kept)")
    create.add_argument("name")
    key_actions.add_parser("list", help="names, when made, when last used, and whether revoked")
    ended = key_actions.add_parser("revoke", help="end a key at once")
    ended.add_argument("name")

    jobs = commands.add_parser("jobs", help="the job queue: counts, workers, dead letters, health")
    actions = jobs.add_subparsers(dest="action", required=True)
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print JSON instead of text")
    actions.add_parser("stats", parents=[output], help="jobs by state and function, and the queue latency")
    actions.add_parser("workers", parents=[output], help="live workers and what they hold")
    failed = actions.add_parser("failed", parents=[output], help="dead letters, newest first")
    failed.add_argument("--function", help="only jobs of this function")
    failed.add_argument("--limit", type=int, default=50)
    single = (("show", "one job in full"), ("retry", "re-queue a dead letter"), ("discard", "drop one"))
    for name, what in single:
        action = actions.add_parser(name, parents=[output], help=what)
        action.add_argument("job_id")
    check = actions.add_parser(
        "check", parents=[output], help="exit 0 healthy, 1 no live worker, 2 queue latency over --max-latency"
    )
    check.add_argument("--max-latency", type=float, default=None, metavar="S")
    return root


class ToolSettings(Settings):
    """The processes' settings without their startup checks: the command line signs no tokens
    (no SECRET_KEY needed) and reaches each service only if its command needs it."""

    @model_validator(mode="after")
    def _check_production(self) -> ToolSettings:
        return self


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = ToolSettings()
    except ValidationError as exc:
        problems = "; ".join(setting_problems(exc))
        print(f"headless-chat: the settings are not usable: {problems}", file=sys.stderr)
        return EXIT_USAGE
    if (
        args.command != "jobs"
        and "DATABASE_URL" not in os.environ
        and settings.database_url == EMBEDDED_DATABASE_URL
    ):
        # No database named: the dev server's (make dev), if there is one here.
        if not os.path.exists(EMBEDDED_DATABASE_URL.rsplit("///", 1)[1]):
            print(
                "headless-chat: set DATABASE_URL to the database the api uses"
                " (or run this where `make dev` keeps headless-chat.db)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        print(f"headless-chat: using the dev database ({settings.database_url})", file=sys.stderr)
    if args.command == "jobs":
        if settings.redis_url.startswith("memory://"):
            print(
                "headless-chat jobs: REDIS_URL=memory:// lives inside the dev server's process;"
                " set REDIS_URL to the Redis the workers use",
                file=sys.stderr,
            )
            return EXIT_USAGE
        return asyncio.run(_jobs(settings, args))
    if args.command == "server-keys":
        return asyncio.run(_server_keys(settings, args))
    return _admin(settings, args)


if __name__ == "__main__":
    raise SystemExit(main())
