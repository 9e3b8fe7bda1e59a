"""What Modbus TCP and RTU devices share: the poll plan, block decoding, write encoding and the
checks of the answers. A transport adds only how a request travels (``read_block``,
``send_write``) and when repeated failures take the device offline (``failed``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np
import numpy.typing as npt

from gateway.config import DeviceConfig
from gateway.core.model import DeviceEvent, SampleBatch
from gateway.drivers.base import DriverBase, Stats, WriteError
from gateway.drivers.modbus_tcp.plan import PollGroup, PollPlan, ReadBlock
from gateway.impl import modbus

#: Consecutive failed requests after which the device is declared offline.
OFFLINE_AFTER_FAILURES = 3


def write_adu(plan: PollPlan, device: str, point: str, value: float) -> bytes:
    """The MBAP ADU (transaction id 0) that writes ``value`` to ``point``: fc 5 for a coil, fc 6
    or 16 for registers. WriteError(refused=True) when the gateway itself must refuse it; shared
    by every Modbus transport (RTU frames reuse the PDU)."""
    spec = plan.points.get(point)
    if spec is None:
        raise WriteError(f"{point}: not a point of device {device}", refused=True)
    if not spec.writable:
        raise WriteError(f"{point}: not writable", refused=True)
    unit = plan.unit_id
    if spec.table == "coil":
        return bytes(modbus.build_write_single_coil(0, unit, spec.address, value != 0.0))
    try:
        words = modbus.encode_value(spec.type_code, spec.flags, spec.scale, spec.bias, value)
    except (ValueError, OverflowError) as exc:
        raise WriteError(f"{point}: {value} out of range ({exc})", refused=True) from None
    if len(words) == 1:
        return bytes(modbus.build_write_single_register(0, unit, spec.address, words[0]))
    return bytes(modbus.build_write_multiple_registers(0, unit, spec.address, list(words)))


def decode_block(block: ReadBlock, body: bytes) -> npt.NDArray[np.float64]:
    """Engineering values of a block's points from a read answer (byte count first)."""
    values = np.empty(len(block.point_ids), np.float64)
    if block.decoder is not None:
        block.decoder.decode(body[1:], values)  # type: ignore[attr-defined]
        return values
    bits = np.empty(block.count, np.float64)
    modbus.unpack_bits(body[1:], block.count, bits)
    return bits[block.bit_index]  # type: ignore[no-any-return]


class ModbusDevice(DriverBase):
    """A polled Modbus device over some transport; see the module docstring."""

    polled = True  # every poll group yields a batch each period while online
    #: Exceptions that end a poll cycle instead of being counted as a fault (connection gone).
    passthrough: tuple[type[BaseException], ...] = ()

    def __init__(
        self,
        config: DeviceConfig,
        point_ids: Mapping[str, int],
        on_batch: Callable[[SampleBatch], None],
        on_event: Callable[[DeviceEvent], None],
        clock: Callable[[], float] = time.time,
        *,
        plan: PollPlan,
    ) -> None:
        self.plan = plan
        super().__init__(config, point_ids, on_batch, on_event, clock, ids=plan.point_ids)
        self._failures = 0
        self._last_rtt = float("nan")
        self.exceptions = self.bad_responses = 0

    # -- the transport's part -------------------------------------------------------------------
    async def read_block(self, block: ReadBlock) -> tuple[int, bytes, float] | None:
        """(function, body, ts) of the answer, or None when the request failed (reported)."""
        raise NotImplementedError

    async def send_write(self, point: str, adu: bytes) -> tuple[int, bytes]:
        """Send a write (MBAP ADU, tid 0); (function, body) of the answer or WriteError."""
        raise NotImplementedError

    def failed(self, reason: str) -> None:
        """A request timed out (count it; enough in a row take the device offline)."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------
    def set_online(self, ts: float | None = None, detail: str = "") -> None:
        self._failures = 0
        super().set_online(ts, detail)

    async def poll_cycle(self, group: PollGroup) -> None:
        """One read of each block of ``group``; a bug or a raising callback is counted and the
        next block is read all the same."""
        place = f"device {self.name}: poll {group.name}"
        for block in group.blocks:
            try:
                await self.poll_block(block)
            except self.passthrough:
                raise
            except Exception as exc:
                self.faults.failed(place, exc)
            else:
                self.faults.ok(place)

    async def poll_block(self, block: ReadBlock) -> None:
        answer = await self.read_block(block)
        if answer is None:
            return
        function, body, ts = answer
        self.set_online()  # a device that answers is alive, even when the answer is bad
        if function == block.function and len(body) == block.byte_count + 1:
            self.emit_values(block.point_ids, ts, decode_block(block, body))
            return
        if function == block.function | 0x80:
            self.exceptions += 1
        else:
            self.bad_responses += 1
        self.emit_bad(block.point_ids, ts)

    async def write_value(self, point: str, value: float) -> None:
        """Write ahead of any polls; the answer must echo the request."""
        adu = write_adu(self.plan, self.name, point, value)
        function, echo = adu[7], adu[8:12]  # fc 5/6/16 answers echo the 4 bytes after fc
        got, body = await self.send_write(point, adu)
        self.set_online()
        if got == function | 0x80:
            self.exceptions += 1
            raise WriteError(f"{point}: device answered exception code {body[0] if body else -1}")
        if got != function or body[:4] != echo:
            self.bad_responses += 1
            raise WriteError(f"{point}: unexpected answer to write (function {got})")

    def counters(self) -> Stats:
        rtt = self._last_rtt
        return {
            "exceptions": self.exceptions,
            "bad_responses": self.bad_responses,
            "skipped_polls": self.skipped_polls,
            "last_rtt_ms": rtt * 1000.0 if rtt == rtt else float("nan"),
        }
