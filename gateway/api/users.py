"""``gateway users add|list|remove CONFIG``: the API's users in ``<data_dir>/users.json``."""

from __future__ import annotations

import argparse
import getpass
import sys

from gateway.api.auth import ROLES, UserFile, UsersError


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("users", help="API users: `users add|list|remove CONFIG ...`")
    usub = s.add_subparsers(dest="users_command", required=True, metavar="SUBCOMMAND")
    a = usub.add_parser("add", help="create or replace a user; prints its API token once")
    a.add_argument("config", help="gateway YAML config (the file goes under its data_dir)")
    a.add_argument("name", help="user name (letters, digits, '_.@-')")
    a.add_argument("--role", choices=ROLES, default="read", help="read or operator")
    a.add_argument("--password-stdin", action="store_true",
                   help="also set a password (for the web page's login), read from stdin")  # fmt: skip
    a.add_argument("--no-token", action="store_true", help="no API token (password only)")
    a.set_defaults(fn=cmd_users)
    ls = usub.add_parser("list", help="users and roles (never secrets)")
    ls.add_argument("config", help="gateway YAML config")
    ls.set_defaults(fn=cmd_users)
    rm = usub.add_parser("remove", help="remove a user (its tokens and sessions stop working)")
    rm.add_argument("config", help="gateway YAML config")
    rm.add_argument("name")
    rm.set_defaults(fn=cmd_users)


def cmd_users(args: argparse.Namespace) -> int:
    from gateway.cli import load_or_exit

    config = load_or_exit(args.config)
    users = UserFile(config.data_dir)
    try:
        if args.users_command == "list":
            for name, u in sorted(users.users().items()):
                has = [k for k in ("password", "tokens") if u.get(k)]
                print(f"{name}\t{u['role']}\t{','.join(has) or 'no credentials'}")
            return 0
        if args.users_command == "remove":
            users.remove(args.name)
            print(f"removed {args.name} from {users.path}", file=sys.stderr)
            return 0
        password = None
        if args.password_stdin:
            if sys.stdin.isatty():
                password = getpass.getpass(f"password for {args.name}: ")
            else:
                password = sys.stdin.readline().rstrip("\r\n")
        if args.no_token and password is None:
            raise UsersError(
                "--no-token needs --password-stdin: the user would have no credentials"
            )
        token = users.add(args.name, args.role, password, token=not args.no_token)
    except (UsersError, OSError) as exc:
        print(f"gateway users: {exc}", file=sys.stderr)
        return 1
    print(f"{args.name} ({args.role}) saved in {users.path}", file=sys.stderr)
    if token is not None:
        print(token)  # stdout: the token alone, for scripts; shown this once only
    return 0
