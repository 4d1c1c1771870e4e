"""`tradeops serve`: the console in a browser (console/web/server.py), one console process per
connection, on loopback unless told otherwise, behind a login per operator;
`serve add-user|remove-user|users` keep the logins (console/web/users.py)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from backend.errors import TradeopsError
from console.cli.context import Context, command

ORDER = 6


def register(sub: Any) -> None:
    p = command(
        sub,
        "serve",
        "serve the console to a browser (textual-serve): one console per connection, each signed by its "
        "operator's key, behind a login (add one with `tradeops serve add-user`)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8642)
    p.add_argument(
        "--behind-https",
        action="store_true",
        help="a TLS proxy is in front: cookies are Secure and the websocket is wss://",
    )
    p.add_argument("--max-consoles", type=int, default=8, help="console processes at most (default 8)")
    p.set_defaults(func=cmd_serve)
    ssub = p.add_subparsers(dest="serve_cmd", metavar="ACTION")
    q = command(
        ssub,
        "add-user",
        "add (or reset) an operator's login: prints a new password once; --key FILE (required) is the SSH key "
        "this operator's console signs with: a private key file, or a .pub whose key is in the server's ssh-agent",
    )
    q.add_argument("name")
    q.add_argument("--password-stdin", action="store_true", help="read the password from stdin instead")
    q.add_argument("--read-only", action="store_true", help="this login's console changes nothing")
    q.set_defaults(func=cmd_add_user)
    q = command(ssub, "remove-user", "remove an operator's login (their open sessions end at their next request)")
    q.add_argument("name")
    q.set_defaults(func=cmd_remove_user)
    q = command(ssub, "users", "the logins: name, signing key, read-only")
    q.set_defaults(func=cmd_users)


def _users(ctx: Context) -> Any:
    from console.web.users import Users

    return Users.of(ctx.data_dir)


def cmd_add_user(ctx: Context, args: argparse.Namespace) -> int:
    from gates import signing

    if not getattr(args, "key", None):
        raise TradeopsError(
            "which key does this operator sign with? pass --key FILE (a private key, or a .pub in ssh-agent)"
        )
    key = Path(args.key).expanduser().resolve()
    if not key.exists():
        raise TradeopsError(f"no key file {key}: give the operator's private key file, or a .pub in ssh-agent")
    signer = signing.signer_for(str(key))  # a key that cannot sign is refused now, not at the first approval
    name = args.name
    registered = _registered_name(ctx, signer.fingerprint)
    if registered and registered != name:
        raise TradeopsError(
            f"key {signer.fingerprint} is registered to {registered!r}, not {name!r}: "
            f"use `tradeops serve add-user {registered} --key {key}`, or the operator's own key"
        )
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
    users = _users(ctx)
    new = users.add(name, str(key), password, read_only=args.read_only)
    print(f"{name} logs in to `tradeops serve` and signs with {signer.fingerprint}")
    if registered is None:
        print(
            f"note: the stack is not running: check that {signer.fingerprint} is {name}'s key with "
            "`tradeops operators list`"
        )
    elif not registered:
        print(
            f"warning: {signer.fingerprint} is not in the operator registry yet: a lead adds it with "
            f"`tradeops operators add {name} --pubkey FILE.pub`; until then {name} can look but not sign"
        )
    if password is None:
        print(f"password (shown once): {new}")
    return 0


def _registered_name(ctx: Context, fingerprint: str) -> str | None:
    """The registry's name for the key ("" when it is not in it), or None without a stack."""
    from backend.bus import connection
    from backend.errors import TradeopsError as Error
    from gates import operators

    if connection.resolve_url(ctx.settings.redis_url, ctx.data_dir) is None:
        return None
    try:
        return operators.load(ctx.redis).name_of(fingerprint)
    except Error:
        return None


def cmd_remove_user(ctx: Context, args: argparse.Namespace) -> int:
    users = _users(ctx)
    users.remove(args.name)
    print(f"removed {args.name}'s login")
    return 0


def cmd_users(ctx: Context, args: argparse.Namespace) -> int:
    from console.cli._table import show

    users = _users(ctx)
    if not users.users:
        print(f"no logins in {users.path}: add one with `tradeops serve add-user NAME --key FILE`")
        return 0
    show(["NAME", "KEY", "READ-ONLY"], [(u.name, u.key, "yes" if u.read_only else "") for u in users.users.values()])
    return 0


def child(ctx: Context, user: Any) -> tuple[str, dict[str, str]]:
    """A console process for `user`: its command line and the environment naming who it is."""
    cmd = [sys.executable, "-m", "console.cli", "console"]
    if user.read_only:
        cmd.append("--read-only")
    env = {
        "TRADEOPS_OPERATOR": user.name,
        "TRADEOPS_SIGNING_KEY": user.key,
        "TRADEOPS_DATA_DIR": str(ctx.data_dir),
    }
    if ctx.settings.redis_url:  # in the environment, not on a command line anyone can read
        env["TRADEOPS_REDIS_URL"] = ctx.settings.redis_url
    config = getattr(ctx.args, "config", None)
    if config:
        env["TRADEOPS_CONFIG"] = str(Path(config).resolve())
    return shlex.join(cmd), env


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(ctx: Context, args: argparse.Namespace) -> int:
    from aiohttp import web

    from backend.bus import connection
    from console import keymap
    from console.web.server import ConsoleServer

    keymap.check(ctx.settings.keymap)  # every console it starts would refuse it
    users = _users(ctx)
    if not users.users:
        raise TradeopsError(
            f"no console logins in {users.path}: add one with `tradeops serve add-user NAME --key FILE` "
            "(nobody may open the console without one)"
        )
    if connection.resolve_url(ctx.settings.redis_url, ctx.data_dir) is None:
        raise TradeopsError(f"no running stack for {ctx.data_dir}: start one with `tradeops up` (or pass --redis-url)")
    if not _loopback(args.host) and not args.behind_https:
        print(
            f"warning: serving on {args.host} without TLS: passwords and keystrokes cross the network in clear; "
            "put it behind a TLS proxy and pass --behind-https",
            file=sys.stderr,
        )

    def say(line: str) -> None:
        print(f"serve: {line}", flush=True)

    server = ConsoleServer(
        users,
        lambda user: child(ctx, user),
        secure=args.behind_https,
        max_consoles=args.max_consoles,
        say=say,
        hosts={"localhost", "127.0.0.1", "::1", args.host} if _loopback(args.host) else None,
    )
    shown = f"[{args.host}]" if ":" in args.host else args.host
    say(
        f"the console for {ctx.data_dir} on http://{shown}:{args.port}/ "
        f"({len(users.users)} login{'s' if len(users.users) != 1 else ''}; pid {os.getpid()})"
    )
    web.run_app(server.make_app(), host=args.host, port=args.port, print=None, access_log=None)
    return 0
