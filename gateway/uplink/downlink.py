"""Downlink commands the receiver has sent and waits on: bounded, resent until answered."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from gateway.uplink import wire
from gateway.uplink.limits import LimitExceeded, Limits


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

    def fail_all(self, reason: str) -> None:
        for p in self._commands.values():
            if not p.future.done():
                p.future.set_exception(RuntimeError(reason))
                p.future.exception()  # retrieved: internal ones have nobody awaiting them
        self._commands.clear()
