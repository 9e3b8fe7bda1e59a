"""The poll plan: a device's points compiled once into coalesced read requests.

Everything a poll needs is computed here, at configuration time, so that a poll response costs a
frame match, one decoder call and one :class:`~gateway.core.model.SampleBatch`: the request ADU
(minus its transaction id), the :class:`RegisterDecoder` (offsets, types, orders, scales), the
point-id array of the batch, and the bit indices of coil/discrete reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.config import DeviceConfig, PointConfig
from gateway.impl import modbus

#: Read function code of each register table.
READ_FUNCTION = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
#: Protocol limits per read request (Modbus application protocol v1.1b3, 6.1-6.4).
MAX_READ_REGISTERS = 125
MAX_READ_BITS = 2000
BIT_TABLES = frozenset(("coil", "discrete"))


@dataclass(frozen=True, slots=True)
class PointSpec:
    """One point resolved against the codec: where it lives and how its raw words are read."""

    name: str  # full name "device.point"
    point_id: int
    table: str
    address: int
    words: int  # registers (or bits, for coil/discrete) the point occupies
    type_code: int  # modbus.T_* (unused for bit tables)
    flags: int  # modbus.order_flags(...)
    scale: float
    bias: float
    group: str
    writable: bool


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One coalesced read request and everything needed to turn its response into a batch.

    ``adu_tail`` is the request ADU without its 2-byte transaction id: a poll sends
    ``tid.to_bytes(2, "big") + adu_tail``. ``point_ids`` is shared by every batch of this block
    and must not be mutated by consumers. For register tables ``decoder`` fills the value
    array; for bit tables ``bit_index`` selects the points' bits out of the unpacked range.
    """

    table: str
    function: int
    address: int
    count: int
    adu_tail: bytes
    byte_count: int  # expected byte-count field of the response
    point_ids: npt.NDArray[np.uint32]
    names: tuple[str, ...]
    decoder: object | None  # modbus.RegisterDecoder for register tables
    bit_index: npt.NDArray[np.intp] | None  # positions inside the read range, bit tables


@dataclass(frozen=True, slots=True)
class PollGroup:
    """Blocks polled together at one period."""

    name: str
    period: float
    blocks: tuple[ReadBlock, ...]


@dataclass(frozen=True, slots=True)
class PollPlan:
    """A device's compiled poll groups and writable points."""

    device: str
    unit_id: int
    groups: tuple[PollGroup, ...]
    points: Mapping[str, PointSpec]  # full name -> spec, every point of the device
    point_ids: npt.NDArray[np.uint32]  # every point of the device, for "all bad" batches

    @property
    def request_count(self) -> int:
        """Read requests per round of every group (a measure of coalescing)."""
        return sum(len(g.blocks) for g in self.groups)


def _point_spec(device: DeviceConfig, p: PointConfig, point_ids: Mapping[str, int]) -> PointSpec:
    full = f"{device.name}.{p.name}"
    if full not in point_ids:
        raise ValueError(f"{full}: no point id assigned")
    if p.table not in READ_FUNCTION:
        raise ValueError(f"{full}: unknown table {p.table!r}")
    if p.poll not in device.poll_groups:
        raise ValueError(f"{full}: unknown poll group {p.poll!r}")
    if p.address is None:
        raise ValueError(f"{full}: no address")
    if not 0 <= p.address <= 0xFFFF:
        raise ValueError(f"{full}: address {p.address} outside 0..65535")
    if p.table in BIT_TABLES:
        if p.type != "bool":
            raise ValueError(f"{full}: {p.table} points are bool, not {p.type}")
        type_code, words, flags = -1, 1, 0
    else:
        if p.type not in modbus.TYPE_CODES:
            raise ValueError(f"{full}: type {p.type!r} is not a register type")
        type_code = modbus.TYPE_CODES[p.type]
        words = modbus.TYPE_WORDS[type_code]
        flags = modbus.order_flags(p.word_order, p.byte_order)
        if p.address + words > 0x10000:
            raise ValueError(f"{full}: {p.type} at {p.address} runs past register 65535")
    if p.writable and p.table not in ("coil", "holding"):
        raise ValueError(f"{full}: only coil and holding points can be writable")
    return PointSpec(
        full,
        point_ids[full],
        p.table,
        p.address,
        words,
        type_code,
        flags,
        float(p.scale),
        float(p.offset),
        p.poll,
        p.writable,
    )


