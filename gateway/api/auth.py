"""API users: roles, hashed secrets in ``<data_dir>/users.json``, sessions for the web page.

Two roles: ``read`` (everything a GET shows) and ``operator`` (also acknowledge, write, reload,
enable/disable, poll once). A user has an API token (for scripts and Prometheus: ``Authorization:
Bearer <token>``), a password (for the page's login, or HTTP Basic), or both. Only hashes are
stored: the token's SHA-256 (it is 32 random bytes, so a fast hash is enough) and the password's
PBKDF2-HMAC-SHA256 (slow on purpose; computed in a worker thread, so a login does not stall the
event loop). PBKDF2 and not scrypt: scrypt's 16 MB working set would be three times the API's
whole memory budget on a Raspberry Pi.

A login (``POST /api/login``) returns a session token the page sends as a bearer token: never a
cookie, so a cross-site page cannot make the browser act with it (CSRF).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROLES = ("read", "operator")
USERS_FILE = "users.json"
PBKDF2_ITERATIONS = 200_000
SESSION_S = 12 * 3600.0
MAX_SESSIONS = 64
MAX_FAILURES = 5  # wrong passwords per user name within FAILURE_WINDOW_S; then locked
FAILURE_WINDOW_S = 60.0
NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}\Z")  # also valid as the `by` of an alarm ack


class UsersError(ValueError):
    """A users file that cannot be read or a request that cannot be done (the message says why)."""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str
    via: str  # loopback | token | session | password

    @property
    def operator(self) -> bool:
        return self.role == "operator"


def hash_password(password: str, iterations: int = PBKDF2_ITERATIONS) -> str:
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"pbkdf2_sha256${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, iterations, salt, digest = stored.split("$")
        if kind != "pbkdf2_sha256":
            return False
        got = hashlib.pbkdf2_hmac(
            "sha256", password.encode(), base64.b64decode(salt), int(iterations)
        )
        return hmac.compare_digest(got, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class UserFile:
    """``<data_dir>/users.json``: ``{"version": 1, "users": {name: {role, password, tokens}}}``.

    Written atomically with mode 0600; the server re-reads it when it changes, so
    ``gateway users add`` takes effect without a restart.
    """

    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / USERS_FILE
        self._stamp: tuple[int, int] | None = None
        self._users: dict[str, dict[str, Any]] = {}

    def users(self) -> dict[str, dict[str, Any]]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._users = None, {}
            return self._users
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._users = self._load()
            self._stamp = stamp
        return self._users

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise UsersError(f"{self.path}: unreadable ({exc}); fix or remove it") from None
        users = doc.get("users") if isinstance(doc, dict) and doc.get("version") == 1 else None
        if not isinstance(users, dict):
            raise UsersError(f"{self.path}: not a users file (version 1); fix or remove it")
        return {
            n: u
            for n, u in users.items()
            if isinstance(u, dict) and NAME.match(str(n)) and u.get("role") in ROLES
        }

    def save(self, users: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"version": 1, "users": users}, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def add(self, name: str, role: str, password: str | None, token: bool) -> str | None:
        """Create or replace ``name``; returns the new API token (shown once) if one was made."""
        if not NAME.match(name):
            raise UsersError(f"user name {name!r}: 1 to 64 letters, digits or '_.@-'")
        if role not in ROLES:
            raise UsersError(f"role {role!r}: one of {', '.join(ROLES)}")
        if password is not None and len(password) < 8:
            raise UsersError("password: at least 8 characters")
        users = dict(self.users())
        new_token = secrets.token_urlsafe(32) if token else None
        users[name] = {
            "role": role,
            "password": hash_password(password) if password is not None else None,
            "tokens": [token_hash(new_token)] if new_token else [],
        }
        self.save(users)
        return new_token

    def remove(self, name: str) -> None:
        users = dict(self.users())
        if name not in users:
            raise UsersError(f"no user {name!r} in {self.path}")
        del users[name]
        self.save(users)


class Authenticator:
    """Who a request comes from, by bearer token (API or session) or HTTP Basic."""

    def __init__(self, data_dir: str | Path, clock: Any = time.monotonic) -> None:
        self.file = UserFile(data_dir)
        self._clock = clock
        self._sessions: dict[str, tuple[str, float]] = {}  # token hash -> (user, expiry)
        # header hash -> (user, expiry, the stored hash it was checked against)
        self._basic_ok: dict[str, tuple[str, float, str]] = {}
        self._failures: dict[str, list[float]] = {}  # user name -> times of wrong passwords

    def locked(self, name: str) -> float:
        """Seconds until ``name`` may try a password again (0: now): guessing stays slow."""
        now = self._clock()
        recent = [t for t in self._failures.get(name, ()) if now - t < FAILURE_WINDOW_S]
        if recent:
            self._failures[name] = recent
        else:
            self._failures.pop(name, None)
        if len(recent) < MAX_FAILURES:
            return 0.0
        return FAILURE_WINDOW_S - (now - recent[0])

    def configured(self) -> bool:
        try:
            return bool(self.file.users())
        except UsersError:
            return True  # a broken file is not "no auth": refuse, do not open up

    async def identify(self, authorization: str) -> User | None:
        """The user of an ``Authorization`` header; None when the credentials are wrong."""
        scheme, _, cred = authorization.strip().partition(" ")
        users = self.file.users()
        now = self._clock()
        if scheme.lower() == "bearer" and cred:
            h = token_hash(cred.strip())
            sess = self._sessions.get(h)
            if sess is not None:
                name, expiry = sess
                if expiry > now and name in users:
                    return User(name, users[name]["role"], "session")
                del self._sessions[h]
            for name, u in users.items():
                if any(hmac.compare_digest(h, t) for t in u.get("tokens") or ()):
                    return User(name, u["role"], "token")
            return None
        if scheme.lower() == "basic" and cred:
            try:
                name, _, password = base64.b64decode(cred, validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            key = token_hash(authorization)
            stored = str((users.get(name) or {}).get("password"))
            cached = self._basic_ok.get(key)
            if cached is not None and cached[1] > now and cached[2] == stored:
                return User(name, users[name]["role"], "password")
            if await self.check(name, password):
                if len(self._basic_ok) >= MAX_SESSIONS:
                    self._basic_ok.clear()
                self._basic_ok[key] = (name, now + 300.0, stored)
                return User(name, users[name]["role"], "password")
        return None

    async def check(self, name: str, password: str) -> bool:
        """Password check in a worker thread (PBKDF2 takes a while on purpose); False without
        checking while ``name`` is locked after too many wrong passwords."""
        if self.locked(name):
            return False
        ok = await self._check(name, password)
        if not ok:
            if len(self._failures) >= 4 * MAX_SESSIONS:  # bounded, whatever names are tried
                self._failures.clear()
            self._failures.setdefault(name, []).append(self._clock())
        return ok

    async def _check(self, name: str, password: str) -> bool:
        u = self.file.users().get(name)
        stored = u.get("password") if u else None
        if not isinstance(stored, str):
            # Same work for an unknown user, so timing does not tell which names exist.
            await asyncio.to_thread(check_password, password, hash_password("x", 1000))
            return False
        return await asyncio.to_thread(check_password, password, stored)

    def login(self, name: str) -> tuple[str, float]:
        """A new session token for ``name`` (after :meth:`check`); ``(token, lifetime_s)``."""
        now = self._clock()
        self._sessions = {h: s for h, s in self._sessions.items() if s[1] > now}
        if len(self._sessions) >= MAX_SESSIONS:  # drop the oldest
            oldest = min(self._sessions, key=lambda h: self._sessions[h][1])
            del self._sessions[oldest]
        token = secrets.token_urlsafe(32)
        self._sessions[token_hash(token)] = (name, now + SESSION_S)
        return token, SESSION_S

    def logout(self, authorization: str) -> bool:
        _, _, cred = authorization.strip().partition(" ")
        return self._sessions.pop(token_hash(cred.strip()), None) is not None
