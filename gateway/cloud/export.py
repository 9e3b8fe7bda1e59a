"""``gateway export``: recordings out of the cloud store, for ``gateway rules test`` and
``gateway models test``.

Reads the receiver's SQLite store (:mod:`gateway.cloud.store`) read-only (``mode=ro``; a running
receiver is not disturbed and nothing is written), decodes the telemetry with the gateway's point
model (the ``meta`` stream) into named samples, and writes them as a long CSV
(``ts,point,value,quality``) or JSONL recording (:mod:`gateway.rules.recording`), in the order
the gateway processed them: the order a replay must follow to make the gateway's decisions.

Points of the ``virtual`` device are left out unless named in ``--points``: rules compute them
(``set`` actions), so a replay recomputes them rather than reading them. (Not to be confused with
``gateway queue export``, which reads a gateway's own outbox.)
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from gateway.cloud.store import is_postgres, redacted
from gateway.core.records import STREAM_META, STREAM_TELEMETRY, decode
from gateway.model.versions import QUALITY, ModelVersions
from gateway.rules.recording import FORMATS, DataError, Row, format_of, parse_ts, write_recording


class ExportError(Exception):
    """A store or a selection that cannot be exported; ``str()`` is what to print."""


Store = Any  # an sqlite3.Connection, or a psycopg Connection for a postgresql:// store


def open_store(path: str | Path) -> Store:
    """The cloud store at ``path`` (a file or a ``postgresql://`` URL), read-only; ExportError
    when it is not one."""
    if is_postgres(str(path)):
        return _open_pg(str(path))
    p = Path(path)
    if not p.is_file():
        kind = "not found" if not p.exists() else "not a regular file"
        raise ExportError(f"{p}: {kind}; --db takes the receiver's store (gateway cloud --db)")
    uri = f"file:{quote(str(p.resolve()))}?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as exc:
        raise ExportError(f"{p}: not a cloud store ({exc})") from None
    if not {"records", "streams"} <= tables:
        db.close()
        raise ExportError(f"{p}: not a cloud store (no records table); give the file that "
                          "`gateway cloud --db` writes")  # fmt: skip
    return db


def _open_pg(url: str) -> Store:
    try:
        import psycopg
    except ImportError:
        raise ExportError(
            "a postgresql:// store needs psycopg (packaging/cloud-requirements.txt)"
        ) from None
    try:
        db = psycopg.connect(url, connect_timeout=5, autocommit=True)
        db.execute("SET default_transaction_read_only = on")
        row = db.execute("SELECT to_regclass('records') IS NOT NULL").fetchone()
    except psycopg.Error as exc:
        raise ExportError(
            f"{redacted(url)}: cannot read the database: {' '.join(str(exc).split())}"
        ) from None
    if not (row and row[0]):
        db.close()
        raise ExportError(f"{redacted(url)}: not a cloud store (no records table)")
    return db


def _errors() -> tuple[type[BaseException], ...]:
    try:
        import psycopg
    except ImportError:
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)


def gateways(db: Store) -> list[str]:
    return [r[0] for r in db.execute("SELECT DISTINCT gateway FROM streams ORDER BY gateway")]


def stream_payloads(db: Store, gateway: str, stream: str) -> Iterator[bytes]:
    """Payloads of one stream in the order the gateway sent them: epochs (random ids) in the
    order they arrived, records by sequence number within each."""
    if not isinstance(db, sqlite3.Connection):  # PostgreSQL: streams.since orders the epochs
        cur = db.execute(
            "SELECT r.payload FROM records r JOIN streams t USING (gateway, stream, epoch) "
            "WHERE r.gateway = %s AND r.stream = %s ORDER BY t.since, r.seq",
            (gateway, stream),
        )
        for (payload,) in cur:
            yield bytes(payload)
        return
    sql = (
        "SELECT r.payload FROM records r JOIN ("
        "  SELECT epoch, MIN(rowid) AS first FROM records WHERE gateway = ? AND stream = ?"
        "  GROUP BY epoch) e ON r.epoch = e.epoch "
        "WHERE r.gateway = ? AND r.stream = ? ORDER BY e.first, r.seq"
    )
    for (payload,) in db.execute(sql, (gateway, stream, gateway, stream)):
        yield bytes(payload)


class Selection:
    """Which samples to export: point names or patterns (``press1.*``), the points of an asset
    (its path, or a tail of it: ``line1/press1``, with the assets below it) and
    ``start <= ts < end``."""

    def __init__(
        self, points: list[str] | None = None, start: float | None = None, end: float | None = None,
        asset: str | None = None,
    ) -> None:  # fmt: skip
        self.points = points
        self.start = start
        self.end = end
        self.asset = asset.strip("/") if asset else None

    def wants(self, name: str, device: str, ts: float, path: str = "") -> bool:
        if self.start is not None and ts < self.start:
            return False
        if self.end is not None and ts >= self.end:
            return False
        if self.asset is not None and not _under(path, self.asset):
            return False
        if self.points is None:
            return device != "virtual"
        return any(name == p or fnmatch.fnmatchcase(name, p) for p in self.points)


def _under(path: str, asset: str) -> bool:
    """``path`` (``factory/line1/press1``) is the asset ``asset`` names (its path or a tail of
    it; ids are unique in a tree) or one below it."""
    parts, want = path.split("/") if path else [], asset.split("/")
    return any(parts[i : i + len(want)] == want for i in range(len(parts) - len(want) + 1))


def samples(db: Store, gateway: str, sel: Selection, warn: Any = None) -> Iterator[Row]:
    """Named samples of ``gateway`` (``(ts, point, value, quality)``) chosen by ``sel``; each
    telemetry record is read with the model version it was written under."""
    models = ModelVersions()
    devices: dict[str, str] = {}
    bad = unknown = 0
    for payload in stream_payloads(db, gateway, STREAM_META):
        try:
            rec = decode(payload)
            if models.learn(gateway, rec) is None:
                raise ValueError("not a point model")
            for p in rec["points"]:
                devices[str(p["name"])] = str(p.get("device", ""))
        except (ValueError, KeyError, TypeError):
            bad += 1
    for payload in stream_payloads(db, gateway, STREAM_TELEMETRY):
        try:
            rows = models.named(gateway, decode(payload))
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        for s in rows:
            name = s["point"]
            if name.startswith("#"):
                unknown += 1
                continue
            ts = float(s["ts"])
            path = s["path"].rsplit(".", 1)[0] if s["path"] else ""
            if not sel.wants(name, devices.get(name, ""), ts, path):
                continue
            x = s["value"]
            q = QUALITY.index(s["quality"]) if s["quality"] in QUALITY else 2  # unknown: bad
            yield (ts, name, float("nan") if x is None or q else float(x), q)
    if warn is not None and (bad or unknown):
        warn(f"skipped {bad} undecodable records and {unknown} samples of an unknown point model")


def main(args: argparse.Namespace) -> int:
    try:
        return _export(args)
    except ExportError as exc:
        print(f"gateway export: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `gateway export ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _time(opt: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_ts(opt, text)
    except DataError as exc:
        raise ExportError(str(exc)) from None


def _check_asset(db: sqlite3.Connection, gateway: str, asset: str) -> None:
    """ExportError unless some model version of ``gateway`` has the asset ``asset``."""
    from gateway.cloud.models import from_db

    versions = from_db(db, gateway)
    known: list[str] = []
    for version in versions.versions(gateway):
        model = versions.get(gateway, version)
        if model is not None and model.asset(asset) is not None:
            return
        known += [str(a.get("path")) for a in model.assets] if model else []
    listed = ", ".join(dict.fromkeys(known)) or "none (its config has no assets:)"
    raise ExportError(f"--asset {asset}: no such asset in {gateway}'s model; it has: {listed}")


def _export(args: argparse.Namespace) -> int:
    fmt = args.format or (format_of(args.output) if args.output else None) or "csv"
    sel = Selection(
        [p.strip() for p in args.points.split(",") if p.strip()] if args.points else None,
        _time("--from", args.start), _time("--to", args.end), args.asset,
    )  # fmt: skip
    db = open_store(args.db)
    try:
        known = gateways(db)
        gateway = args.gateway
        if gateway is None:
            if len(known) != 1:
                names = ", ".join(known) or "none"
                raise ExportError(f"{redacted(args.db)} holds {len(known)} gateways ({names}); choose one "
                                  "with --gateway")  # fmt: skip
            gateway = known[0]
        elif gateway not in known:
            raise ExportError(f"{redacted(args.db)}: no gateway {gateway!r}; it holds: "
                              f"{', '.join(known) or 'none'}")  # fmt: skip

        def warn(msg: str) -> None:
            print(f"gateway export: {msg}", file=sys.stderr)

        if sel.asset is not None:
            _check_asset(db, gateway, sel.asset)
        rows = samples(db, gateway, sel, warn)
        try:
            n = _write(rows, args.output, fmt)
        except _errors() as exc:
            raise ExportError(f"{redacted(args.db)}: read failed: {exc}") from None
    finally:
        db.close()
    if n == 0:
        warn(f"no samples of {gateway} matched (points {args.points or 'all'}, "
             f"from {args.start or 'start'} to {args.end or 'end'})")  # fmt: skip
        return 1
    print(f"gateway export: {n} samples of {gateway} written to {args.output or 'stdout'}",
          file=sys.stderr)  # fmt: skip
    return 0


def _write(rows: Iterator[Row], output: str | None, fmt: str) -> int:
    if not output or output == "-":
        return write_recording(rows, sys.stdout, fmt)
    tmp = f"{output}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            n = write_recording(rows, f, fmt)
        os.replace(tmp, output)  # a failed export leaves no half-written recording behind
    except OSError as exc:
        raise ExportError(f"{output}: cannot write: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return n


def add_parser(sub: Any) -> None:
    """Register ``gateway export`` under the ``gateway`` command's subparsers."""
    s = sub.add_parser(
        "export",
        help="write recordings from the cloud store (for `rules test` / `models test`)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    s.add_argument(
        "--db",
        required=True,
        help="the receiver's store, a file or a postgresql:// URL (gateway cloud --db)",
    )
    s.add_argument("--gateway", help="gateway id (default: the only one in the store)")
    s.add_argument("--points", help="comma-separated point names or patterns (press1.*)")
    s.add_argument("--asset", metavar="PATH",
                   help="the points of this asset and those below it: its path or a tail of "
                   "it (line1/press1), as in the gateway's `assets:`")  # fmt: skip
    s.add_argument("--from", dest="start", metavar="T",
                   help="first time (epoch seconds or ISO 8601, UTC if no offset)")  # fmt: skip
    s.add_argument("--to", dest="end", metavar="T", help="end time, exclusive")
    s.add_argument("--csv", dest="format", action="store_const", const="csv",
                   help="same as --format csv")  # fmt: skip
    s.add_argument("--format", choices=FORMATS,
                   help="recording format (default: from -o's extension, else csv)")  # fmt: skip
    s.add_argument("-o", "--output", help="output file (default: stdout)")
    s.set_defaults(fn=main)
