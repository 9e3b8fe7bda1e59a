"""The page's files: served by the status listener with their types and a strict CSP, nothing
else under /web/, small, nothing fetched from another host, shipped in the package; and CI
installs the browser the page's tests need."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

from api_support import Answer, http

from gateway import web
from gateway.core.httpd import Request, Response, StatusServer

ROOT = Path(__file__).resolve().parent.parent
BUDGET = 50 * 1024  # the page's goal (docs/web.md)


async def fake_api(req: Request) -> Response:
    """Stands for the REST API: the page's paths must never reach it."""
    return Response.json(404, {"error": f"api {req.path}", "status": 404})


def fetch_all(requests: list[tuple[str, str]]) -> list[Answer]:
    async def main() -> list[Answer]:
        server = StatusServer("127.0.0.1:0", lambda: "", dict, api=fake_api)
        await server.start()
        try:
            return [await http(server.port, m, p) for m, p in requests]
        finally:
            await server.stop()

    return asyncio.run(asyncio.wait_for(main(), 30))


def test_files_are_served_with_types_and_a_strict_policy() -> None:
    paths = ["/", "/index.html", "/web/app.js", "/web/style.css"]
    answers = fetch_all([("GET", p) for p in paths])
    for path, a in zip(paths, answers, strict=True):
        assert a.status == 200, (path, a.status)
        name = web.FILES["/" if path == "/index.html" else path][0]
        assert a.body == (ROOT / "gateway" / "web" / name).read_bytes()
        csp = a.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert a.headers["x-frame-options"] == "DENY"
    assert answers[0].headers["content-type"] == "text/html; charset=utf-8"
    assert answers[2].headers["content-type"].startswith("text/javascript")
    assert answers[3].headers["content-type"].startswith("text/css")
    html = answers[0].body.decode()
    assert 'src="/web/app.js"' in html and 'href="/web/style.css"' in html


def test_nothing_else_is_served_and_the_api_still_answers() -> None:
    bad = ["/web/", "/web/../pyproject.toml", "/web/%2e%2e/__init__.py", "/web/__init__.py",
           "/web/app.js/x", "//etc/passwd"]  # fmt: skip
    answers = fetch_all([("GET", p) for p in bad] + [("POST", "/"), ("GET", "/api/whoami")])
    for path, a in zip(bad, answers, strict=False):
        assert a.status == 404, (path, a.status, a.body)
        assert b"import" not in a.body and b"[project]" not in a.body
    assert answers[-2].json()["error"] == "api /"  # only a GET is the page's
    assert answers[-1].json()["error"] == "api /api/whoami"  # the API's paths go to the API


def test_the_page_is_small_and_loads_nothing_from_another_host() -> None:
    assert web.total_size() < BUDGET, f"the page's files: {web.total_size()} bytes"
    for name, _ in web.FILES.values():
        text = (ROOT / "gateway" / "web" / name).read_text()
        # the SVG namespace is a name, not a fetch
        urls = set(re.findall(r"\b(?:https?:)?//[\w.-]+", text)) - {"http://www.w3.org"}
        assert not urls, f"{name} refers to another host: {urls}"
        assert "<script>" not in text and " on" + "click=" not in text  # the CSP forbids inline


def test_the_files_ship_in_the_package(tmp_path: Path) -> None:
    """``setup.py build_py`` is what the wheel (and so the .deb, packaging/build_deb.py) holds."""
    out = tmp_path / "lib"
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(out)],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)  # fmt: skip
    shipped = {p.name for p in (out / "gateway" / "web").iterdir()}
    assert {n for n, _ in web.FILES.values()} <= shipped


def test_ci_installs_debian_chromium_before_the_tests() -> None:
    out = subprocess.run(
        ["/bin/sh", str(ROOT / "images/host-deps.sh"), "web", "--print"],
        env={**os.environ, "HOST_DEPS_SYSROOT": "/nonexistent"},
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    assert "chromium" in out.stdout.split()
    lines = (ROOT / ".ci/run").read_text().splitlines()
    assert lines.index("images/host-deps.sh web") < lines.index("make test")
    pins = (ROOT / "requirements-dev.txt").read_text()
    assert re.search(r"^playwright==1\.65\.\d+$", pins, re.M)
