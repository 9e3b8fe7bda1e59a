"""A running gateway with the simulated demo factory and API users, and a small HTTP client.

The client speaks raw HTTP/1.1 over asyncio streams (real sockets, nothing mocked), so tests
see exactly the bytes the server sends: status line, headers, body.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from gateway_support import demo_workdir
from uplink_support import bounded, running_receiver, wait_until

from gateway.api.auth import UserFile
from gateway.config import load_config
from gateway.core import records
from gateway.core.runtime import Runtime
from gateway.drivers.sim import Factory, demo_factory
from gateway.uplink.receiver import CloudReceiver
from gateway.uplink.store import SQLiteCloudStore

PASSWORD = "correct horse battery"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        def refuse(name: str) -> None:
            raise ValueError(f"{name} is not JSON")

        return json.loads(self.body, parse_constant=refuse)


async def http(port: int, method: str, path: str, body: Any = None,
               headers: dict[str, str] | None = None, raw: bytes | None = None,
               host: str = "127.0.0.1") -> Answer:  # fmt: skip
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    hdrs = {"Host": f"{host}:{port}", **({"Content-Type": "application/json"} if data else {}),
            **(headers or {})}  # fmt: skip
    hdrs = {k: v for k, v in hdrs.items() if v is not None}
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
    if data:
        head += f"Content-Length: {len(data)}\r\n"
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head.encode() + b"\r\n" + data)
        resp = await bounded(reader.read(), f"the answer to {method} {path}", 15)
    finally:
        writer.close()
    top, _, rest = resp.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    hs = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return Answer(int(lines[0].split(" ")[1]), hs, rest)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Gw:
    rt: Runtime
    factory: Factory
    rx: CloudReceiver
    config: Path
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> int:
        assert self.rt._status_server is not None
        return self.rt._status_server.port

    async def get(self, path: str, **kw: Any) -> Answer:
        return await http(self.port, "GET", path, **kw)

    def upstream(self, kind: str) -> list[dict[str, Any]]:
        """Events of ``kind`` the cloud receiver has stored from this gateway."""
        recs = self.rx.store.records(self.rt.config.id, "events")  # type: ignore[attr-defined]
        return [e for e in (records.decode(r.payload) for r in recs) if e["kind"] == kind]

    async def post(self, path: str, body: Any = None, user: str | None = "op", **kw: Any) -> Answer:
        headers = dict(kw.pop("headers", {}))
        if user is not None:
            headers.update(bearer(self.tokens[user]))
        return await http(self.port, "POST", path, body, headers=headers, **kw)


def add_users(data_dir: str | Path) -> dict[str, str]:
    users = UserFile(data_dir)
    tokens = {}
    for name, role in (("op", "operator"), ("viewer", "read")):
        token = users.add(name, role, PASSWORD, token=True)
        assert token is not None
        tokens[name] = token
    return tokens


@contextlib.asynccontextmanager
async def api_gateway(
    tmp_path: Path, extra_rules: list[dict[str, Any]] | None = None, **gateway: Any
) -> AsyncIterator[Gw]:
    """The demo config against the simulated demo factory, a receiver, users op and viewer."""
    store = SQLiteCloudStore(str(tmp_path / "cloud.db"))
    specs = [dataclasses.replace(s, port=0) for s in demo_factory()]
    async with Factory(specs) as factory, running_receiver(store) as rx:
        if True:
            cfg = demo_workdir(tmp_path, rx.endpoint)
            doc = yaml.safe_load(cfg.read_text())
            doc["gateway"].update({"metrics_listen": "127.0.0.1:0", **gateway})
            doc["rules"] = [*doc["rules"], *(extra_rules or [])]
            for dev in doc["devices"]:
                dev["port"] = factory.ports[dev["name"]]
            cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
            config = load_config(cfg)
            tokens = add_users(config.data_dir)
            rt = Runtime(config)
            stop = asyncio.Event()
            task = asyncio.create_task(rt.run(stop))
            try:
                await wait_until(lambda: rt._running, "the runtime to start", 20)
                await wait_until(lambda: all(d.stats().get("online") for d in rt.devices.values()),
                                 "every simulated device online", 20)  # fmt: skip
                yield Gw(rt, factory, rx, cfg, tokens)
            finally:
                stop.set()
                await bounded(task, "gateway stop", timeout=15)
