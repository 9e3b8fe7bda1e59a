"""Issue 12: the PostgreSQL store. Migrations, partitions and retention, exactly-once with two
receivers on one database (a failover race), decoded point rows, and ``gateway cloud --db
postgresql://...`` as a real process. A private cluster (tests/pg_support.py); skipped with the
reason where the server binaries are missing."""

from __future__ import annotations

import asyncio
import re
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import pytest
from pg_support import PgCluster
from uplink_support import RawPeer, run, running_receiver

from gateway.cloud import pg_points, pg_schema
from gateway.cloud.store import SequenceGap
from gateway.uplink import wire

psycopg = pytest.importorskip("psycopg")

from gateway.cloud.store_pg import PostgresCloudStore  # noqa: E402  (needs psycopg)

DAY = 86400.0
T0 = 1_796_256_000.0  # 2026-12-03 00:00 UTC


def _sql(dsn: str, query: str, *args: object) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query, args)
        return cur.fetchall() if cur.description else []


# --- schema and migrations -------------------------------------------------------------------


def test_migrations_create_partitioned_tables_once(pg_cluster: PgCluster) -> None:
    dsn = pg_cluster.create_db("mig")
    with PostgresCloudStore(dsn, clock=lambda: T0):
        pass
    with PostgresCloudStore(dsn, clock=lambda: T0):  # a second start applies nothing again
        pass
    assert _sql(dsn, "SELECT version FROM cloud_schema ORDER BY 1") == [(1,), (2,)]
    parted = {r[0] for r in _sql(dsn, "SELECT c.relname FROM pg_partitioned_table p "
                                      "JOIN pg_class c ON c.oid = p.partrelid")}  # fmt: skip
    assert parted == {"records", "points"}
    parts = {r[0] for r in _sql(dsn, "SELECT relname FROM pg_class WHERE relname ~ '_p[0-9]'")}
    assert {"records_p20261203", "records_p20261204", "points_p20261203"} <= parts


