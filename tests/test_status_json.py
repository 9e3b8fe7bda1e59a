"""``/status`` and ``/health`` are JSON every client parses: a point never seen (its ts is NaN)
and an offline device (its round trip is NaN) must not put ``NaN`` into the document, which
``jq``, browsers and strict parsers reject whole."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

from test_supervisor import CONFIG, get
from uplink_support import wait_until

from gateway.config import load_config_text
from gateway.core.runtime import Runtime
from gateway.jsonsafe import dumps


def strict(text: str) -> object:
    def refuse(name: str) -> object:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_status_of_an_offline_device_and_an_unseen_point_is_strict_json(tmp_path: Path) -> None:
    async def main() -> None:
        rt = Runtime(load_config_text(CONFIG.format(data=tmp_path, port=closed_port())))
        stop = asyncio.Event()
        run = asyncio.create_task(rt.run(stop))
        try:
            await wait_until(lambda: rt._running, "the runtime to start")
            await wait_until(lambda: rt.devices["dev"].stats().get("connected") is False,
                             "the device to be seen offline")  # fmt: skip
            code, body = await get(rt, "/status")
            assert code == 200
            status = strict(body)
            assert isinstance(status, dict)
            assert "NaN" not in body
            _, health = await get(rt, "/health")
            strict(health)
        finally:
            stop.set()
            await asyncio.wait_for(run, 10)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_dumps_maps_what_json_cannot_say() -> None:
    import numpy as np

    doc = {"nan": float("nan"), "inf": -float("inf"), 1: b"\x00", "f32": np.float32(1.5),
           "i64": np.int64(7), "nan32": np.float32("nan")}  # fmt: skip
    assert strict(dumps(doc)) == {"nan": None, "inf": None, "1": {"base64": "AA=="},
                                  "f32": 1.5, "i64": 7, "nan32": None}  # fmt: skip
