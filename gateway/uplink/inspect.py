"""``gateway queue stats|peek|export``: read the durable queue file without disturbing the gateway.

The file is opened read-only (``mode=ro``; WAL lets this run next to a live gateway), so an
operator can see what is waiting and why without stopping anything.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from gateway.core.records import STREAM_META
from gateway.model.birth import birth_record
from gateway.uplink.queue_schema import record_crc
from gateway.uplink.recordjson import PointNames, dumps, shown


def _connect(path: str) -> sqlite3.Connection:
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such queue file")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    con.execute("PRAGMA query_only = 1")
    return con


def stats(path: str, now: float | None = None) -> dict[str, Any]:
    """Schema version, epoch, per stream: epoch, next_seq, acked_hw, depth, bytes, oldest age,
    gaps (count and seqs by reason); commands by outcome; keys of committed state; file size."""
    now = time.time() if now is None else now
    con = _connect(path)
    try:
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        out: dict[str, Any] = {
            "file": path,
            "file_bytes": sum(
                Path(path + s).stat().st_size for s in ("", "-wal") if Path(path + s).exists()
            ),
            "schema_version": meta.get("schema_version"),
            "epoch": meta.get("epoch"),
            "streams": {},
        }
        has_gaps = con.execute("SELECT 1 FROM sqlite_master WHERE name = 'gaps'").fetchone()
        for stream, epoch, next_seq, acked in con.execute(
            "SELECT stream, epoch, next_seq, acked_hw FROM streams ORDER BY stream"
        ).fetchall():
            depth, size, oldest = con.execute(
                "SELECT count(*), coalesce(sum(length(payload)), 0), min(ts) FROM records "
                "WHERE stream = ?",
                (stream,),
            ).fetchone()
            gaps: dict[str, int] = {}
            if has_gaps:
                for reason, n in con.execute(
                    "SELECT reason, sum(last - first + 1) FROM gaps WHERE stream = ? "
                    "GROUP BY reason",
                    (stream,),
                ):
                    gaps[reason] = int(n)
            out["streams"][stream] = {
                "epoch": epoch,
                "next_seq": next_seq,
                "acked_hw": acked,
                "depth": depth,
                "bytes": size,
                "oldest_age_s": None if oldest is None else round(now - oldest, 3),
                "pending_gaps": gaps,
            }
        if con.execute("SELECT 1 FROM sqlite_master WHERE name = 'commands'").fetchone():
            out["commands"] = dict(
                con.execute(
                    "SELECT coalesce(outcome, 'running'), count(*) FROM commands GROUP BY 1"
                ).fetchall()
            )
        if con.execute("SELECT 1 FROM sqlite_master WHERE name = 'state'").fetchone():
            out["state"] = [k for (k,) in con.execute("SELECT key FROM state ORDER BY key")]
        return out
    finally:
        con.close()


def records(
    path: str, stream: str | None = None, after_seq: int = 0, limit: int | None = None
) -> Iterator[tuple[str, int, float, bytes]]:
    """(stream, seq, ts, payload) of queued records in (stream, seq) order."""
    for s, seq, ts, payload, _ in checked_records(path, stream, after_seq, limit):
        yield s, seq, ts, payload


def checked_records(
    path: str, stream: str | None = None, after_seq: int = 0, limit: int | None = None
) -> Iterator[tuple[str, int, float, bytes, bool]]:
    """Like :func:`records` plus whether the payload still matches its accept-time CRC (a
    version-2 file has no CRCs: True)."""
    con = _connect(path)
    try:
        has_crc = any(r[1] == "crc" for r in con.execute("PRAGMA table_info(records)"))
        crc = "crc" if has_crc else "NULL"
        sql = f"SELECT stream, seq, ts, payload, {crc} FROM records WHERE seq > ?"
        args: list[Any] = [after_seq]
        if stream is not None:
            sql += " AND stream = ?"
            args.append(stream)
        sql += " ORDER BY stream, seq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        for s, seq, ts, payload, stored in con.execute(sql, args):
            yield s, seq, ts, payload, stored is None or record_crc(payload) == stored
    finally:
        con.close()


def point_names(path: str, config: Any = None) -> PointNames:
    """Names for the queue's telemetry: from its own ``meta`` records (the gateway queues its point
    model at every start) and, given the gateway's config, from the model that config builds."""
    names = PointNames(hint=" in the queue" + ("" if config is not None else " (pass --config)"))
    names.learn_payloads(p for _, _, _, p, _ in checked_records(path, STREAM_META))
    if config is not None:
        from gateway.core.runtime import build_point_table

        _, payload = birth_record(config, build_point_table(config).infos)
        names.learn_payloads([payload])
    return names


def export(
    path: str,
    out: TextIO,
    stream: str | None = None,
    names: PointNames | None = None,
    limit: int | None = None,
) -> int:
    """JSON lines ``{stream, seq, ts, crc_ok, record}`` for every queued record (``crc_ok``
    false: the bytes changed since the record was accepted; the gateway will not send it;
    telemetry with point names, see :mod:`gateway.uplink.recordjson`); returns the count."""
    names = names or point_names(path)
    n = 0
    for s, seq, ts, payload, ok in checked_records(path, stream, limit=limit):
        record = shown(s, path, payload, names)
        line = {"stream": s, "seq": seq, "ts": ts, "crc_ok": ok, "record": record}
        out.write(dumps(line) + "\n")
        n += 1
    return n


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``gateway queue stats|peek|export`` on the CLI's subparsers."""
    q = sub.add_parser("queue", help="inspect the durable uplink queue file (read-only)")
    qs = q.add_subparsers(dest="queue_command", required=True, metavar="ACTION")
    for name, text in (
        ("stats", "depth, bytes, oldest age, gaps per stream"),
        ("peek", "the oldest queued records as JSON lines"),
        ("export", "every queued record as JSON lines"),
    ):
        s = qs.add_parser(name, help=text)
        where = s.add_mutually_exclusive_group(required=True)
        where.add_argument(
            "--config", help="gateway YAML: use its uplink.queue (and name its points)"
        )
        where.add_argument("--file", help="the queue file itself")
        if name != "stats":
            s.add_argument("--stream", default=None, help="only this stream")
        if name == "peek":
            s.add_argument("-n", type=int, default=10, help="how many records")
        if name == "export":
            s.add_argument("--out", default="-", help="output file (default: stdout)")
        s.set_defaults(fn=cmd_queue)


def cmd_queue(args: argparse.Namespace) -> int:
    path, config = args.file, None
    if path is None:
        from gateway.config import ConfigError, load_config

        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
        path = config.uplink.queue
    try:
        if args.queue_command == "stats":
            print(json.dumps(stats(path), indent=2))
            return 0
        names = point_names(path, config)
        limit = args.n if args.queue_command == "peek" else None
        if args.queue_command == "peek" or args.out == "-":
            n = export(path, sys.stdout, args.stream, names, limit)
        else:
            with open(args.out, "w", encoding="utf-8") as f:
                n = export(path, f, args.stream, names)
        if args.queue_command == "export":
            print(f"exported {n} records", file=sys.stderr)
    except BrokenPipeError:
        raise  # the reader went away (`| head`): the CLI ends quietly
    except (OSError, sqlite3.Error) as exc:  # missing, unreadable, not a queue: one line
        print(f"gateway queue: {exc}", file=sys.stderr)
        return 1
    return 0
