"""`headless-chat` command line: operator tasks that have no REST call on purpose."""

from __future__ import annotations

import argparse
import asyncio
import sys

from sqlalchemy import update

from chat.db import create_engine
from chat.models import User
from chat.settings import Settings


async def set_admin(settings: Settings, username: str, admin: bool) -> bool:
    engine = create_engine(settings)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(
                update(User).where(User.username_key == username.lower()).values(is_admin=admin)
            )
            return bool(result.rowcount)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="headless-chat", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    grant = commands.add_parser("make-admin", help="let a registered user call /admin/* and see every job")
    grant.add_argument("username")
    revoke = commands.add_parser("revoke-admin", help="take admin rights away again")
    revoke.add_argument("username")
    args = parser.parse_args(argv)

    settings = Settings()
    found = asyncio.run(set_admin(settings, args.username, args.command == "make-admin"))
    if not found:
        print(f"no user named {args.username!r}", file=sys.stderr)
        return 1
    print(f"{args.username}: admin={'yes' if args.command == 'make-admin' else 'no'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