def _coalesce(specs: list[PointSpec], limit: int, gap: int) -> list[list[PointSpec]]:
    """Split address-sorted points of one table and group into runs that fit one request.

    A point joins the current run when the registers between the run's end and the point are at
    most ``gap`` and the whole run still spans at most ``limit`` registers (or bits).
    """
    runs: list[list[PointSpec]] = []
    start = end = 0
    for s in sorted(specs, key=lambda s: (s.address, -s.words)):
        s_end = s.address + s.words
        if runs and s.address - end <= gap and max(end, s_end) - start <= limit:
            runs[-1].append(s)
            end = max(end, s_end)
        else:
            runs.append([s])
            start, end = s.address, s_end
    return runs


def _block(device: DeviceConfig, table: str, run: list[PointSpec]) -> ReadBlock:
    function = READ_FUNCTION[table]
    address = min(s.address for s in run)
    count = max(s.address + s.words for s in run) - address
    adu = modbus.build_read_request(0, device.unit_id, function, address, count)
    ids = np.fromiter((s.point_id for s in run), np.uint32, len(run))
    names = tuple(s.name for s in run)
    if table in BIT_TABLES:
        bit_index = np.fromiter((s.address - address for s in run), np.intp, len(run))
        return ReadBlock(
            table,
            function,
            address,
            count,
            bytes(adu[2:]),
            (count + 7) // 8,
            ids,
            names,
            None,
            bit_index,
        )
    decoder = modbus.RegisterDecoder(
        [s.address - address for s in run],
        [s.type_code for s in run],
        [s.flags for s in run],
        [s.scale for s in run],
        [s.bias for s in run],
    )
    return ReadBlock(
        table, function, address, count, bytes(adu[2:]), 2 * count, ids, names, decoder, None
    )


def build_plan(device: DeviceConfig, point_ids: Mapping[str, int]) -> PollPlan:
    """Compile a device's points into poll groups of coalesced read blocks.

    Parameters
    ----------
    device : the device configuration.
    point_ids : full point name -> PointTable id, for every point of the device.

    Raises
    ------
    ValueError : a point is inconsistent (bool type outside coil/discrete, unknown poll group,
        address overflow) or ``max_registers``/``max_gap`` is outside the protocol's limits.
    """
    if not 1 <= device.max_registers <= MAX_READ_REGISTERS:
        raise ValueError(
            f"{device.name}: max_registers {device.max_registers} outside 1..{MAX_READ_REGISTERS}"
        )
    if device.max_gap < 0:
        raise ValueError(f"{device.name}: max_gap must be >= 0")
    for name, period in device.poll_groups.items():
        if not period > 0:
            raise ValueError(f"{device.name}: poll group {name!r} period must be > 0")
    specs = [_point_spec(device, p, point_ids) for p in device.points]
    by_name: dict[str, PointSpec] = {}
    for s in specs:
        if s.name in by_name:
            raise ValueError(f"{s.name}: duplicate point")
        by_name[s.name] = s
    for s in specs:
        if s.table not in BIT_TABLES and s.words > device.max_registers:
            raise ValueError(f"{s.name}: {s.words} registers exceed max_registers")
    groups = []
    for gname, period in device.poll_groups.items():
        blocks: list[ReadBlock] = []
        for table in READ_FUNCTION:
            members = [s for s in specs if s.group == gname and s.table == table]
            if not members:
                continue
            if table in BIT_TABLES:
                # A gap of one register costs the same 16 bits on the wire as 16 unread coils.
                runs = _coalesce(members, MAX_READ_BITS, 16 * device.max_gap)
            else:
                runs = _coalesce(members, device.max_registers, device.max_gap)
            blocks.extend(_block(device, table, run) for run in runs)
        if blocks:
            groups.append(PollGroup(gname, float(period), tuple(blocks)))
    all_ids = np.fromiter((s.point_id for s in specs), np.uint32, len(specs))
    return PollPlan(device.name, device.unit_id, tuple(groups), by_name, all_ids)
