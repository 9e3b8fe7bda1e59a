"""Downlink commands the receiver has sent and waits on: bounded, resent until answered."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway.cloud.limits import LimitExceeded, Limits
from gateway.uplink import wire

_log = logging.getLogger(__name__)

#: The receiver's own command: "your point model is missing from the store, submit it again".
RESEND_META = "resend_meta"


@dataclass
class PendingCommand:
    gateway: str
    msg: wire.Command
    future: asyncio.Future[wire.Result]
    internal: bool = False  # the receiver's own (resend_meta): nobody awaits it


class CommandBook:
    """Commands waiting for a RESULT, at most ``limits.max_commands`` (and per gateway)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._commands: dict[str, PendingCommand] = {}

    def __len__(self) -> int:
        return len(self._commands)

    def add(
        self,
        gateway: str,
        kind: str,
        args: dict[str, Any] | None,
        command_id: str | None = None,
        *,
        internal: bool = False,
    ) -> PendingCommand:
        """The pending command ``command_id`` (a new one unless it is still waiting)."""
        cid = command_id or uuid.uuid4().hex
        pending = self._commands.get(cid)
        if pending is not None and not pending.future.done():
            return pending
        mine = sum(1 for p in self._commands.values() if p.gateway == gateway)
        if (
            len(self._commands) >= self.limits.max_commands
            or mine >= self.limits.max_commands_per_gateway
        ):
            raise LimitExceeded(
                f"{mine} commands for {gateway} and {len(self._commands)} in total wait for a "
                "RESULT (limits.max_commands, limits.max_commands_per_gateway)"
            )
        fut: asyncio.Future[wire.Result] = asyncio.get_running_loop().create_future()
        pending = PendingCommand(gateway, wire.Command(cid, kind, dict(args or {})), fut, internal)
        self._commands[cid] = pending
        return pending

    def waiting(self, gateway: str, kind: str | None = None) -> list[wire.Command]:
        """Unanswered commands of ``gateway`` (of one kind), in the order they were made."""
        return [
            p.msg
            for p in self._commands.values()
            if p.gateway == gateway and not p.future.done() and kind in (None, p.msg.kind)
        ]

    def answer(self, gateway: str, msg: wire.Result) -> PendingCommand | None:
        """Resolve the command ``msg`` answers; None if it is not ours or already answered."""
        pending = self._commands.get(msg.id)
        if pending is None or pending.gateway != gateway or pending.future.done():
            return None
        detail = msg.detail[: self.limits.max_result_detail]
        pending.future.set_result(wire.Result(msg.id, msg.outcome, detail))
        if pending.internal:
            del self._commands[msg.id]
        return pending

    def forget(self, pending: PendingCommand) -> None:
        if self._commands.get(pending.msg.id) is pending:
            del self._commands[pending.msg.id]

    def cancel(self, command_id: str) -> None:
        """Forget ``command_id``: not resent after the next HELLO, its late RESULT ignored."""
        pending = self._commands.pop(command_id, None)
        if pending is not None and not pending.future.done():
            pending.future.cancel()

    def fail_all(self, reason: str) -> None:
        for p in self._commands.values():
            if not p.future.done():
                p.future.set_exception(RuntimeError(reason))
                p.future.exception()  # retrieved: internal ones have nobody awaiting them
        self._commands.clear()


class Downlink:
    """Sends commands to gateways' live sessions and matches their RESULTs."""

    def __init__(
        self,
        book: CommandBook,
        send: Callable[[str, wire.Message], Awaitable[None]],
        warn: Callable[..., None],
    ) -> None:
        self.book = book
        self._send = send
        self._warn = warn

    async def command(
        self,
        gateway: str,
        kind: str,
        args: dict[str, Any] | None,
        command_id: str | None,
        timeout: float | None,
    ) -> wire.Result:
        pending = self.book.add(gateway, kind, args, command_id)
        await self._send(gateway, pending.msg)
        try:
            return await asyncio.wait_for(asyncio.shield(pending.future), timeout)
        finally:
            if pending.future.done():
                self.book.forget(pending)

    async def request_meta(self, gateway: str) -> None:
        """The store has no point model of ``gateway``: ask it to submit its ``meta`` again."""
        if self.book.waiting(gateway, RESEND_META):
            return
        try:
            cid = f"{RESEND_META}-{uuid.uuid4().hex}"
            pending = self.book.add(gateway, RESEND_META, {}, cid, internal=True)
        except LimitExceeded:
            return
        _log.warning("cloud: the store has no point model of %s; asked it to resend it", gateway)
        await self._send(gateway, pending.msg)

    def on_result(self, gateway: str, msg: wire.Result) -> None:
        pending = self.book.answer(gateway, msg)
        if pending is not None and pending.internal and msg.outcome != "ok":
            self._warn(
                "cmd", "cloud: %s %s: %s %s",
                gateway, pending.msg.kind, msg.outcome, msg.detail[:200],
            )  # fmt: skip
