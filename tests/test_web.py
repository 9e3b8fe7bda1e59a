"""The operator's page in Debian's Chromium against a running gateway, the simulated demo
factory over real Modbus TCP and a real cloud receiver: values move, the overheat alarm appears
and is acknowledged with the button (seen in the alarm state and upstream), a setpoint written
from the page lands in the device's register, poll-once shows raw registers and decoded values.
Screenshots go to build/screenshots/."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from api_support import PASSWORD, Gw, api_gateway
from playwright.async_api import Page, expect
from pymodbus.client import AsyncModbusTcpClient
from uplink_support import wait_until
from web_support import CONTRAST_JS, UNLABELLED_JS, browser_page, needs_chromium, screenshot

from gateway.uplink.queue_integrity import peek_state

pytestmark = needs_chromium


async def tick(gw: Gw) -> None:
    """Advance the simulated machines (run_factory's schedule), so the values move."""
    while True:
        gw.factory.tick()
        await asyncio.sleep(0.05)


def run(tmp_path: Path, body: Any, host: str = "127.0.0.1") -> None:
    """``body(gw, page)`` with the page open at ``host`` (the listener's address) and live;
    from another host than loopback, ``body`` logs in first."""

    async def main() -> None:
        async with api_gateway(tmp_path, metrics_listen=f"{host}:0") as gw:
            ticker = asyncio.create_task(tick(gw))
            errors: list[str] = []
            try:
                async with browser_page(f"http://{host}:{gw.port}/", errors) as page:
                    if host == "127.0.0.1":
                        await expect(page.locator("#link")).to_have_text("live")
                    await body(gw, page)
            finally:
                ticker.cancel()
            assert not errors, f"JavaScript errors on the page: {errors}"

    asyncio.run(asyncio.wait_for(main(), 60))


async def quick_overheat(gw: Gw) -> None:
    """The demo's press1_overheat, made to fire at once (the press idles at ~68 degC), applied
    through the API's reload: the file watch's all-or-nothing path."""
    doc = yaml.safe_load(gw.config.read_text())
    rule = next(r for r in doc["rules"] if r["name"] == "press1_overheat")
    rule.update({"when": "press1.temp > 30", "for": "0s", "clear": "press1.temp < 20"})
    gw.config.write_text(yaml.safe_dump(doc, sort_keys=False))
    answer = await gw.post("/api/rules/reload")
    assert answer.status == 200, answer.body


async def login(page: Page, user: str, password: str) -> None:
    dialog = page.locator("dialog#login")
    await expect(dialog).to_be_visible()
    await expect(page.locator("#login-user")).to_be_focused()  # typing goes to the form
    await page.keyboard.press("Control+A")  # the last user's name stays filled in
    await page.keyboard.type(user)
    await page.keyboard.press("Tab")
    await page.keyboard.type(password)
    await page.keyboard.press("Enter")


async def tab_to(page: Page, selector: str, limit: int = 60) -> None:
    """Press Tab until ``selector`` has the focus: reachable by keyboard, in order."""
    target = page.locator(selector)
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if await target.evaluate("e => e === document.activeElement"):
            return
    raise AssertionError(f"{selector} not reached with {limit} presses of Tab")


@needs_chromium
def test_page_is_live_and_the_overheat_alarm_is_acked_with_the_button(tmp_path: Path) -> None:
    async def body(gw: Gw, page: Page) -> None:
        await expect(page.locator("#gw-name")).to_have_text("demo-gw")
        rows = page.locator("#device-rows tr")
        await expect(rows).to_have_count(3)
        await expect(page.locator("#device-rows")).not_to_contain_text("offline")
        await expect(page.locator("#uplink-list")).to_contain_text("connected")
        value = page.locator("#pt-press1\\.temp td.value")
        first = await value.inner_text()
        assert first != "–", "press1.temp shows no value"
        await expect(value).not_to_have_text(first, timeout=10_000)  # moved by the event stream
        spark = page.locator("#pt-press1\\.temp polyline")
        assert len((await spark.get_attribute("points") or "").split()) >= 2, "no sparkline"
        await expect(page.locator("#no-alarms")).to_be_visible()
        await expect(page.locator("#rule-rows")).to_contain_text("press1_overheat")
        assert await page.evaluate(CONTRAST_JS) == [], "text below WCAG AA contrast"
        assert await page.evaluate(UNLABELLED_JS) == [], "controls without a label"
        await screenshot(page, "overview")

        await quick_overheat(gw)
        ack = page.locator('#alarm-rows button[data-rule="press1_overheat"]')
        await expect(ack).to_be_visible()  # raised, and pushed to the page by the stream
        await expect(page.locator("#alarm-rows")).to_contain_text("not acknowledged")
        await screenshot(page, "alarm")
        await screenshot(page, "alarm-view", full_page=False)  # what a tablet shows first
        await tab_to(page, '#alarm-rows button[data-rule="press1_overheat"]')
        outline = await ack.evaluate("e => getComputedStyle(e).outlineStyle")
        assert outline != "none", "the focused button shows no focus"
        await page.keyboard.press("Enter")
        await login(page, "op", PASSWORD)  # acknowledging needs an operator
        await expect(page.locator("#notice")).to_contain_text("press1_overheat acknowledged by op")
        await expect(page.locator("#alarm-rows")).to_contain_text("by op")
        await expect(ack).to_have_count(0)
        await expect(page.locator("#who")).to_have_text("op (operator)")
        await screenshot(page, "alarm-acked")

        def acked_in_state() -> bool:
            raw = peek_state(gw.rt.config.uplink.queue, "alarms")
            alarms = json.loads(raw)["alarms"] if raw else []
            return any(a["rule"] == "press1_overheat" and a["acked"] and a["acked_by"] == "op"
                       for a in alarms)  # fmt: skip

        await wait_until(acked_in_state, "the ack in the alarm state of the queue database", 10)
        await wait_until(lambda: any(e.get("rule") == "press1_overheat" and e.get("state") == "acked"
                                     and e.get("by") == "op" for e in gw.upstream("alarm")),
                         "the ack event at the cloud receiver", 10)  # fmt: skip
        await expect(page.locator("#event-list")).to_contain_text("acked press1_overheat by op")

        await page.set_viewport_size({"width": 768, "height": 1024})  # a tablet, upright
        width = await page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 768, f"the page scrolls sideways on a tablet: {width} px wide"
        await screenshot(page, "tablet-portrait", full_page=False)

    run(tmp_path, body)


async def holding_register(port: int, address: int) -> int:
    """Read from the simulated device itself, not through the gateway."""
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    try:
        assert await client.connect(), "the simulated device does not accept a connection"
        rr = await client.read_holding_registers(address, count=1, device_id=1)
        assert not rr.isError(), rr
        return int(rr.registers[0])
    finally:
        client.close()


@needs_chromium
def test_setpoint_write_and_poll_once_from_the_page(tmp_path: Path) -> None:
    async def body(gw: Gw, page: Page) -> None:
        options = await page.locator("#write-point option").evaluate_all(
            "os => os.map(o => o.value)"
        )
        writable = sorted(i.name for i in gw.rt.points.infos if i.writable)
        assert sorted(options) == writable == ["press1.run", "pump1.setpoint"]

        await page.select_option("#write-point", "pump1.setpoint")
        await page.fill("#write-value", "abc")
        await page.click("#write-form button")
        await expect(page.locator("#notice")).to_contain_text('takes a number, not "abc"')
        await expect(page.locator("dialog#login")).to_be_hidden()  # refused before any request

        port = gw.factory.ports["pump1"]
        assert await holding_register(port, 10) != 175
        await page.fill("#write-value", "17.5")
        await page.click("#write-form button")
        await login(page, "op", "not the password")
        await expect(page.locator("#login-error")).to_have_text("wrong user or password")
        await page.fill("#login-password", PASSWORD)
        await page.press("#login-password", "Enter")
        await expect(page.locator("#notice")).to_contain_text("pump1.setpoint = 17.5 written")
        assert await holding_register(port, 10) == 175  # uint16, scale 0.1
        assert gw.factory.values("pump1")["setpoint"] == 17.5

        await page.select_option("#poll-device", "press1")
        block = next(b for b in (await gw.get("/api/devices/press1")).json()["blocks"]
                     if "press1.pressure" in b["points"])  # fmt: skip
        await page.select_option("#poll-block", str(block["index"]))
        await page.click("#poll-form button")
        raw_rows = page.locator("#poll-raw tbody tr")
        await expect(raw_rows).to_have_count(block["count"])
        pressure_row = page.locator("#poll-raw tbody tr", has=page.locator("th", has_text="2"))
        raw = int(await pressure_row.first.locator("td").first.inner_text())
        decoded = float(await page.locator("#poll-values tr", has_text="press1.pressure")
                        .locator("td").inner_text())  # fmt: skip
        assert abs(decoded - raw * 0.01) < 1e-6, (raw, decoded)  # uint16, scale 0.01
        await screenshot(page, "commissioning", "#commission")

        await page.get_by_role("button", name="Disable press1_restart").click()
        await expect(page.locator("#notice")).to_contain_text("Rule press1_restart disabled")
        assert (await gw.get("/api/rules/press1_restart")).json()["state"] == "disabled"
        await expect(page.get_by_role("button", name="Enable press1_restart")).to_be_visible()

        # a read-only user is refused by the API, and the page says why
        await page.click("#logout-btn")
        await expect(page.locator("#login-btn")).to_be_visible()
        await page.fill("#write-value", "20")
        await page.click("#write-form button")
        await login(page, "viewer", PASSWORD)
        await expect(page.locator("#notice")).to_contain_text("user viewer has role read")
        assert await holding_register(port, 10) == 175
        await screenshot(page, "points", "#points")

    run(tmp_path, body)


def lan_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (the page seen from the network)."""
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return str(a.address)
    return None


@needs_chromium
def test_from_another_host_the_page_asks_for_a_login_before_it_shows_the_plant(
    tmp_path: Path,
) -> None:
    """The listener on a LAN address (allowed: users exist); the browser's requests come from
    that address, not loopback, so every read needs a login and the stream gets the token."""
    host = lan_address()
    if host is None:
        pytest.skip("this machine has no IPv4 address but loopback")

    async def body(gw: Gw, page: Page) -> None:
        await expect(page.locator("#login-why")).to_have_text(
            "Reading from another host needs a login."
        )
        await expect(page.locator("#point-rows tr")).to_have_count(0)  # nothing shown yet
        await login(page, "viewer", PASSWORD)
        await expect(page.locator("#link")).to_have_text("live")  # the stream, with the token
        await expect(page.locator("#who")).to_have_text("viewer (read)")
        value = page.locator("#pt-press1\\.temp td.value")
        await expect(value).not_to_have_text("–")
        first = await value.inner_text()
        await expect(value).not_to_have_text(first, timeout=10_000)
        await page.select_option("#write-point", "pump1.setpoint")
        await page.fill("#write-value", "3")
        await page.click("#write-form button")
        await expect(page.locator("#notice")).to_contain_text("user viewer has role read")

    run(tmp_path, body, host)
