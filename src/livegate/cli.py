"""The ``livegate`` command: ``serve``, ``worker``, ``token``, ``db upgrade|current``,
``contract generate|check``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_contract(args: argparse.Namespace) -> int:
    from livegate.contract import check, generate
    from livegate.contract.generate import find_root

    root = find_root(Path(args.root) if args.root else None)
    if args.action == "generate":
        generate(root)
        return 0
    return 1 if check(root) else 0


def _cmd_token(args: argparse.Namespace) -> int:
    from livegate.config import Config
    from livegate.protocol.auth import mint_token

    config = Config.from_env()
    if not config.jwt_secret:
        print("livegate token: no LIVEGATE_JWT_SECRET to sign with (set it, or LIVEGATE_DEV=1 for the "
              "dev-only secret); RS256/ES256 tokens come from your identity provider", file=sys.stderr)
        return 2
    config.warn_if_insecure()
    print(mint_token(config.jwt_secret, args.sub, ttl_seconds=args.ttl, issuer=config.jwt_issuer,
                     audience=config.jwt_audience))
    return 0


def _cmd_db(args: argparse.Namespace) -> int:
    """``upgrade``: migrate the configured database (``LIVEGATE_DATABASE_URL``, else the
    SQLite file under ``LIVEGATE_DATA_DIR``) to the newest revision; ``current``: print its
    revision without changing anything (``none`` for an empty or pre-Alembic database)."""
    import asyncio

    from livegate.config import Config
    from livegate.errors import StoreUnavailable
    from livegate.store import SqlStore

    store = SqlStore.from_config(Config.from_env())

    async def run() -> str | None:
        await store.open(migrate_schema=args.action == "upgrade")
        try:
            return await store.current_revision()
        finally:
            await store.close()

    try:
        revision = asyncio.run(run())
    except StoreUnavailable as exc:
        print(f"livegate db {args.action}: {exc.message}", file=sys.stderr)
        return 1
    print(revision or "none")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from livegate.config import Config

    config = Config.from_env(host=args.host, port=args.port)
    problems = config.problems()
    if problems:  # before importing the server: a refusal is quick
        for problem in problems:
            print(f"livegate serve: {problem}", file=sys.stderr)
        return 2
    from livegate.server import serve

    serve(config)
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    import asyncio

    from livegate.config import Config
    from livegate.worker import problems, run_worker

    config = Config.from_env()
    found = problems(config)
    if found:
        for problem in found:
            print(f"livegate worker: {problem}", file=sys.stderr)
        return 2
    asyncio.run(run_worker(config))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="livegate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve_p = sub.add_parser("serve", help="run the gateway in this process")
    serve_p.add_argument("--host", default=None, help="bind address (default LIVEGATE_HOST or 127.0.0.1)")
    serve_p.add_argument("--port", type=int, default=None, help="port (default LIVEGATE_PORT or 8000)")
    serve_p.set_defaults(func=_cmd_serve)

    worker_p = sub.add_parser("worker", help="run generations (the tools and the job worker) without serving sockets")
    worker_p.set_defaults(func=_cmd_worker)

    token_p = sub.add_parser("token", help="print a user JWT signed with the configured HS256 secret")
    token_p.add_argument("sub", help="the user id (JWT sub)")
    token_p.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    token_p.set_defaults(func=_cmd_token)

    db_p = sub.add_parser("db", help="migrate the generation store or show its schema revision")
    db_p.add_argument("action", choices=["upgrade", "current"])
    db_p.set_defaults(func=_cmd_db)

    contract_p = sub.add_parser("contract", help="generate or check code derived from the specs")
    contract_p.add_argument("action", choices=["generate", "check"])
    contract_p.add_argument("--root", default=None, help="repository root (default: found from cwd)")
    contract_p.set_defaults(func=_cmd_contract)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