def test_an_older_schema_is_upgraded_keeping_its_data(
    pg_cluster: PgCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn = pg_cluster.create_db("old")
    monkeypatch.setattr(pg_schema, "MIGRATIONS", pg_schema.MIGRATIONS[:1])
    with PostgresCloudStore(dsn, points=False) as s:
        s.commit("g", "s", 1, 1, [b"a", b"b"])
    assert _sql(dsn, "SELECT max(version) FROM cloud_schema") == [(1,)]
    monkeypatch.undo()
    with PostgresCloudStore(dsn) as s:
        assert s.hw("g", "s", 1) == 2 and len(s.records("g", "s")) == 2
    assert _sql(dsn, "SELECT max(version) FROM cloud_schema") == [(2,)]
    assert _sql(dsn, "SELECT count(*) FROM point_samples") == [(0,)]


def test_a_different_partition_size_later_is_refused(pg_cluster: PgCluster) -> None:
    dsn = pg_cluster.create_db("part")
    with PostgresCloudStore(dsn, partition="hour"):
        pass
    with pytest.raises(pg_schema.SchemaError, match="partitioned by hour, not day"):
        PostgresCloudStore(dsn, partition="day").open()


def _cloud(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "cloud", "--insecure", "--bind", "tcp://127.0.0.1:0",
         "--pub", "", "--status-interval", "0", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def test_cli_refuses_a_newer_schema_with_a_clear_message(pg_cluster: PgCluster) -> None:
    dsn = pg_cluster.create_db("newer")
    with PostgresCloudStore(dsn):
        pass
    _sql(dsn, "INSERT INTO cloud_schema(version, description) VALUES (99, 'from the future')")
    res = _cloud("--db", dsn)
    assert res.returncode == 2, res.stderr
    assert "cloud schema is version 99, newer than this receiver knows (2)" in res.stderr
    assert "Traceback" not in res.stderr


def test_cli_unreachable_database_is_a_clear_error_without_the_password() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = _cloud("--db", f"postgresql://ops:s3cret@127.0.0.1:{port}/cloud")
    assert res.returncode == 2
    assert "cannot use the database" in res.stderr and "is the server up" in res.stderr
    assert "s3cret" not in res.stderr and "ops:***@" in res.stderr
    assert "Traceback" not in res.stderr
    res = _cloud("--db", "var/c.db", "--retention-days", "3")
    assert res.returncode == 2 and "PostgreSQL --db" in res.stderr


# --- partitions and retention ----------------------------------------------------------------


def test_retention_drops_whole_partitions_and_keeps_exactly_once(pg_cluster: PgCluster) -> None:
    dsn = pg_cluster.create_db("ret")
    now = [T0 + 3600]
    with PostgresCloudStore(dsn, clock=lambda: now[0], retention=2 * DAY) as s:
        s.commit("g", "s", 1, 1, [b"a", b"b"])
        now[0] += DAY
        s.commit("g", "s", 1, 3, [b"c"])
        now[0] += 2 * DAY  # day 0 ended 2 days ago: its partition goes; day 1's not yet
        s.commit("g", "s", 1, 4, [b"d"])  # a new period: upkeep runs
        assert s.dropped_partitions == ["points_p20261203", "records_p20261203"]
        assert [r.seq for r in s.records("g", "s", 1)] == [3, 4]
        # The hw outlives the rows: a late replay of dropped seqs is still not stored again.
        assert s.commit("g", "s", 1, 1, [b"a", b"b", b"c", b"d"]) == 4
        assert [r.seq for r in s.records("g", "s", 1)] == [3, 4]
    parts = {r[0] for r in _sql(dsn, "SELECT relname FROM pg_class WHERE relname ~ '_p[0-9]'")}
    assert "records_p20261203" not in parts and "records_p20261206" in parts
    # No row-by-row delete ever ran: the dropped partition's rows went with it.
    assert _sql(dsn, "SELECT n_tup_del FROM pg_stat_user_tables WHERE relname = 'records_p20261204'") == [(0,)]  # fmt: skip


def test_hour_partitions(pg_cluster: PgCluster) -> None:
    dsn = pg_cluster.create_db("hour")
    with PostgresCloudStore(dsn, clock=lambda: T0 + 5400, partition="hour") as s:
        s.commit("g", "s", 1, 1, [b"a"])
    rows = _sql(dsn, "SELECT tableoid::regclass::text FROM records")
    assert rows == [("records_p2026120301",)]


# --- exactly-once across receivers ------------------------------------------------------------


def test_two_stores_racing_on_one_stream_store_each_record_once_in_order(
    pg_cluster: PgCluster,
) -> None:
    """Two receivers' stores get the same gateway's DATA at once, overlapping and stale (a
    failover race): the row lock and the hw check in the transaction decide, not memory."""
    dsn = pg_cluster.create_db("race")
    n, chunk = 1200, 40
    payloads = [b"r%d" % i for i in range(1, n + 1)]
    errors: list[BaseException] = []
    gaps = [0]

    def writer(lag: int) -> None:
        try:
            with PostgresCloudStore(dsn) as s:
                hw = 0
                while hw < n:
                    first = max(1, hw + 1 - lag)  # resend some already-stored records too
                    try:
                        hw = s.commit("g", "s", 7, first, payloads[first - 1 : first - 1 + chunk])
                    except SequenceGap as gap:  # cannot happen: first <= hw + 1 always
                        gaps[0] += 1
                        hw = gap.hw
        except BaseException as exc:  # noqa: BLE001  (reported by the test thread)
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(lag,)) for lag in (0, 13, 29)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "writers did not finish in 60 s"
    assert errors == [] and gaps == [0]
    rows = _sql(dsn, "SELECT seq, payload FROM records WHERE gateway = 'g' ORDER BY seq")
    assert [r[0] for r in rows] == list(range(1, n + 1))
    assert [bytes(r[1]) for r in rows] == payloads  # type: ignore[arg-type]


def test_one_gateway_on_two_receivers_at_once(pg_cluster: PgCluster) -> None:
    """Two real receivers on one database; the same gateway speaks to both (its old session
    still sends while the new one starts). Each DATA is ACKed with the database's hw, nothing is
    stored twice, and a receiver whose cached hw is stale does not NACK what the other stored."""
    dsn = pg_cluster.create_db("two")

    def data(first: int, count: int) -> wire.Data:
        return wire.Data.build("s", 1, first, [b"%d" % i for i in range(first, first + count)])

    async def scenario() -> None:
        async with (
            running_receiver(PostgresCloudStore(dsn), pub_bind=None) as rx1,
            running_receiver(PostgresCloudStore(dsn), pub_bind=None) as rx2,
        ):
            assert rx1.endpoint and rx2.endpoint
            a, b = RawPeer(rx1.endpoint), RawPeer(rx2.endpoint)
            try:
                assert isinstance(await a.call(wire.Hello("g", {"s": 1})), wire.Welcome)
                assert (await a.call(data(1, 100))).hw == 100  # type: ignore[union-attr]
                # Failover: the gateway now speaks to rx2, which stores 101..200...
                welcome = await b.call(wire.Hello("g", {"s": 1}))
                assert isinstance(welcome, wire.Welcome) and welcome.hw["s"] == (1, 100)
                # ...while DATA in flight on the old session overlaps (both at once).
                got = await asyncio.gather(a.call(data(51, 100)), b.call(data(101, 100)))
                assert all(isinstance(m, wire.Ack) for m in got), got
                # Back to rx1, whose cache says 150 or less: it asks the database, and ACKs.
                back = await a.call(data(201, 50))
                assert isinstance(back, wire.Ack) and back.hw == 250, back
            finally:
                a.close()
                b.close()

    run(scenario(), timeout=30)
    rows = _sql(dsn, "SELECT seq, payload FROM records ORDER BY seq")
    assert [r[0] for r in rows] == list(range(1, 251))
    assert [bytes(r[1]) for r in rows] == [b"%d" % i for i in range(1, 251)]  # type: ignore[arg-type]


# --- decoded point rows ----------------------------------------------------------------------


def _model(model: str, names: list[str]) -> bytes:
    points = [{"id": i, "name": n, "device": "press1", "unit": "Cel"} for i, n in enumerate(names)]
    return msgpack.packb({"v": 1, "kind": "point_model", "gateway": "g", "model": model,
                          "points": points})  # fmt: skip


def _telemetry(model: str, ids: list[object], ts: list[object], x: list[object]) -> bytes:
    return msgpack.packb({"v": 1, "model": model, "id": ids, "ts": ts, "x": x,
                          "q": [0] * len(ids)})  # fmt: skip


def test_point_rows_are_named_by_the_announced_model(pg_cluster: PgCluster) -> None:
    dsn = pg_cluster.create_db("points")
    with PostgresCloudStore(dsn, clock=lambda: T0 + 60) as s:
        s.commit("g", "meta", 1, 1, [_model("m1", ["temp", "pressure"])])
        s.commit("g", "telemetry", 1, 1, [
            _telemetry("m1", [0, 1], [T0 + 1, T0 + 1], [21.5, 3]),
            b"\xc1 not msgpack",  # stored as a record, skipped as points
            _telemetry("m1", [0, "x", 1, 1, 5], [T0 + 2, T0 + 2, float("nan"), 1e300, T0 + 2],
                       [22.0, 1.0, 1.0, 1.0, None]),
        ])  # fmt: skip
        s.commit("g", "telemetry", 1, 1, [_telemetry("m1", [0], [T0 + 9], [99.0])])  # duplicate
        assert s.skipped_records == 1 and s.skipped_samples == 3
        assert s.hw("g", "telemetry", 1) == 3
        s.commit("g", "telemetry", 1, 4, [_telemetry("m1", [1, 0], [T0 + 3, T0 + 3], [None, None])])
    rows = _sql(dsn, "SELECT gateway, point, unit, extract(epoch FROM ts)::float, value, quality "
                     "FROM point_samples ORDER BY ts, point")  # fmt: skip
    assert rows == [
        ("g", "pressure", "Cel", T0 + 1, 3.0, 0),
        ("g", "temp", "Cel", T0 + 1, 21.5, 0),
        ("g", "#5", "", T0 + 2, None, 0),  # an id the model does not name
        ("g", "temp", "Cel", T0 + 2, 22.0, 0),
        ("g", "pressure", "Cel", T0 + 3, None, 0),  # nil: a bad-quality sample
        ("g", "temp", "Cel", T0 + 3, None, 0),
    ]


def test_point_names_are_bounded(pg_cluster: PgCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg_points, "MAX_MODELS_PER_GATEWAY", 2)
    dsn = pg_cluster.create_db("bounded")
    with PostgresCloudStore(dsn) as s:
        long = "p" * 5000
        s.commit("g", "meta", 1, 1, [_model(f"m{i}", [long]) for i in range(4)])
        assert s.skipped_models == 2
    assert _sql(dsn, "SELECT count(DISTINCT model), max(length(name)) FROM point_names") == [
        (2, pg_points.MAX_NAME)
    ]


def test_names_the_database_cannot_hold_never_cost_the_records(
    pg_cluster: PgCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NUL in a peer's point name: stripped; and should the database refuse decoded rows
    anyway, the records are stored and acknowledged all the same (a poison record must not
    block the group commit of every gateway)."""
    dsn = pg_cluster.create_db("nul")
    with PostgresCloudStore(dsn) as s:
        assert s.commit("g", "meta", 1, 1, [_model("m1", ["te\x00mp"])]) == 1
        monkeypatch.setattr(pg_points, "_text", lambda v: str(v))  # no check: the DB refuses
        assert s.commit("h", "meta", 1, 1, [_model("m1", ["te\x00mp"])]) == 1
        assert s.refused_decoded == 1
    assert _sql(dsn, "SELECT gateway, name FROM point_names") == [("g", "temp")]
    assert _sql(dsn, "SELECT gateway FROM records ORDER BY 1") == [("g",), ("h",)]


# --- gateway cloud --db postgresql:// as a process ---------------------------------------------


def test_gateway_cloud_process_on_postgres(pg_cluster: PgCluster, tmp_path: Path) -> None:
    dsn = pg_cluster.create_db("cli")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "cloud", "--insecure", "--bind", "tcp://127.0.0.1:0",
         "--pub", "", "--status-interval", "600", "--db", dsn, "--retention-days", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        ready = select.select([proc.stdout], [], [], 30)[0]  # the store is open, socket bound
        assert ready, "gateway cloud printed no start line in 30 s"
        line = proc.stdout.readline()
        m = re.search(r"ROUTER (tcp://\S+)", line)
        assert m, f"no start line: {line!r}"
        assert "store postgresql gateway@" in line

        async def scenario() -> None:
            peer = RawPeer(m.group(1))
            try:
                assert isinstance(await peer.call(wire.Hello("g", {"s": 1})), wire.Welcome)
                ack = await peer.call(wire.Data.build("s", 1, 1, [b"a", b"b", b"c"]))
                assert isinstance(ack, wire.Ack) and ack.hw == 3
            finally:
                peer.close()

        run(scenario())
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert _sql(dsn, "SELECT seq FROM records ORDER BY seq") == [(1,), (2,), (3,)]


def test_a_database_restart_costs_no_ack_and_no_duplicate(pg_cluster: PgCluster) -> None:
    """The database goes away under a receiver: nothing is acknowledged meanwhile, and the next
    commit after it is back reconnects and stores from the database's hw."""
    dsn = pg_cluster.create_db("restart")
    with PostgresCloudStore(dsn) as s:
        assert s.commit("g", "s", 1, 1, [b"a"]) == 1
        pg_cluster.restart("immediate")  # a crash: its sessions are gone
        with pytest.raises(psycopg.OperationalError):
            s.commit("g", "s", 1, 2, [b"b"])
        t0 = time.monotonic()
        assert s.commit("g", "s", 1, 1, [b"a", b"b"]) == 2  # reconnected; a is not stored again
        assert time.monotonic() - t0 < 10
    assert _sql(dsn, "SELECT seq FROM records ORDER BY seq") == [(1,), (2,)]


# --- the Grafana dashboard's queries against a real store --------------------------------------

DASHBOARD = Path(__file__).resolve().parents[1] / "examples" / "grafana" / "cloud-points.json"


def _grafana(sql: str, start: float, end: float) -> str:
    """Grafana's macros and variables as its PostgreSQL data source expands them."""
    sql = re.sub(
        r"\$__timeFilter\((\w+)\)",
        lambda m: f"{m.group(1)} BETWEEN to_timestamp({start}) AND to_timestamp({end})",
        sql,
    )
    return sql.replace("$gateway", "g").replace("$point", "'temp','pressure'")


def test_the_grafana_dashboard_charts_the_stored_points(pg_cluster: PgCluster) -> None:
    import json

    board = json.loads(DASHBOARD.read_text())
    dsn = pg_cluster.create_db("grafana")
    now = time.time()
    with PostgresCloudStore(dsn) as s:
        s.commit("g", "meta", 1, 1, [_model("m1", ["temp", "pressure"])])
        s.commit("g", "telemetry", 1, 1, [
            _telemetry("m1", [0, 1], [now - 60 + i, now - 60 + i], [20.0 + i, 3.0])
            for i in range(30)
        ])  # fmt: skip
    variables = {v["name"]: v["query"] for v in board["templating"]["list"]}
    assert _sql(dsn, variables["gateway"]) == [("g",)]
    assert _sql(dsn, _grafana(variables["point"], 0, 0)) == [("pressure",), ("temp",)]
    results = {}
    for panel in board["panels"]:
        (target,) = panel["targets"]
        rows = _sql(dsn, _grafana(target["rawSql"], now - 3600, now + 1))
        assert rows, f"panel {panel['title']!r} found nothing"
        results[panel["id"]] = rows
    series = results[1]
    assert len(series) == 60 and {r[1] for r in series} == {"temp", "pressure"}
    latest = {r[0]: r[1] for r in results[2]}
    assert latest == {"temp": 49.0, "pressure": 3.0}
    assert sum(int(r[2]) for r in results[3]) == 60  # type: ignore[call-overload]


def test_subscribe_names_points_from_the_postgres_store(pg_cluster: PgCluster) -> None:
    """``gateway subscribe --db postgresql://...``: a subscriber that joins after the gateway
    announced its model still names the points, from the database."""
    import json

    dsn = pg_cluster.create_db("subscribe")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        pub = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    cloud = subprocess.Popen(
        [sys.executable, "-m", "gateway", "cloud", "--insecure", "--bind", "tcp://127.0.0.1:0",
         "--pub", pub, "--status-interval", "600", "--db", dsn],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    sub = None
    try:
        assert cloud.stdout is not None
        assert select.select([cloud.stdout], [], [], 30)[0], "gateway cloud did not start"
        m = re.search(r"ROUTER (tcp://\S+)", cloud.stdout.readline())
        assert m

        async def scenario() -> None:
            nonlocal sub
            peer = RawPeer(m.group(1))
            try:

                async def call(msg: wire.Message) -> wire.Message:  # the receiver's requests
                    reply = await peer.call(msg)  # (resend_meta) are not answers: skip them
                    while isinstance(reply, wire.Command):
                        reply = wire.decode(await peer.sock.recv_multipart())
                    return reply

                await call(wire.Hello("g", {"meta": 1, "telemetry": 1}))
                ack = await call(wire.Data.build("meta", 1, 1, [_model("m1", ["temp"])]))
                assert isinstance(ack, wire.Ack), ack
                sub = subprocess.Popen(
                    [sys.executable, "-m", "gateway", "subscribe", "--records", "--connect", pub, "--db", dsn],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                )  # fmt: skip
                assert sub.stdout is not None
                deadline = time.monotonic() + 30
                seq = 0
                while not select.select([sub.stdout], [], [], 0)[0]:  # PUB/SUB joins late
                    assert time.monotonic() < deadline, "the subscriber printed nothing in 30 s"
                    seq += 1
                    rec = _telemetry("m1", [0], [T0 + seq], [20.0 + seq])
                    await call(wire.Data.build("telemetry", 1, seq, [rec]))
                    await asyncio.sleep(0.2)
                line = json.loads(sub.stdout.readline())
                assert line["gateway"] == "g" and line["stream"] == "telemetry"
                assert line["record"]["samples"][0]["point"] == "temp", line
            finally:
                peer.close()

        run(scenario(), timeout=60)
    finally:
        for p in (sub, cloud):
            if p is not None:
                p.terminate()
                p.communicate(timeout=20)


def test_export_reads_a_postgres_store(pg_cluster: PgCluster, tmp_path: Path) -> None:
    """``gateway export --db postgresql://...``: the same recording as from an SQLite store."""
    dsn = pg_cluster.create_db("export")
    with PostgresCloudStore(dsn) as s:
        s.commit("g", "meta", 1, 1, [_model("m1", ["temp", "pressure"])])
        s.commit("g", "telemetry", 1, 1, [_telemetry("m1", [0, 1], [T0 + i, T0 + i], [float(i), 2.0])
                                          for i in range(5)])  # fmt: skip
    out = tmp_path / "rec.csv"
    res = subprocess.run(
        [sys.executable, "-m", "gateway", "export", "--db", dsn, "--points", "temp", "-o", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == "ts,point,value,quality" and len(lines) == 6
    assert [line.split(",")[1:3] for line in lines[1:]] == [["temp", f"{i}.0"] for i in range(5)]
    bad = subprocess.run(
        [sys.executable, "-m", "gateway", "export", "--db", dsn.replace("/export_", "/nosuch_")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "cannot read the database" in bad.stderr
    assert "Traceback" not in bad.stderr
